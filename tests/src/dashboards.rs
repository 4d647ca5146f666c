//! The PromQL that deploy/ ships — the Grafana and Perses dashboards' panels and variables, the
//! Prometheus rules — extracted as Grafana, Perses and Prometheus would run it, with dashboard
//! variables substituted as the dashboards would substitute them.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

/// The repository's deploy/ directory.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// A JSON file under deploy/.
pub fn read_json(relative: &str) -> Result<Value> {
    let path = deploy_dir().join(relative);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// One panel: its title and the PromQL of each of its queries, as written.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Panel {
    pub title: String,
    pub exprs: Vec<String>,
}

/// The panels of a Grafana dashboard (rows are containers, not panels; a collapsed row keeps its
/// panels inside it). Err on a panel without a title or without a query.
pub fn grafana_panels(dashboard: &Value) -> Result<Vec<Panel>> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().context("no panels")? {
        if p["type"] == "row" {
            for inner in p["panels"].as_array().into_iter().flatten() {
                out.push(grafana_panel(inner)?);
            }
        } else {
            out.push(grafana_panel(p)?);
        }
    }
    Ok(out)
}

fn grafana_panel(p: &Value) -> Result<Panel> {
    let title = p["title"].as_str().context("a panel without a title")?;
    let targets = p["targets"].as_array().unwrap_or(&Vec::new()).clone();
    ensure!(!targets.is_empty(), "panel {title:?} has no targets");
    let exprs = targets
        .iter()
        .map(|t| match t["expr"].as_str() {
            Some(e) if !e.trim().is_empty() => Ok(e.to_owned()),
            _ => bail!("panel {title:?}: a target without an expr"),
        })
        .collect::<Result<_>>()?;
    Ok(Panel {
        title: title.to_owned(),
        exprs,
    })
}

/// The panels of a Perses dashboard (`spec.panels`, by key).
pub fn perses_panels(dashboard: &Value) -> Result<Vec<Panel>> {
    let mut out = Vec::new();
    for (key, p) in dashboard["spec"]["panels"]
        .as_object()
        .context("no spec.panels")?
    {
        let title = p["spec"]["display"]["name"]
            .as_str()
            .with_context(|| format!("panel {key} has no display.name"))?;
        let queries = p["spec"]["queries"].as_array();
        ensure!(
            queries.is_some_and(|q| !q.is_empty()),
            "panel {key} has no queries"
        );
        let exprs = queries
            .into_iter()
            .flatten()
            .map(|q| match q["spec"]["plugin"]["spec"]["query"].as_str() {
                Some(e) if !e.trim().is_empty() => Ok(e.to_owned()),
                _ => bail!("panel {key}: a query without PromQL"),
            })
            .collect::<Result<_>>()?;
        out.push(Panel {
            title: title.to_owned(),
            exprs,
        });
    }
    Ok(out)
}

/// A variable listing a label's values among the series a selector matches.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LabelVariable {
    pub name: String,
    pub label: String,
    pub selector: String,
}

/// Grafana's query variables: `label_values(<selector>, <label>)`.
pub fn grafana_label_variables(dashboard: &Value) -> Result<Vec<LabelVariable>> {
    let mut out = Vec::new();
    for v in dashboard["templating"]["list"]
        .as_array()
        .context("no templating.list")?
    {
        if v["type"] != "query" {
            continue;
        }
        let name = v["name"].as_str().context("a variable without a name")?;
        let query = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .with_context(|| format!("variable {name} has no query"))?;
        let (selector, label) = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .and_then(|q| q.rsplit_once(','))
            .with_context(|| {
                format!("variable {name}: {query} is not label_values(series, label)")
            })?;
        out.push(LabelVariable {
            name: name.to_owned(),
            label: label.trim().to_owned(),
            selector: selector.trim().to_owned(),
        });
    }
    Ok(out)
}

/// Perses' ListVariables backed by PrometheusLabelValuesVariable (one matcher each).
pub fn perses_label_variables(dashboard: &Value) -> Result<Vec<LabelVariable>> {
    let mut out = Vec::new();
    for v in dashboard["spec"]["variables"]
        .as_array()
        .context("no spec.variables")?
    {
        let spec = &v["spec"];
        if spec["plugin"]["kind"] != "PrometheusLabelValuesVariable" {
            continue;
        }
        let name = spec["name"].as_str().context("a variable without a name")?;
        let plugin = &spec["plugin"]["spec"];
        let matchers = plugin["matchers"].as_array().map(Vec::as_slice);
        let [selector] = matchers.unwrap_or_default() else {
            bail!("variable {name}: one matcher expected");
        };
        out.push(LabelVariable {
            name: name.to_owned(),
            label: plugin["labelName"]
                .as_str()
                .with_context(|| format!("variable {name} has no labelName"))?
                .to_owned(),
            selector: selector
                .as_str()
                .context("a matcher that is not a string")?
                .to_owned(),
        });
    }
    Ok(out)
}

/// A recording rule or an alert of a rules file.
#[derive(Clone, Debug)]
pub struct Rule {
    pub name: String,
    pub expr: String,
    pub alert: bool,
    pub group: String,
}

/// Every rule of a Prometheus rules file (`groups: [{name, rules: [...]}]`), parsed into JSON.
pub fn rules(file: &Value) -> Result<Vec<Rule>> {
    let mut out = Vec::new();
    for g in file["groups"].as_array().context("no groups")? {
        let group = g["name"].as_str().context("a group without a name")?;
        for r in g["rules"].as_array().context("a group without rules")? {
            let (name, alert) = match (r["record"].as_str(), r["alert"].as_str()) {
                (Some(n), None) => (n, false),
                (None, Some(n)) => (n, true),
                _ => bail!("group {group}: a rule must be either record or alert"),
            };
            out.push(Rule {
                name: name.to_owned(),
                expr: r["expr"]
                    .as_str()
                    .with_context(|| format!("{name} has no expr"))?
                    .trim()
                    .to_owned(),
                alert,
                group: group.to_owned(),
            });
        }
    }
    Ok(out)
}

/// Substitutes dashboard variables as Grafana and Perses do: `$name`, `${name}`,
/// `${name:format}` and `[[name]]`. An unknown variable is an error: a typo would otherwise reach
/// Prometheus as a literal `$` and fail, or worse, match nothing quietly.
pub fn interpolate(expr: &str, vars: &BTreeMap<&str, String>) -> Result<String> {
    let lookup = |name: &str| {
        vars.get(name)
            .cloned()
            .with_context(|| format!("unknown variable ${name} in {expr}"))
    };
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(i) = rest.find(['$', '[']) {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(after) = rest.strip_prefix("${") {
            let end = after.find('}').context("unclosed ${")?;
            let name = after[..end].split(':').next().unwrap_or_default();
            out.push_str(&lookup(name)?);
            rest = &after[end + 1..];
        } else if let Some(after) = rest.strip_prefix("[[") {
            let end = after.find("]]").context("unclosed [[")?;
            out.push_str(&lookup(&after[..end])?);
            rest = &after[end + 2..];
        } else if rest.starts_with('$') {
            let name_len = rest[1..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len() - 1);
            if name_len == 0 {
                // A `$` that names nothing: a regex anchor, kept.
                out.push('$');
            } else {
                out.push_str(&lookup(&rest[1..=name_len])?);
            }
            rest = &rest[1 + name_len..];
        } else {
            out.push('[');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolates_every_syntax() {
        let vars = BTreeMap::from([
            ("node", "n1".to_owned()),
            ("__range", "5m".to_owned()),
            ("__rate_interval", "4s".to_owned()),
        ]);
        let got = interpolate(
            r#"rate(x{node=~"$node", a="${node}", b="${node:regex}", c="[[node]]", d=~"z$"}[$__rate_interval])[$__range]"#,
            &vars,
        )
        .unwrap();
        assert_eq!(
            got,
            r#"rate(x{node=~"n1", a="n1", b="n1", c="n1", d=~"z$"}[4s])[5m]"#
        );
        assert!(interpolate("x{a=\"$nodes\"}", &vars).is_err());
    }

    #[test]
    fn reads_label_values_variables() {
        let d: Value = serde_json::json!({"templating": {"list": [
            {"type": "datasource", "name": "datasource"},
            {"type": "query", "name": "pod",
             "query": {"query": "label_values(m{node=~\"$node\", a=\"b,c\"}, pod)"}}
        ]}});
        let v = grafana_label_variables(&d).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].label, "pod");
        assert_eq!(v[0].selector, "m{node=~\"$node\", a=\"b,c\"}");
    }
}
