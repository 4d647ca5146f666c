//! Finding this node's power on a Redfish service, and reading it.
//!
//! This node is the ComputerSystem named by `--power.redfish.system`, else the one whose `UUID`
//! is the host's SMBIOS UUID, else the only one. Its chassis are the system's `Links.Chassis`,
//! tried in order; the first that gives a figure is used, from the first of:
//! 1. the chassis' `PowerSubsystem/PowerSupplies`: the sum of every supply's input power
//!    (`PowerInputWatts`, or its `Metrics` PowerSupplyMetrics `InputPowerWatts.Reading`);
//! 2. the older `Power` resource's `PowerSupplies[].PowerInputWatts`, summed;
//! 3. the older `Power` resource's `PowerControl[]` entry whose `RelatedItem` names the system
//!    (or the only entry of a chassis that holds only this system): `PowerConsumedWatts`.
//!
//! Supply output power is never used: it leaves out the supplies' own losses. A chassis that
//! also holds other systems (`Links.ComputerSystems`) feeds them too: its supplies are not
//! this node's, only a `PowerControl` entry naming this system is.

use std::fmt;

use serde_json::Value;

use super::{RedfishError, client::Client};
use crate::power::PlatformLabels;

/// What discovery and reading need of a Redfish service: its root and a GET of a path. The
/// BMC's HTTPS [`Client`] in the agent; an in-memory service in the redfish fuzz target.
pub(crate) trait Fetch {
    fn root(&self) -> &str;
    async fn get(&self, path: &str) -> Result<Value, RedfishError>;
}

impl Fetch for Client {
    fn root(&self) -> &str {
        Client::root(self)
    }

    async fn get(&self, path: &str) -> Result<Value, RedfishError> {
        Client::get(self, path).await
    }
}

/// How the system was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Chosen {
    Flag,
    Uuid,
    Only,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct System {
    pub id: String,
    pub path: String,
    pub uuid: Option<String>,
    pub chosen: Chosen,
}

/// Where one supply's input power is read.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum SupplyInput {
    /// `PowerInputWatts` on the supply itself.
    Supply(String),
    /// `InputPowerWatts.Reading` on its PowerSupplyMetrics.
    Metrics(String),
}

/// The resource the platform power is read from.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Resource {
    /// `PowerSubsystem/PowerSupplies`, one entry per supply delivering power.
    Supplies(Vec<SupplyInput>),
    /// `Power` → `PowerSupplies[].PowerInputWatts`.
    LegacySupplies { power: String, count: usize },
    /// `Power` → `PowerControl[index].PowerConsumedWatts`.
    PowerControl {
        power: String,
        index: usize,
        /// The entry's `MemberId` (its index if it has none) and `Name`.
        member_id: String,
        name: String,
    },
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Supplies(s) => {
                let metrics = s.iter().any(|i| matches!(i, SupplyInput::Metrics(_)));
                write!(
                    f,
                    "the input power of {} power supplies (PowerSubsystem/PowerSupplies, {})",
                    s.len(),
                    if metrics {
                        "PowerSupplyMetrics InputPowerWatts"
                    } else {
                        "PowerInputWatts"
                    }
                )
            }
            Resource::LegacySupplies { count, .. } => write!(
                f,
                "the input power of {count} power supplies (Power, PowerSupplies[].PowerInputWatts)"
            ),
            Resource::PowerControl { index, name, .. } => write!(
                f,
                "the system's consumed power (Power, PowerControl[{index}] {name:?} \
                 PowerConsumedWatts)"
            ),
        }
    }
}

/// This node's power on the service.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Target {
    pub system: System,
    /// The chassis' `Id`.
    pub chassis: String,
    pub resource: Resource,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.system.chosen {
            Chosen::Flag => "named by --power.redfish.system",
            Chosen::Uuid => "its UUID is the host's SMBIOS UUID",
            Chosen::Only => "the only system",
        };
        write!(
            f,
            "system {} ({why}), chassis {}: {}",
            self.system.id, self.chassis, self.resource
        )
    }
}

impl Target {
    /// How Kepler labels this figure (`kepler_platform_watts`): the chassis, and the
    /// PowerControl entry when the figure is one (empty for the supplies' input power).
    pub(crate) fn labels(&self, bmc: &str) -> PlatformLabels {
        let (id, name) = match &self.resource {
            Resource::PowerControl {
                member_id, name, ..
            } => (member_id.clone(), name.clone()),
            Resource::Supplies(_) | Resource::LegacySupplies { .. } => Default::default(),
        };
        PlatformLabels {
            bmc_id: bmc.to_owned(),
            chassis_id: self.chassis.clone(),
            power_control_id: id,
            power_control_name: name,
            resource: self.resource.to_string(),
        }
    }
}

/// What identifies this node.
#[derive(Clone, Debug)]
pub(crate) struct Want {
    /// `--power.redfish.system`.
    pub system: Option<String>,
    /// The host's SMBIOS UUID, or why it could not be read.
    pub host_uuid: Result<String, String>,
}

/// Finds this node's system, chassis and power resource.
pub(crate) async fn discover(client: &impl Fetch, want: &Want) -> Result<Target, RedfishError> {
    let root_path = client.root().to_owned();
    let root = client.get(&root_path).await?;
    let systems_path =
        link(&root, "Systems").ok_or_else(|| shape(&root_path, "no Systems link"))?;
    let collection = client.get(systems_path).await?;
    let mut systems = Vec::new();
    for path in members(&collection) {
        systems.push((path.to_owned(), client.get(path).await?));
    }
    let (doc, system) = choose(&systems, want)?;
    let mut reasons = Vec::new();
    for chassis in links(doc.pointer("/Links/Chassis")) {
        let c = client.get(chassis).await?;
        let id = text(&c, "Id").unwrap_or(chassis).to_owned();
        match chassis_power(client, &system, chassis, &c).await? {
            Ok(resource) => {
                return Ok(Target {
                    system,
                    chassis: id,
                    resource,
                });
            }
            Err(why) => reasons.push(format!("chassis {id}: {why}")),
        }
    }
    if reasons.is_empty() {
        reasons.push("it links no chassis (Links.Chassis)".into());
    }
    Err(RedfishError::NoPower {
        system: system.id,
        reasons,
    })
}

/// Reads the platform power from a discovered resource, in watts.
pub(crate) async fn read(client: &impl Fetch, resource: &Resource) -> Result<f64, RedfishError> {
    match resource {
        Resource::Supplies(inputs) => {
            let mut sum = 0.0;
            for input in inputs {
                let (path, pointer) = match input {
                    SupplyInput::Supply(p) => (p, "/PowerInputWatts"),
                    SupplyInput::Metrics(p) => (p, "/InputPowerWatts/Reading"),
                };
                let doc = client.get(path).await?;
                sum += watts(doc.pointer(pointer))
                    .ok_or_else(|| shape(path, &format!("no reading at {pointer}")))?;
                if !sum.is_finite() {
                    return Err(shape(
                        path,
                        &format!("{pointer}: the supplies' input power adds up to infinity"),
                    ));
                }
            }
            Ok(sum)
        }
        Resource::LegacySupplies { power, .. } => {
            let doc = client.get(power).await?;
            legacy_supplies(&doc)
                .map(|(w, _)| w)
                .map_err(|why| shape(power, &why))
        }
        Resource::PowerControl { power, index, .. } => {
            let doc = client.get(power).await?;
            watts(doc.pointer(&format!("/PowerControl/{index}/PowerConsumedWatts"))).ok_or_else(
                || {
                    shape(
                        power,
                        &format!("no PowerControl[{index}].PowerConsumedWatts"),
                    )
                },
            )
        }
    }
}

/// The system that is this node, from the service's systems (path, document).
fn choose<'a>(
    systems: &'a [(String, Value)],
    want: &Want,
) -> Result<(&'a Value, System), RedfishError> {
    let make = |(path, doc): &'a (String, Value), chosen| {
        let system = System {
            id: text(doc, "Id").unwrap_or(path).to_owned(),
            path: path.clone(),
            uuid: text(doc, "UUID").map(str::to_owned),
            chosen,
        };
        (doc, system)
    };
    let listed = || list_systems(systems);
    if let Some(id) = &want.system {
        return systems
            .iter()
            .find(|(path, doc)| text(doc, "Id") == Some(id) || path.rsplit('/').next() == Some(id))
            .map(|s| make(s, Chosen::Flag))
            .ok_or_else(|| {
                RedfishError::NoSystem(format!(
                    "--power.redfish.system {id}: the BMC has no such system (it has {})",
                    listed()
                ))
            });
    }
    match (&want.host_uuid, systems) {
        (Ok(host), _) => {
            let ours: Vec<_> = systems
                .iter()
                .filter(|(_, d)| text(d, "UUID").is_some_and(|u| uuid_matches(host, u)))
                .collect();
            match ours[..] {
                [one] => Ok(make(one, Chosen::Uuid)),
                [] if systems.len() == 1 && text(&systems[0].1, "UUID").is_none() => {
                    Ok(make(&systems[0], Chosen::Only))
                }
                _ => Err(RedfishError::NoSystem(format!(
                    "no system on the BMC has this host's SMBIOS UUID {host} (it has {}): is \
                     --power.redfish.url this node's BMC? --power.redfish.system names one",
                    listed()
                ))),
            }
        }
        (Err(_), [only]) => Ok(make(only, Chosen::Only)),
        (Err(why), _) => Err(RedfishError::NoSystem(format!(
            "the BMC has {} systems ({}) and this host's SMBIOS UUID is unknown ({why}): name \
             this node's with --power.redfish.system",
            systems.len(),
            listed()
        ))),
    }
}

fn list_systems(systems: &[(String, Value)]) -> String {
    if systems.is_empty() {
        return "none".into();
    }
    systems
        .iter()
        .map(|(path, d)| {
            format!(
                "{} UUID {}",
                text(d, "Id").unwrap_or(path),
                text(d, "UUID").unwrap_or("?")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The first resource of a chassis that gives the system's power, or why none does. Transport
/// errors end the discovery (to be tried again); a missing resource only this chassis.
async fn chassis_power(
    client: &impl Fetch,
    system: &System,
    path: &str,
    chassis: &Value,
) -> Result<Result<Resource, String>, RedfishError> {
    let others: Vec<&str> = links(chassis.pointer("/Links/ComputerSystems"))
        .filter(|s| *s != system.path)
        .collect();
    let shared = !others.is_empty();
    let mut reasons = Vec::new();
    if shared {
        reasons.push(format!(
            "it also holds {}, so its supplies are not this node's alone",
            others.join(", ")
        ));
    } else if let Some(sub) = link(chassis, "PowerSubsystem") {
        match supplies(client, sub).await? {
            Ok(inputs) => return Ok(Ok(Resource::Supplies(inputs))),
            Err(why) => reasons.push(format!("PowerSubsystem: {why}")),
        }
    }
    match link(chassis, "Power") {
        Some(power) => match get_found(client, power).await? {
            Ok(doc) => match power_resource(&doc, power, system, shared) {
                Ok(r) => return Ok(Ok(r)),
                Err(why) => reasons.push(format!("Power: {why}")),
            },
            Err(why) => reasons.push(format!("Power: {why}")),
        },
        None if reasons.is_empty() => {
            reasons.push(format!("{path} links neither PowerSubsystem nor Power"))
        }
        None => {}
    }
    Ok(Err(reasons.join("; ")))
}

/// The supplies of a PowerSubsystem and where each one's input power is read.
async fn supplies(
    client: &impl Fetch,
    subsystem: &str,
) -> Result<Result<Vec<SupplyInput>, String>, RedfishError> {
    let sub = match get_found(client, subsystem).await? {
        Ok(d) => d,
        Err(why) => return Ok(Err(why)),
    };
    let Some(collection) = link(&sub, "PowerSupplies") else {
        return Ok(Err("no PowerSupplies link".into()));
    };
    let list = match get_found(client, collection).await? {
        Ok(d) => d,
        Err(why) => return Ok(Err(why)),
    };
    let mut inputs = Vec::new();
    for path in members(&list) {
        let supply = client.get(path).await?;
        let id = text(&supply, "Id").unwrap_or(path);
        if watts(supply.get("PowerInputWatts")).is_some() {
            inputs.push(SupplyInput::Supply(path.to_owned()));
            continue;
        }
        if let Some(metrics) = link(&supply, "Metrics")
            && let Ok(doc) = get_found(client, metrics).await?
            && watts(doc.pointer("/InputPowerWatts/Reading")).is_some()
        {
            inputs.push(SupplyInput::Metrics(metrics.to_owned()));
            continue;
        }
        if !delivering(&supply) {
            continue;
        }
        return Ok(Err(format!(
            "power supply {id} has no input power reading (PowerInputWatts, or Metrics \
             InputPowerWatts)"
        )));
    }
    if inputs.is_empty() {
        return Ok(Err("no power supply with an input power reading".into()));
    }
    Ok(Ok(inputs))
}

/// From the older Power resource: its supplies' input power if the chassis is this node's
/// alone, else (or if they have none) the PowerControl entry of the system.
fn power_resource(
    doc: &Value,
    path: &str,
    system: &System,
    shared: bool,
) -> Result<Resource, String> {
    let mut reasons = Vec::new();
    if !shared {
        match legacy_supplies(doc) {
            Ok((_, count)) => {
                return Ok(Resource::LegacySupplies {
                    power: path.to_owned(),
                    count,
                });
            }
            Err(why) => reasons.push(why),
        }
    }
    match power_control(doc, &system.path, shared) {
        Ok((index, name)) => Ok(Resource::PowerControl {
            power: path.to_owned(),
            index,
            member_id: (doc.pointer(&format!("/PowerControl/{index}/MemberId")))
                .and_then(Value::as_str)
                .map_or_else(|| index.to_string(), str::to_owned),
            name,
        }),
        Err(why) => {
            reasons.push(why);
            Err(reasons.join("; "))
        }
    }
}

/// The sum of `PowerSupplies[].PowerInputWatts` and how many supplies gave it.
fn legacy_supplies(doc: &Value) -> Result<(f64, usize), String> {
    let entries = doc
        .get("PowerSupplies")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .ok_or("no PowerSupplies")?;
    let (mut sum, mut count) = (0.0, 0);
    for (i, e) in entries.iter().enumerate() {
        match watts(e.get("PowerInputWatts")) {
            Some(w) => (sum, count) = (sum + w, count + 1),
            None if !delivering(e) => {}
            None => {
                return Err(format!(
                    "PowerSupplies[{i}] ({}) has no PowerInputWatts",
                    text(e, "Name").unwrap_or("unnamed")
                ));
            }
        }
    }
    if count == 0 {
        return Err("no power supply with PowerInputWatts".into());
    }
    if !sum.is_finite() {
        return Err(format!("PowerSupplies[].PowerInputWatts add up to {sum}"));
    }
    Ok((sum, count))
}

/// The PowerControl entry of `system` (index, name), with a reading.
fn power_control(doc: &Value, system: &str, shared: bool) -> Result<(usize, String), String> {
    let entries = doc
        .get("PowerControl")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .ok_or("no PowerControl entries")?;
    let names_system =
        |e: &Value| links(e.get("RelatedItem")).any(|p| p.trim_end_matches('/') == system);
    let index = match entries.iter().position(names_system) {
        Some(i) => i,
        None if !shared && entries.len() == 1 => 0,
        None => {
            return Err(format!(
                "{} PowerControl entries and none names {system} in RelatedItem",
                entries.len()
            ));
        }
    };
    let e = &entries[index];
    if watts(e.get("PowerConsumedWatts")).is_none() {
        return Err(format!("PowerControl[{index}] has no PowerConsumedWatts"));
    }
    Ok((index, text(e, "Name").unwrap_or("").to_owned()))
}

/// GETs a linked resource; a 404 is a reason, not a failure of the service.
async fn get_found(client: &impl Fetch, path: &str) -> Result<Result<Value, String>, RedfishError> {
    match client.get(path).await {
        Ok(v) => Ok(Ok(v)),
        Err(RedfishError::Status { status, .. }) if status == http::StatusCode::NOT_FOUND => {
            Ok(Err(format!("{path} is linked but not found")))
        }
        Err(e) => Err(e),
    }
}

fn shape(path: &str, what: &str) -> RedfishError {
    RedfishError::Shape {
        url: path.to_owned(),
        what: what.to_owned(),
    }
}

/// A supply that is installed and meant to deliver power: one without a reading is missing
/// from the sum.
fn delivering(doc: &Value) -> bool {
    !matches!(
        doc.pointer("/Status/State").and_then(Value::as_str),
        Some("Absent" | "Disabled" | "StandbyOffline" | "UnavailableOffline")
    )
}

/// A reading in watts: a finite, non-negative number.
fn watts(v: Option<&Value>) -> Option<f64> {
    v.and_then(Value::as_f64)
        .filter(|w| w.is_finite() && *w >= 0.0)
}

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// `{"@odata.id": path}` under `key`.
fn link<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key)?.get("@odata.id")?.as_str()
}

/// The paths of an array of links.
fn links(v: Option<&Value>) -> impl Iterator<Item = &str> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|l| l.get("@odata.id")?.as_str())
}

fn members(collection: &Value) -> impl Iterator<Item = &str> {
    links(collection.get("Members"))
}

/// Whether the BMC's UUID is the host's: equal ignoring case, or equal once the first three
/// fields are byte-swapped (SMBIOS stores them little-endian and some BMCs print them as
/// stored).
pub(crate) fn uuid_matches(host: &str, bmc: &str) -> bool {
    let (h, b) = (
        host.trim().to_ascii_lowercase(),
        bmc.trim().to_ascii_lowercase(),
    );
    h == b || swapped(&h).is_some_and(|s| s == b)
}

fn swapped(uuid: &str) -> Option<String> {
    let parts: Vec<&str> = uuid.split('-').collect();
    let lens: Vec<usize> = parts.iter().map(|p| p.len()).collect();
    if lens != [8, 4, 4, 4, 12] || !uuid.chars().all(|c| c == '-' || c.is_ascii_hexdigit()) {
        return None;
    }
    let reverse = |p: &str| -> String {
        let bytes: Vec<&str> = (0..p.len()).step_by(2).map(|i| &p[i..i + 2]).collect();
        bytes.into_iter().rev().collect()
    };
    Some(format!(
        "{}-{}-{}-{}-{}",
        reverse(parts[0]),
        reverse(parts[1]),
        reverse(parts[2]),
        parts[3],
        parts[4]
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn uuids() {
        let host = "4C4C4544-0037-3610-8048-B3C04F4B3732";
        assert!(uuid_matches(host, "4c4c4544-0037-3610-8048-b3c04f4b3732"));
        assert!(uuid_matches(host, "44454c4c-3700-1036-8048-b3c04f4b3732"));
        assert!(!uuid_matches(host, "44454c4c-3700-1036-8048-b3c04f4b3733"));
        assert!(!uuid_matches("x", "y"));
    }

    fn systems(uuids: &[(&str, Option<&str>)]) -> Vec<(String, Value)> {
        uuids
            .iter()
            .map(|(id, uuid)| {
                (
                    format!("/redfish/v1/Systems/{id}"),
                    json!({"Id": id, "UUID": uuid}),
                )
            })
            .collect()
    }

    fn want(system: Option<&str>, uuid: Result<&str, &str>) -> Want {
        Want {
            system: system.map(str::to_owned),
            host_uuid: uuid.map(str::to_owned).map_err(str::to_owned),
        }
    }

    #[test]
    fn the_system_is_chosen_by_flag_uuid_or_as_the_only_one() {
        let two = systems(&[
            ("a", Some("11111111-0000-0000-0000-000000000000")),
            ("b", Some("22222222-0000-0000-0000-000000000000")),
        ]);
        let pick =
            |s: &[(String, Value)], w: Want| choose(s, &w).map(|(_, sys)| (sys.id, sys.chosen));
        assert_eq!(
            pick(&two, want(None, Ok("22222222-0000-0000-0000-000000000000"))).unwrap(),
            ("b".into(), Chosen::Uuid)
        );
        assert_eq!(
            pick(
                &two,
                want(Some("a"), Ok("22222222-0000-0000-0000-000000000000"))
            )
            .unwrap(),
            ("a".into(), Chosen::Flag)
        );
        let e = pick(&two, want(None, Err("product_uuid is root-only")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("2 systems (a UUID 11111111") && e.contains("--power.redfish.system"),
            "{e}"
        );
        let e = pick(&two, want(None, Ok("33333333-0000-0000-0000-000000000000")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no system on the BMC has this host's SMBIOS UUID"),
            "{e}"
        );
        let e = pick(&two, want(Some("c"), Ok("x")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--power.redfish.system c: the BMC has no such system"),
            "{e}"
        );
        let one = systems(&[("only", None)]);
        assert_eq!(pick(&one, want(None, Ok("x"))).unwrap().1, Chosen::Only);
        assert_eq!(pick(&one, want(None, Err("?"))).unwrap().1, Chosen::Only);
        // The only system, but another machine's: refused.
        let other = systems(&[("1", Some("99999999-0000-0000-0000-000000000000"))]);
        assert!(
            pick(
                &other,
                want(None, Ok("11111111-0000-0000-0000-000000000000"))
            )
            .is_err()
        );
    }

    #[test]
    fn power_control_entry_of_the_system() {
        let doc = json!({"PowerControl": [
            {"Name": "Enclosure", "PowerConsumedWatts": 900,
             "RelatedItem": [{"@odata.id": "/redfish/v1/Chassis/Enc"}]},
            {"Name": "Node 2", "PowerConsumedWatts": 310,
             "RelatedItem": [{"@odata.id": "/redfish/v1/Systems/2"}]},
        ]});
        assert_eq!(
            power_control(&doc, "/redfish/v1/Systems/2", true).unwrap(),
            (1, "Node 2".into())
        );
        let e = power_control(&doc, "/redfish/v1/Systems/3", false).unwrap_err();
        assert!(e.contains("2 PowerControl entries and none names"), "{e}");
        let one = json!({"PowerControl": [{"PowerConsumedWatts": 344}]});
        assert_eq!(power_control(&one, "/x", false).unwrap().0, 0);
        assert!(
            power_control(&one, "/x", true).is_err(),
            "a shared chassis' only entry"
        );
        let null = json!({"PowerControl": [{"PowerConsumedWatts": null}]});
        assert!(
            power_control(&null, "/x", false)
                .unwrap_err()
                .contains("no PowerConsumedWatts")
        );
    }

    #[test]
    fn legacy_supplies_sum_input_and_skip_absent_ones() {
        let doc = json!({"PowerSupplies": [
            {"Name": "PSU1", "PowerInputWatts": 220.5, "PowerOutputWatts": 200},
            {"Name": "PSU2", "PowerInputWatts": 210, "PowerOutputWatts": 190},
            {"Name": "PSU3", "Status": {"State": "Absent"}},
        ]});
        assert_eq!(legacy_supplies(&doc).unwrap(), (430.5, 2));
        let doc = json!({"PowerSupplies": [
            {"Name": "PSU1", "PowerOutputWatts": 200, "LastPowerOutputWatts": 200},
        ]});
        let e = legacy_supplies(&doc).unwrap_err();
        assert!(
            e.contains("PSU1") && e.contains("no PowerInputWatts"),
            "{e}"
        );
    }
}
