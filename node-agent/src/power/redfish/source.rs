//! The Redfish platform meter: the BMC read on its own schedule by a background thread (never
//! in a scrape, never in the measuring loop), its latest power gauge integrated into energy at
//! each interval (trapezoid), and not counted once older than the staleness bound.

use std::{
    path::Path,
    sync::{Arc, Mutex, mpsc},
    thread,
    time::Duration,
};

use log::warn;
use tokio::sync::watch;

use super::{
    RedfishError, RedfishOptions,
    client::Client,
    service::{self, Target, Want},
};
use crate::{
    power::{
        EnergySource, PlatformKind, PlatformLabels, PlatformOpened, PowerIntegrator, ReadContext,
        SourceReading, Update, sysfs::read_attr, zone,
    },
    sys,
};

/// Rediscover the system's resources this often (in reads), so that a supply inserted later is
/// counted; any failed read rediscovers at once.
const REDISCOVER_EVERY: u32 = 360;

/// One reading of the BMC.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Sample {
    /// CLOCK_MONOTONIC when the answer arrived.
    pub at: Duration,
    pub watts: f64,
}

/// What the background reader has seen, shared with the source.
#[derive(Clone, Debug, Default)]
pub(crate) struct State {
    pub sample: Option<Sample>,
    /// Failed reads so far, and the last one's error.
    pub failures: u64,
    pub last_error: Option<String>,
    /// What the last good reading was of.
    pub labels: Option<PlatformLabels>,
}

#[derive(Debug, Default)]
pub(crate) struct Shared(Mutex<State>);

impl Shared {
    pub(crate) fn state(&self) -> State {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// The `platform` zone from a BMC.
pub struct Redfish {
    shared: Arc<Shared>,
    /// Dropped with the source: the reader thread stops.
    _stop: watch::Sender<()>,
    staleness: Duration,
    ceiling_watts: f64,
    integrator: PowerIntegrator,
    seen_failures: u64,
}

impl Redfish {
    pub(crate) fn new(
        shared: Arc<Shared>,
        stop: watch::Sender<()>,
        staleness: Duration,
        ceiling_watts: f64,
    ) -> Self {
        Self {
            shared,
            _stop: stop,
            staleness,
            ceiling_watts,
            integrator: PowerIntegrator::default(),
            seen_failures: 0,
        }
    }
}

impl EnergySource for Redfish {
    fn read(&mut self, ctx: &ReadContext) -> SourceReading {
        let state = self.shared.state();
        let mut out = SourceReading::default();
        if state.failures > self.seen_failures {
            self.seen_failures = state.failures;
            if let Some(e) = state.last_error {
                out.errors.push(RedfishError::Poll(e).into());
            }
        }
        let fresh = state
            .sample
            .filter(|s| ctx.at.saturating_sub(s.at) <= self.staleness);
        match fresh {
            Some(s) => {
                let ceiling = zone::ceiling(zone::PLATFORM, self.ceiling_watts);
                if let Update::Dropped(reason) = self.integrator.update(s.watts, ctx.at, ceiling) {
                    out.dropped.push((zone::PLATFORM.into(), reason));
                }
            }
            // No energy is made up for the time the BMC did not answer.
            None => {
                self.integrator.gap();
                out.stale.push(zone::PLATFORM.into());
            }
        }
        out.zones = vec![(zone::PLATFORM.into(), self.integrator.joules())];
        out
    }

    fn platform_labels(&self) -> Option<PlatformLabels> {
        self.shared.state().labels
    }
}

/// Opens the BMC: the client set up, the reader started, its first answer awaited (a bounded
/// time). Wrong credentials, or no system that is this node, fail here; a BMC that is slow or
/// failing now is read again in the background.
pub fn open(
    opts: &RedfishOptions,
    sysfs: &Path,
    ceiling_watts: f64,
) -> Result<PlatformOpened, RedfishError> {
    let url = opts
        .url
        .clone()
        .ok_or_else(|| RedfishError::Flags("--power.redfish.url is not set".into()))?;
    let client = Client::new(opts, &url)?;
    if opts.insecure {
        warn!(
            "--power.redfish.insecure: the certificate of {url} is not checked; anyone on the \
             path can read the BMC's credentials and forge its power readings. Use \
             --power.redfish.ca-file with the BMC's CA instead"
        );
    }
    let want = Want {
        system: opts.system.clone(),
        host_uuid: host_uuid(sysfs),
    };
    let shared = Arc::new(Shared::default());
    let (first_tx, first_rx) = mpsc::channel();
    let (stop, stop_rx) = watch::channel(());
    let reader = Reader {
        bmc: bmc_id(&url),
        client,
        want,
        interval: opts.interval,
        shared: shared.clone(),
    };
    thread::Builder::new()
        .name("redfish".into())
        .spawn(move || reader.run(first_tx, stop_rx))
        .map_err(RedfishError::Thread)?;
    let (description, answered) = match first_rx.recv_timeout(opts.timeout * 4) {
        Ok(Ok((target, watts))) => (format!("{url}: {target}: {watts:.1} W now"), true),
        Ok(Err(e)) if e.is_auth() || matches!(e, RedfishError::NoSystem(_)) => return Err(e),
        Ok(Err(e)) => (
            format!(
                "{url}: no reading yet ({e}); read again in the background every {:?}",
                opts.interval
            ),
            false,
        ),
        Err(_) => (
            format!(
                "{url}: no answer within {:?}; read in the background every {:?}",
                opts.timeout * 4,
                opts.interval
            ),
            false,
        ),
    };
    Ok(PlatformOpened {
        kind: PlatformKind::Redfish,
        description,
        answered,
        source: Box::new(Redfish::new(shared, stop, opts.staleness(), ceiling_watts)),
    })
}

/// The host's SMBIOS UUID (`<sysfs>/class/dmi/id/product_uuid`), or why it is unknown.
fn host_uuid(sysfs: &Path) -> Result<String, String> {
    let uuid = read_attr(&sysfs.join("class/dmi/id/product_uuid")).map_err(|e| e.to_string())?;
    let digits: String = uuid.chars().filter(|c| *c != '-').collect();
    if digits.chars().all(|c| c == '0') || digits.chars().all(|c| c.eq_ignore_ascii_case(&'f')) {
        return Err(format!("the SMBIOS UUID {uuid} is a placeholder"));
    }
    Ok(uuid)
}

/// The BMC as Kepler's `bmc_id` names it: the host (and port) of its URL.
fn bmc_id(url: &super::RedfishUrl) -> String {
    url.origin.trim_start_matches("https://").to_owned()
}

/// The background reader.
pub(crate) struct Reader {
    /// The BMC's name in the labels.
    pub bmc: String,
    pub client: Client,
    pub want: Want,
    pub interval: Duration,
    pub shared: Arc<Shared>,
}

type First = mpsc::Sender<Result<(Target, f64), RedfishError>>;

impl Reader {
    /// Reads until `stop`'s sender is dropped, on its own single-threaded runtime.
    pub(crate) fn run(self, first: First, stop: watch::Receiver<()>) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = first.send(Err(RedfishError::Thread(e)));
                return;
            }
        };
        rt.block_on(self.poll(first, stop));
    }

    async fn poll(self, first: First, mut stop: watch::Receiver<()>) {
        let mut first = Some(first);
        let mut target: Option<Target> = None;
        let (mut failures, mut reads) = (0u32, 0u32);
        loop {
            if reads >= REDISCOVER_EVERY {
                (target, reads) = (None, 0);
            }
            let result = tokio::select! {
                r = self.once(&mut target) => r,
                _ = stop.changed() => return,
            };
            match result {
                Ok(watts) => {
                    let sample = Sample {
                        at: sys::monotonic_now(),
                        watts,
                    };
                    let labels = target.as_ref().map(|t| t.labels(&self.bmc));
                    self.shared.update(|s| {
                        s.sample = Some(sample);
                        s.labels = labels;
                    });
                    (failures, reads) = (0, reads + 1);
                    if let (Some(f), Some(t)) = (first.take(), &target) {
                        let _ = f.send(Ok((t.clone(), watts)));
                    }
                }
                Err(e) => {
                    self.shared.update(|s| {
                        s.failures += 1;
                        s.last_error = Some(e.to_string());
                    });
                    (target, failures) = (None, failures.saturating_add(1));
                    if let Some(f) = first.take() {
                        let _ = f.send(Err(e));
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff(self.interval, failures)) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// One read: discovering this node's resource first if it is not known.
    async fn once(&self, target: &mut Option<Target>) -> Result<f64, RedfishError> {
        let t = match target {
            Some(t) => t,
            None => target.insert(service::discover(&self.client, &self.want).await?),
        };
        service::read(&self.client, &t.resource).await
    }
}

/// The wait before the next read: the interval, doubled at each failure in a row up to eight
/// intervals (and at most five minutes, unless the interval is longer).
pub(crate) fn backoff(interval: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return interval;
    }
    let cap = (interval * 8).min(Duration::from_secs(300)).max(interval);
    interval
        .saturating_mul(1 << (failures - 1).min(16))
        .min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::power::{DropReason, fixture::at};

    fn source(staleness_s: u64) -> (Redfish, Arc<Shared>) {
        let shared = Arc::new(Shared::default());
        let (stop, _) = watch::channel(());
        (
            Redfish::new(
                shared.clone(),
                stop,
                Duration::from_secs(staleness_s),
                1000.0,
            ),
            shared,
        )
    }

    fn answer(shared: &Shared, at_s: f64, watts: f64) {
        shared.update(|s| {
            s.sample = Some(Sample {
                at: Duration::from_secs_f64(at_s),
                watts,
            })
        });
    }

    fn joules(r: &SourceReading) -> f64 {
        assert_eq!(r.zones.len(), 1);
        assert_eq!(r.zones[0].0, "platform");
        r.zones[0].1
    }

    /// A BMC answering every 10 s, read every 5 s, then silent for a minute, then back: the
    /// minute is not integrated, and nothing is made up for it afterwards.
    #[test]
    fn a_silent_minute_is_stale_and_makes_no_spike() {
        let (mut src, shared) = source(30);
        let r = src.read(&at(0.0));
        assert_eq!(
            (joules(&r), r.stale.len()),
            (0.0, 1),
            "no answer yet: stale"
        );
        answer(&shared, 0.5, 300.0);
        src.read(&at(1.0));
        assert_eq!(joules(&src.read(&at(6.0))), 1500.0);
        answer(&shared, 10.5, 400.0);
        // Trapezoid between the held readings: (300 + 400) / 2 × 5 s.
        assert_eq!(joules(&src.read(&at(11.0))), 3250.0);
        // Silent from 10.5 s: the held 400 W counts until 40.5 s, then the zone is stale.
        let before = joules(&src.read(&at(40.0)));
        assert_eq!(before, 3250.0 + 400.0 * 29.0);
        for t in [41.0, 60.0, 70.5] {
            let r = src.read(&at(t));
            assert_eq!(
                (joules(&r), r.stale.clone()),
                (before, vec!["platform".to_owned()]),
                "at {t}"
            );
        }
        // Back at 71 s: a new baseline; energy goes on at the BMC's power, with no spike.
        answer(&shared, 71.0, 350.0);
        assert_eq!(joules(&src.read(&at(71.5))), before);
        assert_eq!(joules(&src.read(&at(76.5))), before + 350.0 * 5.0);
    }

    #[test]
    fn an_absurd_reading_is_dropped_and_failures_are_reported_once() {
        let (mut src, shared) = source(30);
        answer(&shared, 0.0, 100.0);
        src.read(&at(0.0));
        answer(&shared, 5.0, 1e9);
        let r = src.read(&at(5.0));
        assert_eq!(
            r.dropped,
            [("platform".to_owned(), DropReason::AboveCeiling)]
        );
        assert_eq!(joules(&r), 0.0);
        shared.update(|s| {
            s.failures = 2;
            s.last_error = Some("HTTP 500".into());
        });
        let r = src.read(&at(6.0));
        assert_eq!(r.errors.len(), 1);
        assert!(r.errors[0].to_string().contains("HTTP 500"));
        assert!(src.read(&at(7.0)).errors.is_empty(), "reported once");
    }

    #[test]
    fn backoff_doubles_up_to_eight_intervals() {
        let s = Duration::from_secs;
        let waits: Vec<_> = (0..6).map(|f| backoff(s(10), f)).collect();
        assert_eq!(waits, [s(10), s(10), s(20), s(40), s(80), s(80)]);
        assert_eq!(backoff(s(60), 9), s(300));
        assert_eq!(backoff(s(600), 9), s(600));
    }

    #[test]
    fn the_host_uuid() {
        let t = crate::power::fixture::Tree::new();
        assert!(
            host_uuid(t.root())
                .unwrap_err()
                .contains("product_uuid is missing")
        );
        t.file(
            "class/dmi/id/product_uuid",
            "00000000-0000-0000-0000-000000000000",
        );
        assert!(host_uuid(t.root()).unwrap_err().contains("placeholder"));
        t.file(
            "class/dmi/id/product_uuid",
            "4c4c4544-0037-3610-8048-b3c04f4b3732",
        );
        assert_eq!(
            host_uuid(t.root()).unwrap(),
            "4c4c4544-0037-3610-8048-b3c04f4b3732"
        );
    }
}
