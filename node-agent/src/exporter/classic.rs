//! The classic Prometheus text format (0.0.4), rewritten from prometheus-client's OpenMetrics
//! output, for scrapers and tools that do not ask for OpenMetrics.

use std::fmt::Write as _;

/// Rewrites prometheus-client's OpenMetrics output as the classic Prometheus text format
/// (0.0.4), for scrapers and tools that do not ask for OpenMetrics (curl, promtool, older
/// agents): counter families are named with their `_total` suffix, `info` becomes a gauge named
/// `_info`, and the `# EOF` and `# UNIT` lines go.
pub fn openmetrics_to_text_004(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut pending_help: Option<&str> = None;
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            // OpenMetrics puts HELP before TYPE; the name it needs is known at TYPE.
            pending_help = Some(rest.split_once(' ').map_or("", |(_, help)| help));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = classic_type(rest);
            if let Some(help) = pending_help.take() {
                let _ = writeln!(out, "# HELP {name} {help}");
            }
            let _ = writeln!(out, "# TYPE {name} {ty}");
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A family's name and type in the classic format, from an OpenMetrics `# TYPE` line's rest.
fn classic_type(rest: &str) -> (String, &str) {
    let (name, ty) = rest.split_once(' ').unwrap_or((rest, "untyped"));
    match ty {
        "counter" => (format!("{name}_total"), "counter"),
        "info" => (format!("{name}_info"), "gauge"),
        "unknown" => (name.to_owned(), "untyped"),
        other => (name.to_owned(), other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_to_classic_text() {
        let om = "# HELP a_seconds Help text.\n# TYPE a_seconds counter\n# UNIT a_seconds seconds\n\
                  a_seconds_total{x=\"1\"} 2.0\n# HELP b Build.\n# TYPE b info\nb_info{v=\"1\"} 1\n\
                  # TYPE g gauge\ng 3\n# HELP u Unknown.\n# TYPE u unknown\nu 1\n# EOF\n";
        assert_eq!(
            openmetrics_to_text_004(om),
            "# HELP a_seconds_total Help text.\n# TYPE a_seconds_total counter\n\
             a_seconds_total{x=\"1\"} 2.0\n# HELP b_info Build.\n# TYPE b_info gauge\n\
             b_info{v=\"1\"} 1\n# TYPE g gauge\ng 3\n# HELP u Unknown.\n# TYPE u untyped\nu 1\n"
        );
    }
}
