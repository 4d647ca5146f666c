//! What network sources answer: the carbon intensity API, a BMC's Redfish resources, the
//! Kubernetes objects the agent reads fields of itself, and Prometheus's API (`wattlet report`).

use http::StatusCode;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt as _;
use serde_json::{Map, Value};

use super::input::Fields;
use crate::{
    carbon::{MAX_GRAMS_PER_KWH, lookup, parse_intensity_response, table::close_matches},
    kubernetes::{REGION_LABEL, container_id, index_pods},
    power::redfish::{
        RedfishError,
        service::{Fetch, Resource, Want, discover, read},
    },
    report::{
        PromError,
        prometheus::{answer, rule_names, samples},
    },
};

/// Any body: an intensity within 0..=2000 g/kWh that reads back the same as a bare number and
/// as a document, or an error with its reason.
pub fn carbon_intensity(data: &[u8]) {
    let p = match parse_intensity_response(data) {
        Ok(p) => p,
        Err(e) => {
            assert!(!e.reason().is_empty());
            return;
        }
    };
    let g = p.grams_per_kwh;
    assert!(
        g.is_finite() && (0.0..=MAX_GRAMS_PER_KWH).contains(&g),
        "{g}"
    );
    for text in [g.to_string(), format!(r#"{{"carbonIntensity":{g}}}"#)] {
        let back = parse_intensity_response(text.as_bytes())
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .grams_per_kwh;
        assert!((back - g).abs() <= g * 1e-15, "{text}: {back} vs {g}");
    }
}

/// A whole Redfish service as one JSON object, `{"<path>": <resource>, …}` (a path it lacks
/// answers 404), with its root at `/redfish/v1`. Discovery (as by an unknown host UUID, by a
/// system's UUID, by a system's `Id`) finds a resource of what exists, and a reading is finite
/// and non-negative watts.
pub fn redfish(data: &[u8]) {
    let Ok(Value::Object(resources)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let service = Service(resources);
    for want in service.wants() {
        let Ok(target) = futures::executor::block_on(discover(&service, &want)) else {
            continue;
        };
        assert!(!target.to_string().is_empty());
        match &target.resource {
            Resource::Supplies(inputs) => assert!(!inputs.is_empty()),
            Resource::LegacySupplies { count, .. } => assert!(*count > 0),
            Resource::PowerControl { .. } => {}
        }
        if let Ok(w) = futures::executor::block_on(read(&service, &target.resource)) {
            assert!(w.is_finite() && w >= 0.0, "{w} W from {target}");
        }
    }
}

/// Resources by path: a service in memory.
struct Service(Map<String, Value>);

impl Service {
    /// An unknown host UUID, the first system's UUID, the last system's `Id` (systems: the
    /// resources under a `/Systems/` path).
    fn wants(&self) -> Vec<Want> {
        let mut systems = self.0.iter().filter(|(path, _)| path.contains("/Systems/"));
        let field = |v: &Value, key: &str| v.get(key)?.as_str().map(str::to_owned);
        let uuid = systems.clone().find_map(|(_, v)| field(v, "UUID"));
        let id = systems.next_back().and_then(|(_, v)| field(v, "Id"));
        let unknown = || Err("fuzzing: no SMBIOS UUID".to_owned());
        let mut wants = vec![Want {
            system: None,
            host_uuid: unknown(),
        }];
        wants.extend(uuid.map(|u| Want {
            system: None,
            host_uuid: Ok(u),
        }));
        wants.extend(id.map(|id| Want {
            system: Some(id),
            host_uuid: unknown(),
        }));
        wants
    }
}

impl Fetch for Service {
    fn root(&self) -> &str {
        "/redfish/v1"
    }

    async fn get(&self, path: &str) -> Result<Value, RedfishError> {
        self.0
            .get(path)
            .cloned()
            .ok_or_else(|| RedfishError::Status {
                url: path.to_owned(),
                status: StatusCode::NOT_FOUND,
                hint: "",
            })
    }
}

/// Fields: a Pod and a Node as the API server sends them. The pod's index names containers by
/// non-empty runtime ids, each in a pod the index has; the node's region label finds a table
/// factor within range, and a few close matches at most.
pub fn kubernetes(data: &[u8]) {
    let f = Fields::of(data);
    if let Ok(pod) = serde_json::from_str::<Pod>(f.get(0)) {
        let index = index_pods([&pod]);
        assert!(index.pods.len() <= 1);
        for (id, c) in &index.containers {
            assert!(!id.is_empty(), "{c:?}");
            assert!(index.pods.contains_key(&c.pod_uid), "{c:?}");
            assert!(container_id(id).len() <= id.len());
        }
    }
    if let Ok(node) = serde_json::from_str::<Node>(f.get(1)) {
        let region = node.labels().get(REGION_LABEL).map(String::as_str);
        if let Some(factor) = lookup(region) {
            assert!((0.0..=MAX_GRAMS_PER_KWH).contains(&factor.grams_per_kwh));
        }
        if let Some(r) = region {
            assert!(close_matches(r, 3).len() <= 3);
        }
    }
}

/// Prometheus's HTTP API as `wattlet report` reads it: the first byte picks the HTTP status, the
/// rest is the body. An answer is Prometheus's `data` or an error that quotes at most 300 bytes
/// of the body; a query's samples are finite.
pub fn prometheus_api(data: &[u8]) {
    let statuses = [200, 400, 422, 500, 503];
    let (status, body) = data.split_first().unwrap_or((&0, &[][..]));
    let status = StatusCode::from_u16(statuses[usize::from(*status) % statuses.len()])
        .expect("a valid status");
    let base = "http://prometheus:9090";
    match answer(base, "/api/v1/query", "sum(x)", status, body) {
        Ok(data) => {
            for (_, v) in samples(&data) {
                assert!(v.is_finite(), "{v}");
            }
            let _ = rule_names(&data);
        }
        Err(PromError::NotPrometheus { body, .. }) => assert!(body.len() <= 300 * 3, "{body:?}"),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzing::input::seed;

    /// The seeds get through whole, so that mutations start from the deep paths.
    #[test]
    fn seeds_are_real_shaped() {
        let g = parse_intensity_response(&seed("carbon_intensity", "electricity-maps"));
        assert_eq!(g.unwrap().grams_per_kwh, 302.0);

        let watts = |name: &str| {
            let Value::Object(r) = serde_json::from_slice(&seed("redfish", name)).unwrap() else {
                panic!("{name}: not an object");
            };
            let service = Service(r);
            let target = (service.wants().iter())
                .find_map(|w| futures::executor::block_on(discover(&service, w)).ok())
                .unwrap_or_else(|| panic!("{name}: no system found"));
            futures::executor::block_on(read(&service, &target.resource)).unwrap()
        };
        assert_eq!(watts("power-subsystem"), 374.5 + 381.25);
        assert_eq!(watts("legacy-power"), 370.5);
        assert_eq!(watts("ilo-trailing-slash"), 212.0);
        assert_eq!(watts("idrac-metrics"), 246.0);
        // Two systems in one enclosure: the first found by its UUID is node 2, which draws 310 W.
        assert_eq!(watts("shared-enclosure"), 310.0);

        let f = Fields::of(&seed("kubernetes", "pod-and-node"));
        let pod: Pod = serde_json::from_str(f.get(0)).unwrap();
        assert_eq!(index_pods([&pod]).containers.len(), 3);
        let node: Node = serde_json::from_str(f.get(1)).unwrap();
        assert!(lookup(node.labels().get(REGION_LABEL).map(String::as_str)).is_some());
    }

    /// Two supplies of 1e308 W each add up to infinity: that is no reading, in the newer
    /// PowerSubsystem and in the older Power resource. (Found reviewing what this target
    /// asserts; libFuzzer had not reached it in 30 s.)
    #[test]
    fn supplies_adding_up_to_infinity_are_no_reading() {
        let link = |p: &str| serde_json::json!({ "@odata.id": p });
        let service = |chassis: Value, rest: Value| {
            let mut s = serde_json::json!({
                "/redfish/v1": { "Systems": link("/redfish/v1/Systems") },
                "/redfish/v1/Systems": { "Members": [link("/s")] },
                "/s": { "Links": { "Chassis": [link("/c")] } },
                "/c": chassis,
            });
            s.as_object_mut()
                .unwrap()
                .extend(rest.as_object().unwrap().clone());
            serde_json::to_vec(&s).unwrap()
        };
        let huge = serde_json::json!({ "PowerInputWatts": 1e308 });
        let subsystem = service(
            serde_json::json!({ "PowerSubsystem": link("/c/ps") }),
            serde_json::json!({
                "/c/ps": { "PowerSupplies": link("/c/ps/all") },
                "/c/ps/all": { "Members": [link("/c/ps/1"), link("/c/ps/2")] },
                "/c/ps/1": huge, "/c/ps/2": huge,
            }),
        );
        let legacy = service(
            serde_json::json!({ "Power": link("/c/p") }),
            serde_json::json!({ "/c/p": { "PowerSupplies": [huge, huge] } }),
        );
        for bytes in [subsystem, legacy] {
            redfish(&bytes);
        }
    }
}
