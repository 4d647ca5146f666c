//! The pieces every family group is written with: a family of counters or gauges from an
//! iterator of (labels, value), a single gauge, an info metric, and label-value escaping.

use std::fmt;

use prometheus_client::{
    encoding::{
        DescriptorEncoder, EncodeCounterValue, EncodeLabel as _, EncodeLabelSet, EncodeLabelValue,
        EncodeMetric as _, LabelSetEncoder, LabelValueEncoder,
    },
    metrics::{counter::ConstCounter, gauge::ConstGauge, info::Info},
};

pub(super) const NS_PER_S: f64 = 1e9;

/// A label: its name, and its value as the snapshot holds it (escaped when written).
pub(super) type Label<'a> = (&'static str, &'a str);

/// The `estimated` label's value.
pub(super) fn flag(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

/// prometheus-client writes label values as given; the exposition format needs `\\`, `\"` and
/// `\n` escaped, and cgroup names may contain any of them.
pub fn escape_label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    write_escaped(&mut out, v).expect("writing to a String cannot fail");
    out
}

fn write_escaped(out: &mut impl fmt::Write, v: &str) -> fmt::Result {
    // Every label value of every series passes here at each scrape: memchr's vectorised scan
    // keeps that to a few nanoseconds. The three are ASCII, so never inside a multi-byte char.
    let mut rest = v;
    while let Some(i) = memchr::memchr3(b'\\', b'"', b'\n', rest.as_bytes()) {
        out.write_str(&rest[..i])?;
        out.write_str(match rest.as_bytes()[i] {
            b'\\' => "\\\\",
            b'"' => "\\\"",
            _ => "\\n",
        })?;
        rest = &rest[i + 1..];
    }
    out.write_str(rest)
}

/// A label value escaped as it is written, so that the snapshot keeps plain names and a scrape
/// allocates nothing for them.
struct Escaped<'a>(&'a str);

impl EncodeLabelValue for Escaped<'_> {
    fn encode(&self, out: &mut LabelValueEncoder) -> fmt::Result {
        write_escaped(out, self.0)
    }
}

/// A series' labels, every value escaped.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Labels<'l, 'a>(&'l [Label<'a>]);

impl EncodeLabelSet for Labels<'_, '_> {
    fn encode(&self, out: &mut LabelSetEncoder) -> fmt::Result {
        for &(name, value) in self.0 {
            (name, Escaped(value)).encode(out.encode_label())?;
        }
        Ok(())
    }
}

pub(super) fn counter_family<'a, L: AsRef<[Label<'a>]>, V: EncodeCounterValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, V)>,
) -> fmt::Result {
    let ty = ConstCounter::new(0u64).metric_type();
    let mut m = enc.encode_descriptor(name, help, None, ty)?;
    for (labels, v) in series {
        ConstCounter::new(v).encode(m.encode_family(&Labels(labels.as_ref()))?)?;
    }
    Ok(())
}

pub(super) fn gauge_family<'a, L: AsRef<[Label<'a>]>>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, f64)>,
) -> fmt::Result {
    let ty = ConstGauge::new(0.0).metric_type();
    let mut m = enc.encode_descriptor(name, help, None, ty)?;
    for (labels, v) in series {
        ConstGauge::new(v).encode(m.encode_family(&Labels(labels.as_ref()))?)?;
    }
    Ok(())
}

pub(super) fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> fmt::Result {
    let g = ConstGauge::new(v);
    let m = enc.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m)
}

/// An info metric (`<name>_info 1`).
pub(super) fn info(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    labels: &[Label<'_>],
) -> fmt::Result {
    let info = Info::new(Labels(labels));
    let m = enc.encode_descriptor(name, help, None, info.metric_type())?;
    info.encode(m)
}

/// An info family: one `<name>_info 1` series per label set.
pub(super) fn info_family<'a, L: AsRef<[Label<'a>]>>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = L>,
) -> fmt::Result {
    let ty = Info::new(Labels(&[])).metric_type();
    let mut m = enc.encode_descriptor(name, help, None, ty)?;
    for labels in series {
        m.encode_info(&Labels(labels.as_ref()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_label_values() {
        assert_eq!(escape_label_value("/plain.slice"), "/plain.slice");
        assert_eq!(escape_label_value(""), "");
        assert_eq!(escape_label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(escape_label_value("\n\n\"é\\"), "\\n\\n\\\"é\\\\");
    }
}
