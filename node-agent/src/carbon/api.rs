//! `--carbon.intensity-url`: a background task polls the endpoint and caches the last good
//! value; readers (the measuring loop) only look at the cache, never at the network.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use http::{HeaderValue, Uri};
use log::info;

use super::{
    SourceKind,
    health::Health,
    http::{FetchError, HttpClient, redacted},
    reading::{BadIntensity, Parsed, parse_intensity_response},
};

#[derive(Clone, Debug)]
pub(crate) struct ApiConfig {
    pub(crate) url: Uri,
    pub(crate) token_file: Option<PathBuf>,
    /// Between good polls.
    pub(crate) refresh: Duration,
    /// How long the last good value stays in force.
    pub(crate) max_age: Duration,
    /// For one whole request.
    pub(crate) timeout: Duration,
    /// The first retry after a failure; doubled at each failure in a row, up to `refresh`.
    pub(crate) retry_min: Duration,
}

impl ApiConfig {
    /// The wait before the next poll after `failures` failures in a row (0: a good poll).
    fn wait(&self, failures: u32) -> Duration {
        if failures == 0 {
            return self.refresh;
        }
        let factor = 1u32 << (failures - 1).min(16);
        self.retry_min.saturating_mul(factor).min(self.refresh)
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum PollError {
    #[error("--carbon.token-file {path}: {detail}")]
    Token { path: PathBuf, detail: String },
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("{url}: {bad}")]
    Bad { url: String, bad: BadIntensity },
}

impl PollError {
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            PollError::Token { .. } => "token_file",
            PollError::Fetch(f) => f.reason(),
            PollError::Bad { bad, .. } => bad.reason(),
        }
    }
}

/// The last good value and when it was fetched, shared by the poller and the readers.
#[derive(Debug, Default)]
pub(crate) struct ApiCache {
    last: Mutex<Option<(Parsed, Instant)>>,
}

impl ApiCache {
    pub(crate) fn store(&self, p: Parsed, at: Instant) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((p, at));
    }

    /// The cached value if it was fetched at most `max_age` before `now`.
    pub(crate) fn value(&self, now: Instant, max_age: Duration) -> Option<(Parsed, Instant)> {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.clone()
            .filter(|(_, at)| now.saturating_duration_since(*at) <= max_age)
    }

    pub(crate) fn last(&self) -> Option<(Parsed, Instant)> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The token, re-read at each poll so that it can rotate; surrounding whitespace (the newline
/// an editor or `kubectl create secret --from-file` leaves) is not part of it.
fn read_token(path: &Path) -> Result<HeaderValue, PollError> {
    let err = |detail: String| PollError::Token {
        path: path.to_owned(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(err("the file is empty".into()));
    }
    let mut v = HeaderValue::from_str(token)
        .map_err(|_| err("the token has characters an HTTP header cannot carry".into()))?;
    v.set_sensitive(true);
    Ok(v)
}

/// One poll: token, request, checked value.
pub(crate) async fn fetch(cfg: &ApiConfig, client: &HttpClient) -> Result<Parsed, PollError> {
    let token = cfg.token_file.as_deref().map(read_token).transpose()?;
    let body = client.get(&cfg.url, token, cfg.timeout).await?;
    parse_intensity_response(&body).map_err(|bad| PollError::Bad {
        url: redacted(&cfg.url),
        bad,
    })
}

/// Polls forever: every `refresh` while polls succeed, sooner (with backoff) after failures.
/// Each failure is counted; each good value replaces the cached one.
pub(crate) async fn poll(
    cfg: ApiConfig,
    client: HttpClient,
    cache: Arc<ApiCache>,
    health: Arc<Health>,
) {
    let mut failures = 0u32;
    loop {
        match fetch(&cfg, &client).await {
            Ok(p) => {
                if failures > 0 || cache.last().is_none() {
                    info!(
                        "carbon intensity from {}: {}",
                        redacted(&cfg.url),
                        Shown(&p)
                    );
                }
                failures = 0;
                cache.store(p, Instant::now());
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                health.failed(SourceKind::Api, e.reason(), &e);
            }
        }
        tokio::time::sleep(cfg.wait(failures)).await;
    }
}

/// A value as logged.
pub(crate) struct Shown<'a>(pub(crate) &'a Parsed);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} g/kWh", self.0.grams_per_kwh)?;
        if let Some(z) = &self.0.zone {
            write!(f, " for {z}")?;
        }
        if self.0.is_estimated == Some(true) {
            f.write_str(" (estimated)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ApiConfig {
        ApiConfig {
            url: "http://127.0.0.1:1/".parse().unwrap(),
            token_file: None,
            refresh: Duration::from_secs(900),
            max_age: Duration::from_secs(6 * 3600),
            timeout: Duration::from_secs(10),
            retry_min: Duration::from_secs(30),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_refresh_interval() {
        let c = cfg();
        let waits: Vec<u64> = (0..8).map(|n| c.wait(n).as_secs()).collect();
        assert_eq!(waits, [900, 30, 60, 120, 240, 480, 900, 900]);
        assert_eq!(c.wait(u32::MAX), c.refresh);
    }

    #[test]
    fn cache_expires_after_max_age() {
        let cache = ApiCache::default();
        let t0 = Instant::now();
        assert!(cache.value(t0, Duration::from_secs(60)).is_none());
        cache.store(parse_intensity_response(b"42").unwrap(), t0);
        let max = Duration::from_secs(60);
        assert!(cache.value(t0 + max, max).is_some());
        assert!(
            cache
                .value(t0 + max + Duration::from_millis(1), max)
                .is_none()
        );
        assert!(cache.last().is_some(), "still known, just not in force");
    }

    #[test]
    fn tokens_are_trimmed_and_checked() {
        let dir = super::super::file::tests::temp_dir("token");
        let path = dir.join("token");
        std::fs::write(&path, "  s3cret\n").unwrap();
        let v = read_token(&path).unwrap();
        assert_eq!(v.to_str().unwrap(), "s3cret");
        assert!(v.is_sensitive());
        std::fs::write(&path, "\n").unwrap();
        assert_eq!(read_token(&path).unwrap_err().reason(), "token_file");
        std::fs::write(&path, "a\u{7}b").unwrap();
        assert_eq!(read_token(&path).unwrap_err().reason(), "token_file");
        let missing = read_token(&dir.join("nope")).unwrap_err();
        assert!(
            missing.to_string().contains("--carbon.token-file"),
            "{missing}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
