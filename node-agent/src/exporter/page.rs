//! The page at `/` and the JSON API it reads (`/api/v1/snapshot`, `/api/v1/history`).
//!
//! The page is three files embedded in the binary (`page/`: HTML, CSS, and a little
//! hand-written JavaScript that draws the chart as inline SVG): no CDN, no build step. It is
//! read-only and sends nothing anywhere — its Content-Security-Policy lets it reach only this
//! agent — and every URL in it is relative, so that it works behind a path prefix and behind
//! whatever serves the rest of the router (TLS, basic auth).

use std::sync::Arc;

use axum::{
    Router,
    extract::State,
    http::{HeaderName, StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use serde::Serialize;

use super::json;
use crate::snapshot::Latest;

const INDEX: &str = include_str!("page/index.html");
const CSS: &str = include_str!("page/page.css");
const JS: &str = include_str!("page/page.js");

/// Only this agent: the page's own files, and the API it fetches.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

#[derive(Clone)]
struct PageState {
    latest: Arc<Latest>,
    node: Arc<str>,
}

/// The page's routes and the API's, with their own state; merged into the exporter's router.
pub(super) fn routes(latest: Arc<Latest>, node: &str) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/page.css",
            get(|| async { asset("text/css; charset=utf-8", CSS) }),
        )
        .route(
            "/page.js",
            get(|| async { asset("text/javascript; charset=utf-8", JS) }),
        )
        .route("/api/v1/snapshot", get(snapshot))
        .route("/api/v1/history", get(history))
        .with_state(PageState {
            latest,
            node: node.into(),
        })
}

type Headers = [(HeaderName, &'static str); 4];

fn asset(content_type: &'static str, body: &'static str) -> (Headers, &'static str) {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // The page changes with the binary: revalidate rather than keep an old one.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// A JSON response that no cache keeps: every request gets the latest.
fn json_response(status: StatusCode, doc: &impl Serialize) -> axum::response::Response {
    let body = serde_json::to_string(doc)
        .unwrap_or_else(|e| format!("{{\"error\":\"encoding JSON failed: {e}\"}}"));
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

#[derive(Serialize)]
struct ErrorDoc {
    error: &'static str,
}

async fn snapshot(State(st): State<PageState>) -> impl IntoResponse {
    match st.latest.get() {
        Some(s) => json_response(StatusCode::OK, &json::snapshot(&s, &st.node)),
        None => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &ErrorDoc {
                error: "no snapshot taken yet: the first comes one interval after the start",
            },
        ),
    }
}

async fn history(State(st): State<PageState>) -> impl IntoResponse {
    json_response(StatusCode::OK, &json::history(&st.latest))
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, http::Request};
    use tower::ServiceExt as _;

    use super::*;
    use crate::snapshot::fixture;

    async fn get(app: &Router, path: &str) -> (StatusCode, String, String) {
        let response = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let ty = response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, ty, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn serves_the_page_and_the_api() {
        let latest = Arc::new(Latest::default());
        let app = routes(latest.clone(), "node-1");
        let (status, _, body) = get(&app, "/api/v1/snapshot").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("no snapshot taken yet"), "{body}");

        latest.publish(fixture::snapshot());
        let (status, ty, body) = get(&app, "/api/v1/snapshot").await;
        assert_eq!((status, ty.as_str()), (StatusCode::OK, "application/json"));
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(doc["node"]["name"], "node-1");
        let (_, _, body) = get(&app, "/api/v1/history").await;
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(doc["points"].as_array().unwrap().len(), 1);

        let (status, ty, html) = get(&app, "/").await;
        assert_eq!(
            (status, ty.as_str()),
            (StatusCode::OK, "text/html; charset=utf-8")
        );
        for (path, ty) in [("page.css", "text/css"), ("page.js", "text/javascript")] {
            assert!(html.contains(&format!("\"{path}\"")), "{path} not linked");
            let (status, got, _) = get(&app, &format!("/{path}")).await;
            assert_eq!(status, StatusCode::OK);
            assert!(got.starts_with(ty), "{got}");
        }
    }

    /// Relative URLs only, so that the page works behind a path prefix; nothing from elsewhere.
    #[test]
    fn the_page_reaches_only_this_agent() {
        for (name, text) in [("index.html", INDEX), ("page.css", CSS), ("page.js", JS)] {
            for bad in [
                "http:", "https:", "\"//", "'//", "`//", "src=\"/", "href=\"/", "(\"/", "url(",
            ] {
                let hits: Vec<_> = text
                    .lines()
                    .filter(|l| l.contains(bad))
                    .filter(|l| !l.contains("http://www.w3.org/2000/svg"))
                    .collect();
                assert!(hits.is_empty(), "{name} contains {bad:?}: {hits:?}");
            }
        }
    }
}
