//! The intensity in force: the first configured source with a good value, in the order api,
//! file, static, table, default. The measuring loop asks once per interval; only the API's
//! poller touches the network, in the background.

use std::{
    fmt::Write as _,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use log::info;
use rustls::pki_types::CertificateDer;

use super::{
    CarbonArgs, SourceKind,
    api::{self, ApiCache, ApiConfig, Shown},
    emissions::embodied_grams_per_second,
    file::FileSource,
    health::{ErrorCount, Health},
    http::{HttpClient, redacted},
    reading::{Parsed, Reading},
    table::{self, Factor, WORLD_AVERAGE, WORLD_AVERAGE_SOURCE},
};

#[derive(Debug, thiserror::Error)]
pub enum CarbonError {
    #[error(
        "--carbon.intensity-url needs the agent's async runtime (Intensity::start outside tokio)"
    )]
    NoRuntime,
    #[error("--carbon.intensity-url: setting up TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// Knobs the flags do not expose (tests shorten them, and trust their own CA).
#[derive(Clone, Debug, Default)]
pub(crate) struct Tuning {
    pub(crate) timeout: Option<Duration>,
    pub(crate) retry_min: Option<Duration>,
    pub(crate) extra_roots: Vec<CertificateDer<'static>>,
}

#[derive(Debug)]
struct Api {
    cfg: ApiConfig,
    cache: Arc<ApiCache>,
    /// The poller, stopped with the handle.
    task: Option<tokio::task::AbortHandle>,
    /// `wattlet check`'s one poll, when it failed.
    probe_error: Option<String>,
}

/// The handle the measuring loop reads the intensity from, once per interval.
#[derive(Debug)]
pub struct Intensity {
    api: Option<Api>,
    file: Option<FileSource>,
    fixed: Option<f64>,
    /// `--carbon.zone`, else the node's region when the table knows it.
    zone: Option<&'static Factor>,
    region: Mutex<Option<&'static Factor>>,
    health: Arc<Health>,
    started: Instant,
    in_use: Mutex<Option<SourceKind>>,
}

impl Drop for Intensity {
    fn drop(&mut self) {
        if let Some(task) = self.api.as_ref().and_then(|a| a.task.as_ref()) {
            task.abort();
        }
    }
}

fn api_config(args: &CarbonArgs, tuning: &Tuning) -> Option<ApiConfig> {
    let url = args.intensity_url.clone()?;
    Some(ApiConfig {
        url,
        token_file: args.token_file.clone(),
        refresh: args.refresh,
        max_age: args.max_age,
        timeout: tuning
            .timeout
            .unwrap_or(Duration::from_secs(10).min(args.refresh)),
        retry_min: tuning
            .retry_min
            .unwrap_or(Duration::from_secs(30).min(args.refresh)),
    })
}

impl Intensity {
    /// Sets up the configured sources and starts the API's poller as a tokio task (so, with
    /// `--carbon.intensity-url`, call it from within the agent's runtime).
    pub fn start(args: &CarbonArgs) -> Result<Self, CarbonError> {
        Self::start_tuned(args, &Tuning::default())
    }

    pub(crate) fn start_tuned(args: &CarbonArgs, tuning: &Tuning) -> Result<Self, CarbonError> {
        let mut me = Self::without_api(args);
        if let Some(cfg) = api_config(args, tuning) {
            let rt = tokio::runtime::Handle::try_current().map_err(|_| CarbonError::NoRuntime)?;
            let client = HttpClient::new(&tuning.extra_roots)?;
            let cache = Arc::new(ApiCache::default());
            let task = rt.spawn(api::poll(
                cfg.clone(),
                client,
                cache.clone(),
                me.health.clone(),
            ));
            me.api = Some(Api {
                cfg,
                cache,
                task: Some(task.abort_handle()),
                probe_error: None,
            });
        }
        Ok(me)
    }

    /// For `wattlet check`: the same sources, with one poll of the API made now (on a thread
    /// of its own, so that this works inside or outside a runtime) and no poller.
    pub fn probe(args: &CarbonArgs) -> Self {
        Self::probe_tuned(args, &Tuning::default())
    }

    pub(crate) fn probe_tuned(args: &CarbonArgs, tuning: &Tuning) -> Self {
        let mut me = Self::without_api(args);
        if let Some(cfg) = api_config(args, tuning) {
            let cache = Arc::new(ApiCache::default());
            let outcome = probe_once(&cfg, &tuning.extra_roots);
            let probe_error = match outcome {
                Ok(p) => {
                    cache.store(p, Instant::now());
                    None
                }
                Err((reason, detail)) => {
                    me.health.failed(SourceKind::Api, reason, &detail);
                    Some(detail)
                }
            };
            me.api = Some(Api {
                cfg,
                cache,
                task: None,
                probe_error,
            });
        }
        me
    }

    fn without_api(args: &CarbonArgs) -> Self {
        Self {
            api: None,
            file: args
                .intensity_file
                .clone()
                .map(|p| FileSource::new(p, args.max_age)),
            fixed: args.intensity,
            zone: args.zone.map(|z| z.0),
            region: Mutex::new(None),
            health: Arc::default(),
            started: Instant::now(),
            in_use: Mutex::new(None),
        }
    }

    /// The node's `topology.kubernetes.io/region` (or none): used for the table when
    /// `--carbon.zone` is not set. Returns whether the table knows it.
    pub fn set_region(&self, region: Option<&str>) -> bool {
        let found = table::lookup(region);
        let mut cur = self.region.lock().unwrap_or_else(|e| e.into_inner());
        if *cur != found {
            match (region, found) {
                (Some(r), None) => info!(
                    "node region {r:?} is not in the built-in carbon table; set --carbon.zone \
                     to the nearest zone or country"
                ),
                (Some(r), Some(f)) => info!(
                    "node region {r:?}: built-in intensity {} g/kWh ({})",
                    f.grams_per_kwh, f.source
                ),
                (None, _) => {}
            }
            *cur = found;
        }
        found.is_some()
    }

    /// The intensity in force at `now`: always a value, at worst the world average.
    pub fn current(&self, now: Instant) -> Reading {
        let r = self
            .api_reading(now)
            .or_else(|| self.file_reading(now))
            .or_else(|| self.static_reading())
            .or_else(|| self.table_reading())
            .unwrap_or_else(|| self.default_reading());
        self.note_source(&r);
        r
    }

    fn api_reading(&self, now: Instant) -> Option<Reading> {
        let api = self.api.as_ref()?;
        let (p, at) = api.cache.value(now, api.cfg.max_age)?;
        Some(reading(p, SourceKind::Api, at))
    }

    fn file_reading(&self, now: Instant) -> Option<Reading> {
        let (p, at) = self.file.as_ref()?.value(now, &self.health)?;
        Some(reading(p, SourceKind::File, at))
    }

    fn static_reading(&self) -> Option<Reading> {
        Some(Reading {
            grams_per_kwh: self.fixed?,
            source: SourceKind::Static,
            zone: self.zone.map(|f| f.zone.to_owned()),
            is_estimated: None,
            fetched_at: self.started,
            datetime: None,
        })
    }

    fn table_factor(&self) -> Option<&'static Factor> {
        self.zone
            .or_else(|| *self.region.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn table_reading(&self) -> Option<Reading> {
        let f = self.table_factor()?;
        Some(Reading {
            grams_per_kwh: f.grams_per_kwh,
            source: SourceKind::Table,
            zone: Some(f.zone.to_owned()),
            is_estimated: None,
            fetched_at: self.started,
            datetime: None,
        })
    }

    fn default_reading(&self) -> Reading {
        Reading {
            grams_per_kwh: WORLD_AVERAGE,
            source: SourceKind::Default,
            zone: None,
            is_estimated: None,
            fetched_at: self.started,
            datetime: None,
        }
    }

    /// Logs when the source in use changes (the API's value aged out, the file came back).
    fn note_source(&self, r: &Reading) {
        let mut in_use = self.in_use.lock().unwrap_or_else(|e| e.into_inner());
        if *in_use == Some(r.source) {
            return;
        }
        let why = match (*in_use, &self.api) {
            (Some(SourceKind::Api), Some(api)) => format!(
                " (the API's last good value is older than --carbon.max-age {:?})",
                api.cfg.max_age
            ),
            _ => String::new(),
        };
        info!(
            "carbon intensity now from {}: {} g/kWh{}{why}",
            r.source,
            r.grams_per_kwh,
            match r.zone_label() {
                "" => String::new(),
                z => format!(" for {z}"),
            }
        );
        *in_use = Some(r.source);
    }

    /// Failures so far per source and reason, for `wattlet_carbon_intensity_errors_total`.
    pub fn errors(&self) -> Vec<ErrorCount> {
        self.health.counts()
    }

    /// What is in use and how to do better, in a sentence or two (for `wattlet check` and the
    /// startup log).
    pub fn describe(&self, now: Instant) -> String {
        let r = self.current(now);
        let mut s = match r.source {
            SourceKind::Api => {
                let url = self.api.as_ref().map(|a| redacted(&a.cfg.url));
                format!("api: {} from {}", shown(&r), url.unwrap_or_default())
            }
            SourceKind::File => {
                let path = self.file.as_ref().map(|f| f.path().display().to_string());
                format!("file: {} from {}", shown(&r), path.unwrap_or_default())
            }
            SourceKind::Static => format!("static: {} from --carbon.intensity", shown(&r)),
            SourceKind::Table => {
                let f = self.table_factor();
                format!(
                    "table: {} ({}), a yearly average: --carbon.intensity-url gives the \
                     grid's hour-by-hour intensity",
                    shown(&r),
                    f.map_or("", |f| f.source)
                )
            }
            SourceKind::Default => format!(
                "using the world average {WORLD_AVERAGE} g/kWh (source=default; \
                 {WORLD_AVERAGE_SOURCE}): set --carbon.zone, --carbon.intensity or \
                 --carbon.intensity-url for your grid"
            ),
        };
        self.explain_failures(r.source, &mut s);
        s
    }

    /// Why the better sources are not in use.
    fn explain_failures(&self, in_use: SourceKind, s: &mut String) {
        if let Some(api) = self.api.as_ref().filter(|_| in_use != SourceKind::Api) {
            match &api.probe_error {
                Some(e) => {
                    let _ = write!(s, "; --carbon.intensity-url failed: {e}");
                }
                None => {
                    let _ = write!(
                        s,
                        "; --carbon.intensity-url has no value younger than {:?} yet",
                        api.cfg.max_age
                    );
                }
            }
        }
        if let Some(f) = self.file.as_ref().filter(|_| in_use > SourceKind::File) {
            let _ = write!(
                s,
                "; --carbon.intensity-file {} holds no usable value",
                f.path().display()
            );
        }
    }
}

fn reading(p: Parsed, source: SourceKind, fetched_at: Instant) -> Reading {
    Reading {
        grams_per_kwh: p.grams_per_kwh,
        source,
        zone: p.zone,
        is_estimated: p.is_estimated,
        fetched_at,
        datetime: p.datetime,
    }
}

fn shown(r: &Reading) -> String {
    let p = Parsed {
        grams_per_kwh: r.grams_per_kwh,
        zone: r.zone.clone(),
        datetime: None,
        updated_at: None,
        is_estimated: r.is_estimated,
    };
    Shown(&p).to_string()
}

/// One poll on a thread with its own small runtime.
fn probe_once(
    cfg: &ApiConfig,
    extra_roots: &[CertificateDer<'static>],
) -> Result<Parsed, (&'static str, String)> {
    let cfg = cfg.clone();
    let roots = extra_roots.to_vec();
    let run = move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ("unreachable", format!("starting a runtime: {e}")))?;
        rt.block_on(async {
            let client = HttpClient::new(&roots).map_err(|e| ("unreachable", e.to_string()))?;
            api::fetch(&cfg, &client)
                .await
                .map_err(|e| (e.reason(), e.to_string()))
        })
    };
    std::thread::spawn(run)
        .join()
        .unwrap_or_else(|_| Err(("unreachable", "the probe panicked".into())))
}

/// `wattlet check`'s carbon line.
#[derive(Clone, Debug)]
pub struct CarbonCheck {
    /// The intensity the agent would use now.
    pub reading: Reading,
    /// A measured or configured intensity is in use, and every configured source works.
    pub ok: bool,
    pub detail: String,
}

/// Probes the configured sources (one API poll, one file read) and says which is in use, how
/// to set a better one, and the PUE and embodied settings.
pub fn check(args: &CarbonArgs) -> CarbonCheck {
    check_with(&Intensity::probe(args), args)
}

pub(crate) fn check_with(intensity: &Intensity, args: &CarbonArgs) -> CarbonCheck {
    let now = Instant::now();
    let reading = intensity.current(now);
    let mut detail = intensity.describe(now);
    let _ = write!(detail, "; PUE {}", args.pue);
    match args.embodied_kg {
        Some(kg) => {
            let _ = write!(
                detail,
                "; embodied {kg} kgCO2e over {:.0} days ({:.4} g/s)",
                args.lifetime.as_secs_f64() / 86_400.0,
                embodied_grams_per_second(kg, args.lifetime)
            );
        }
        None => detail.push_str("; embodied emissions off (--carbon.embodied-kg)"),
    }
    let ok = reading.source != SourceKind::Default && intensity.errors().is_empty();
    CarbonCheck {
        reading,
        ok,
        detail,
    }
}
