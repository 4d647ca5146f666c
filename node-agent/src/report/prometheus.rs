//! Prometheus's HTTP API, as much as the report needs: instant queries (`/api/v1/query`) and
//! the names of the rules it records (`/api/v1/rules`). Plain HTTP or HTTPS (the system's root
//! certificates), over hyper's client.

use std::{collections::BTreeMap, time::Duration};

use http_body_util::{BodyExt as _, Empty};
use hyper::{Request, StatusCode, body::Bytes};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::Value;
use thiserror::Error;

/// How long one request may take: a month of raw series is heavy on a big cluster.
const TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Error)]
pub enum PromError {
    #[error(
        "--prometheus {url:?} is not an http:// or https:// URL: pass Prometheus's address, e.g. \
         --prometheus http://prometheus:9090"
    )]
    Url { url: String },
    #[error("the system's root certificates for https:// cannot be loaded: {0}")]
    Certificates(#[source] std::io::Error),
    #[error(
        "cannot reach Prometheus at {url} ({reason}): check --prometheus and that Prometheus is \
         running there; from outside the cluster, forward its port first (e.g. `kubectl \
         port-forward svc/prometheus 9090`, then --prometheus http://127.0.0.1:9090)"
    )]
    Unreachable { url: String, reason: String },
    #[error(
        "Prometheus at {url} did not answer within {secs} s ({query}): try a shorter period, or \
         load deploy/rules/wattlet.rules.yaml so that days come from the recording rules",
        secs = TIMEOUT.as_secs()
    )]
    Timeout { url: String, query: String },
    #[error(
        "{url} answered HTTP {status} to {path}, not as Prometheus's API would: is --prometheus \
         the address of Prometheus (not Grafana, not the agent)? It said: {body}"
    )]
    NotPrometheus {
        url: String,
        path: &'static str,
        status: u16,
        body: String,
    },
    #[error("Prometheus rejected the query `{query}`: {kind}: {message}")]
    Query {
        query: String,
        kind: String,
        message: String,
    },
}

/// One series of an instant vector: its labels and value.
pub type Sample = (BTreeMap<String, String>, f64);

pub struct Prometheus {
    base: String,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl Prometheus {
    pub fn new(url: &str) -> Result<Self, PromError> {
        let base = url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://"))
            || base.parse::<hyper::Uri>().is_err()
        {
            return Err(PromError::Url { url: url.into() });
        }
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(PromError::Certificates)?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            base,
            client: Client::builder(TokioExecutor::new()).build(https),
        })
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// GET `path?query`: the `data` of a successful answer. `what` names the request in errors.
    async fn get(&self, path: &'static str, query: &str, what: &str) -> Result<Value, PromError> {
        let uri = format!("{}{path}?{query}", self.base);
        let request = Request::get(uri)
            .header(hyper::header::ACCEPT, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("wattlet-report/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::new())
            .map_err(|_| PromError::Url {
                url: self.base.clone(),
            })?;
        let exchange = async {
            let response =
                self.client
                    .request(request)
                    .await
                    .map_err(|e| PromError::Unreachable {
                        url: self.base.clone(),
                        reason: crate::http_client::chain(&e),
                    })?;
            let status = response.status();
            let body =
                response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| PromError::Unreachable {
                        url: self.base.clone(),
                        reason: crate::http_client::chain(&e),
                    })?;
            Ok::<_, PromError>((status, body.to_bytes()))
        };
        let (status, body) = tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| PromError::Timeout {
                url: self.base.clone(),
                query: what.into(),
            })??;
        answer(&self.base, path, what, status, &body)
    }

    /// `expr` evaluated at `at` (Unix milliseconds): its series. A scalar is one series
    /// without labels.
    pub async fn query(&self, expr: &str, at: i64) -> Result<Vec<Sample>, PromError> {
        let query = format!(
            "query={}&time={}",
            encode(expr),
            super::time::prometheus_time(at)
        );
        let data = self.get("/api/v1/query", &query, expr).await?;
        Ok(samples(&data))
    }

    /// The names of the recording rules Prometheus evaluates.
    pub async fn recording_rules(&self) -> Result<Vec<String>, PromError> {
        let data = self
            .get("/api/v1/rules", "type=record", "/api/v1/rules")
            .await?;
        Ok(rule_names(&data))
    }
}

/// Prometheus answers JSON with `status` = success or error, for 2xx and for 4xx/5xx alike: the
/// `data` of an answer from `base` to `path`, or what went wrong. Pure: the prometheus_api fuzz
/// target feeds it any body.
pub(crate) fn answer(
    base: &str,
    path: &'static str,
    what: &str,
    status: StatusCode,
    body: &[u8],
) -> Result<Value, PromError> {
    let not_prometheus = || PromError::NotPrometheus {
        url: base.to_owned(),
        path,
        status: status.as_u16(),
        body: String::from_utf8_lossy(&body[..body.len().min(300)])
            .trim()
            .to_owned(),
    };
    let v: Value = serde_json::from_slice(body).map_err(|_| not_prometheus())?;
    match v["status"].as_str() {
        Some("success") => Ok(v["data"].clone()),
        Some("error") => Err(PromError::Query {
            query: what.into(),
            kind: v["errorType"].as_str().unwrap_or("error").into(),
            message: v["error"].as_str().unwrap_or("").into(),
        }),
        _ => Err(not_prometheus()),
    }
}

/// The names of the recording rules in `/api/v1/rules`'s `data`.
pub(crate) fn rule_names(data: &Value) -> Vec<String> {
    let groups = data["groups"].as_array().cloned().unwrap_or_default();
    groups
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .filter_map(|r| r["name"].as_str().map(str::to_owned))
        .collect()
}

/// The series of a query's `data` (a vector or a scalar); NaN and ±Inf samples are dropped.
pub(crate) fn samples(data: &Value) -> Vec<Sample> {
    let value = |v: &Value| {
        v[1].as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|v| v.is_finite())
    };
    match data["resultType"].as_str() {
        Some("scalar") => value(&data["result"])
            .map(|v| (BTreeMap::new(), v))
            .into_iter()
            .collect(),
        _ => data["result"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .filter_map(|r| {
                        let labels = r["metric"]
                            .as_object()
                            .map(|m| {
                                m.iter()
                                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                                    .collect()
                            })
                            .unwrap_or_default();
                        Some((labels, value(&r["value"])?))
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Percent-encodes all but RFC 3986's unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn prom() -> Prometheus {
        Prometheus::new("http://127.0.0.1:9/prom/").unwrap()
    }

    #[test]
    fn reads_vectors_and_scalars() {
        let data = json!({"resultType": "vector", "result": [
            {"metric": {"namespace": "a"}, "value": [1.0, "2.5"]},
            {"metric": {"namespace": "b"}, "value": [1.0, "NaN"]},
        ]});
        let s = samples(&data);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].0["namespace"].as_str(), s[0].1), ("a", 2.5));
        let scalar = samples(&json!({"resultType": "scalar", "result": [1.0, "3"]}));
        assert_eq!(scalar, [(BTreeMap::new(), 3.0)]);
    }

    #[test]
    fn a_rejected_query_is_quoted_with_prometheus_message() {
        let body =
            br#"{"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected"}"#;
        let e = answer(
            &prom().base,
            "/api/v1/query",
            "sum(",
            StatusCode::BAD_REQUEST,
            body,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Prometheus rejected the query `sum(`: bad_data: 1:5: parse error: unexpected"
        );
    }

    #[test]
    fn something_else_than_prometheus_says_so() {
        let e = answer(
            &prom().base,
            "/api/v1/query",
            "up",
            StatusCode::NOT_FOUND,
            b"404 page not found",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("http://127.0.0.1:9/prom answered HTTP 404 to /api/v1/query"),
            "{e}"
        );
        assert!(e.contains("404 page not found"), "{e}");
    }

    #[test]
    fn urls() {
        assert!(matches!(
            Prometheus::new("prometheus:9090"),
            Err(PromError::Url { .. })
        ));
        assert_eq!(prom().url(), "http://127.0.0.1:9/prom");
        assert_eq!(
            encode("sum by (a) (x{z=~\"p|d\"}[5s])"),
            "sum%20by%20%28a%29%20%28x%7Bz%3D~%22p%7Cd%22%7D%5B5s%5D%29"
        );
    }

    #[tokio::test]
    async fn nothing_listening_is_unreachable_with_the_fix() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let p = Prometheus::new(&format!("http://127.0.0.1:{port}")).unwrap();
        let e = p.query("up", 0).await.unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "cannot reach Prometheus at http://127.0.0.1:{port} ("
            )),
            "{e}"
        );
        assert!(e.contains("refused"), "{e}");
        assert!(e.contains("kubectl port-forward"), "{e}");
    }
}
