//! HTTP serving: `/metrics` (OpenMetrics when asked for, classic text otherwise), `/healthz`,
//! `/readyz`, and the page at `/` with the JSON API it reads (`page`), behind the protection
//! of [`web`](super::web): TLS, basic authentication, limits.
//!
//! Routes go in [`routes`]; [`serve`] wraps the finished router in the guard, so that every
//! route — any added later too — is covered by the same protection.

use std::{io, net::SocketAddr, sync::Arc};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use prometheus_client::registry::Registry;

use super::{
    classic::openmetrics_to_text_004,
    collector::render,
    page,
    web::{self, Web},
};
use crate::snapshot::Latest;

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const TEXT_004: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("listening on {addr}: pick a free address with --web.listen-address")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

#[derive(Clone)]
struct AppState {
    registry: Arc<Registry>,
    latest: Arc<Latest>,
}

/// Binds the listener first so that a taken port is an error at start, not later.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, HttpError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })
}

/// Serves until `shutdown` completes, then lets requests in progress finish (briefly); `node`
/// is this node's name, as the page shows it.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Registry,
    latest: Arc<Latest>,
    node: &str,
    web: Web,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let state = AppState {
        registry: Arc::new(registry),
        latest: latest.clone(),
    };
    let app = web.guard().wrap(routes(state, latest, node));
    web::run(listener, app, web, shutdown).await;
}

/// Every page and endpoint. The guard is put around this router as a whole by [`serve`].
fn routes(state: AppState, latest: Arc<Latest>, node: &str) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
        .merge(page::routes(latest, node))
}

async fn metrics(State(s): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    scrape(&s.registry, &headers)
}

/// Prometheus asks for OpenMetrics in its Accept header; everything else gets classic text.
fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"))
}

/// The response to one scrape: status, content type, body.
fn scrape(
    registry: &Registry,
    headers: &HeaderMap,
) -> (StatusCode, [(header::HeaderName, &'static str); 1], String) {
    match render(registry) {
        Ok(body) if wants_openmetrics(headers) => {
            (StatusCode::OK, [(header::CONTENT_TYPE, OPENMETRICS)], body)
        }
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, TEXT_004)],
            openmetrics_to_text_004(&body),
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "encoding metrics failed\n".to_owned(),
        ),
    }
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    match s.latest.get() {
        Some(_) => (StatusCode::OK, "ready\n"),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no snapshot taken yet\n",
        ),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;
    use crate::{exporter::registry, snapshot::fixture};

    fn accept(values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::ACCEPT, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn negotiates_the_format() {
        let latest = Arc::new(Latest::default());
        latest.publish(fixture::snapshot());
        let reg = registry(latest, "n1", None);

        // What Prometheus sends.
        let prometheus = accept(&[
            "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.1",
        ]);
        let (status, [(_, ty)], om) = scrape(&reg, &prometheus);
        assert_eq!((status, ty), (StatusCode::OK, OPENMETRICS));
        assert!(om.ends_with("# EOF\n"));
        // In a second Accept header, too.
        let (_, [(_, ty)], _) = scrape(
            &reg,
            &accept(&["text/html", "application/openmetrics-text"]),
        );
        assert_eq!(ty, OPENMETRICS);

        // curl, promtool and older agents.
        for headers in [HeaderMap::new(), accept(&["*/*"]), accept(&["text/plain"])] {
            let (status, [(_, ty)], text) = scrape(&reg, &headers);
            assert_eq!((status, ty), (StatusCode::OK, TEXT_004));
            assert_eq!(text, openmetrics_to_text_004(&om));
        }
    }

    #[tokio::test]
    async fn a_taken_port_names_the_flag() {
        let taken = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = taken.local_addr().unwrap();
        let err = bind(addr).await.unwrap_err();
        let shown = format!("{:#}", anyhow::Error::from(err));
        assert!(
            shown.starts_with(&format!(
                "listening on {addr}: pick a free address with --web.listen-address: "
            )),
            "{shown}"
        );
    }
}
