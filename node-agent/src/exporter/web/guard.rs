//! The layer in front of every route: GET and HEAD only, no request body, the file's rate limit,
//! basic authentication, and the file's extra response headers. It wraps the finished router,
//! so a route added to the router later cannot get around it.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, OnceLock},
    time::Instant,
};

use axum::{
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use base64::Engine as _;

use super::{
    config::{RateLimit, WebConfig},
    source::{Active, WebSource},
};

/// Health endpoints, which `--web.health-unauthenticated` exempts from basic authentication.
pub const HEALTH_PATHS: [&str; 2] = ["/healthz", "/readyz"];

/// Successful (and failed) password checks remembered, so that a scraper pays bcrypt once.
const AUTH_CACHE_ENTRIES: usize = 100;

/// What the guard needs: the configuration source and the exemption.
#[derive(Clone)]
pub struct Guard {
    inner: Arc<Inner>,
}

struct Inner {
    source: Option<Arc<WebSource>>,
    health_unauthenticated: bool,
    /// Used when there is no config file.
    empty: Arc<Active>,
    passwords: PasswordCache,
    bucket: Mutex<Option<Bucket>>,
}

impl Guard {
    pub fn new(source: Option<Arc<WebSource>>, health_unauthenticated: bool) -> Self {
        Self {
            inner: Arc::new(Inner {
                source,
                health_unauthenticated,
                empty: Arc::new(Active {
                    config: WebConfig::default(),
                    tls: None,
                }),
                passwords: PasswordCache::default(),
                bucket: Mutex::new(None),
            }),
        }
    }

    /// Wraps the whole router (every route, the fallback included) in the guard.
    pub fn wrap(self, router: axum::Router) -> axum::Router {
        router.layer(middleware::from_fn_with_state(self, guard))
    }

    fn active(&self) -> Arc<Active> {
        match &self.inner.source {
            Some(s) => s.current(),
            None => self.inner.empty.clone(),
        }
    }
}

async fn guard(State(g): State<Guard>, req: Request, next: Next) -> Response {
    let active = g.active();
    let admitted = match admit(&g, &active, &req) {
        Ok(Some((user, password))) => {
            if g.inner
                .passwords
                .check(&active.config, user, password)
                .await
            {
                Ok(())
            } else {
                Err(Rejection::Unauthorized)
            }
        }
        Ok(None) => Ok(()),
        Err(rejection) => Err(rejection),
    };
    let response = match admitted {
        Ok(()) => next.run(req).await,
        Err(rejection) => rejection.into_response(),
    };
    with_headers(response, &active.config)
}

/// Why a request does not reach a route.
enum Rejection {
    Method,
    Body,
    RateLimit,
    Unauthorized,
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        match self {
            Self::Method => (
                StatusCode::METHOD_NOT_ALLOWED,
                [(header::ALLOW, "GET, HEAD")],
                "only GET and HEAD are served\n",
            )
                .into_response(),
            Self::Body => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "requests carry no body here\n",
            )
                .into_response(),
            Self::RateLimit => {
                (StatusCode::TOO_MANY_REQUESTS, "too many requests\n").into_response()
            }
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"wattlet\"")],
                "Unauthorized\n",
            )
                .into_response(),
        }
    }
}

/// Every check a request must pass before it reaches a route but the password's: Ok with the
/// credentials to check, if the path needs them.
fn admit(
    g: &Guard,
    active: &Active,
    req: &Request,
) -> Result<Option<(String, Vec<u8>)>, Rejection> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(Rejection::Method);
    }
    if has_body(req.headers()) {
        return Err(Rejection::Body);
    }
    if let Some(limit) = active.config.rate_limit.filter(|l| !l.interval.is_zero())
        && !g.take_token(limit)
    {
        return Err(Rejection::RateLimit);
    }
    let exempt = g.inner.health_unauthenticated && HEALTH_PATHS.contains(&req.uri().path());
    if active.config.users.is_empty() || exempt {
        return Ok(None);
    }
    credentials(req.headers())
        .map(Some)
        .ok_or(Rejection::Unauthorized)
}

/// A request body is announced by a non-zero Content-Length or any Transfer-Encoding.
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

/// `Authorization: Basic base64(user:password)`.
fn credentials(headers: &HeaderMap) -> Option<(String, Vec<u8>)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

fn with_headers(mut response: Response<Body>, config: &WebConfig) -> Response<Body> {
    for (name, value) in &config.headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}

impl Guard {
    /// One token from the bucket, refilled at one per interval up to the burst.
    fn take_token(&self, limit: RateLimit) -> bool {
        let mut bucket = self.inner.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let b = match bucket.as_mut() {
            Some(b) if b.limit == limit => b,
            _ => bucket.insert(Bucket {
                limit,
                tokens: f64::from(limit.burst),
                at: now,
            }),
        };
        let refill = now.duration_since(b.at).as_secs_f64() / limit.interval.as_secs_f64();
        b.tokens = (b.tokens + refill).min(f64::from(limit.burst));
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

struct Bucket {
    limit: RateLimit,
    tokens: f64,
    at: Instant,
}

/// bcrypt is slow by design (tens of ms): checks are remembered by a SHA-256 of user, hash and
/// password (the password itself is not kept), successes apart from failures so that a flood
/// of wrong passwords cannot push a scraper's entry out. One bcrypt runs at a time, off the
/// async threads.
#[derive(Default)]
struct PasswordCache {
    ok: Mutex<HashSet<[u8; 32]>>,
    failed: Mutex<HashSet<[u8; 32]>>,
    bcrypt: tokio::sync::Mutex<()>,
}

impl PasswordCache {
    async fn check(&self, config: &WebConfig, user: String, password: Vec<u8>) -> bool {
        let known = config.users.get(&user);
        // An unknown user costs a bcrypt too, so that timing does not tell which users exist.
        let hash = known
            .cloned()
            .unwrap_or_else(|| unknown_user_hash().to_owned());
        let key = cache_key(&user, &hash, &password);
        if let Some(remembered) = self.remembered(&key) {
            return remembered && known.is_some();
        }
        let _one_at_a_time = self.bcrypt.lock().await;
        if let Some(remembered) = self.remembered(&key) {
            return remembered && known.is_some();
        }
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .is_ok_and(|r| r.unwrap_or(false))
            && known.is_some();
        remember(if ok { &self.ok } else { &self.failed }, key);
        ok
    }

    fn remembered(&self, key: &[u8; 32]) -> Option<bool> {
        let lock = |m: &Mutex<HashSet<[u8; 32]>>| {
            m.lock().unwrap_or_else(|e| e.into_inner()).contains(key)
        };
        if lock(&self.ok) {
            Some(true)
        } else if lock(&self.failed) {
            Some(false)
        } else {
            None
        }
    }
}

fn remember(set: &Mutex<HashSet<[u8; 32]>>, key: [u8; 32]) {
    let mut set = set.lock().unwrap_or_else(|e| e.into_inner());
    if set.len() >= AUTH_CACHE_ENTRIES {
        // Forget a tenth (arbitrary entries: the set's order is randomly seeded).
        let drop: Vec<_> = set.iter().take(AUTH_CACHE_ENTRIES / 10).copied().collect();
        for k in drop {
            set.remove(&k);
        }
    }
    set.insert(key);
}

fn cache_key(user: &str, hash: &str, password: &[u8]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [user.as_bytes(), hash.as_bytes(), password] {
        ctx.update(&(part.len() as u64).to_le_bytes());
        ctx.update(part);
    }
    ctx.finish()
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

/// A hash no password matches in practice, at the usual cost (10), made once.
fn unknown_user_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        bcrypt::hash(b"wattlet: no such user", 10).unwrap_or_else(|_| String::from("$2y$10$"))
    })
}
