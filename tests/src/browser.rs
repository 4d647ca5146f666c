//! A real browser for the tests that look at what a person sees: Debian's Chromium, headless
//! (`cargo xtask test` installs it), and just enough reading of the DOM it dumps to find an
//! element's text, an attribute, and a table's cells.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// How long a page may run its scripts before the DOM is dumped or the screenshot taken.
const VIRTUAL_TIME_MS: u32 = 4000;
/// Chromium is killed after this.
const TIMEOUT: Duration = Duration::from_secs(90);

/// Where tests leave what a person may want to look at (screenshots): `target/test-artifacts`.
pub fn artifacts_dir() -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("test-artifacts");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Runs headless Chromium on `url` with `extra` flags (as root: no sandbox; nothing reaches
/// the network but the page's own requests); its stdout.
fn chromium(url: &str, extra: &[String]) -> Result<String> {
    // A fresh profile each time: no state carried between loads.
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let profile = std::env::temp_dir().join(format!(
        "wattlet-chromium-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    ));
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--virtual-time-budget={VIRTUAL_TIME_MS}"))
        .args(extra)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("chromium not found: `cargo xtask test` installs it (apt-get install chromium)")?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            let _ = fs::remove_dir_all(&profile);
            bail!("chromium did not finish loading {url} within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        std::io::Read::read_to_string(&mut stdout, &mut out)?;
    }
    let _ = fs::remove_dir_all(&profile);
    if !status.success() {
        bail!("chromium exited with {status} on {url}");
    }
    Ok(out)
}

/// The DOM after the page's scripts ran.
pub fn dump_dom(url: &str) -> Result<String> {
    let dom = chromium(url, &["--dump-dom".into()])?;
    if dom.trim().is_empty() {
        bail!("chromium dumped an empty DOM for {url}");
    }
    Ok(dom)
}

/// A screenshot of the page after its scripts ran, `width`×`height` pixels, saved to `out`.
pub fn screenshot(url: &str, out: &Path, width: u32, height: u32) -> Result<()> {
    let _ = fs::remove_file(out);
    chromium(
        url,
        &[
            format!("--screenshot={}", out.display()),
            format!("--window-size={width},{height}"),
        ],
    )?;
    let size = fs::metadata(out)
        .with_context(|| format!("chromium wrote no screenshot at {}", out.display()))?
        .len();
    if size < 10_000 {
        bail!("the screenshot {} is only {size} bytes", out.display());
    }
    Ok(())
}

/// The start tag of the element with `id`, and what follows it.
fn element<'a>(dom: &'a str, id: &str) -> Option<(&'a str, &'a str)> {
    let at = dom.find(&format!(" id=\"{id}\""))?;
    let open = dom[..at].rfind('<')?;
    let close = at + dom[at..].find('>')?;
    Some((&dom[open..=close], &dom[close + 1..]))
}

/// The value of `attr` on the element with `id`.
pub fn attr(dom: &str, id: &str, attr: &str) -> Option<String> {
    let (tag, _) = element(dom, id)?;
    attr_in(tag, attr)
}

fn attr_in(tag: &str, attr: &str) -> Option<String> {
    let key = format!(" {attr}=\"");
    let start = tag.find(&key)? + key.len();
    let len = tag[start..].find('"')?;
    Some(decode(&tag[start..start + len]))
}

/// The text of the element with `id` (tags inside it dropped).
pub fn text(dom: &str, id: &str) -> Option<String> {
    let (tag, rest) = element(dom, id)?;
    let name: String = tag[1..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    let end = rest.find(&format!("</{name}>"))?;
    Some(strip_tags(&rest[..end]))
}

/// One table row: each cell's text, and the first cell's `title`.
#[derive(Debug, Clone)]
pub struct Row {
    pub cells: Vec<String>,
    pub title: Option<String>,
}

/// The rows of the body of the table with `id`.
pub fn table_rows(dom: &str, id: &str) -> Vec<Row> {
    let Some((_, rest)) = element(dom, id) else {
        return Vec::new();
    };
    let body = rest
        .find("<tbody>")
        .map(|i| &rest[i + 7..])
        .and_then(|b| b.find("</tbody>").map(|j| &b[..j]))
        .unwrap_or("");
    body.split("<tr")
        .skip(1)
        .map(|tr| {
            let cells: Vec<&str> = tr.split("<td").skip(1).collect();
            let title = cells.first().and_then(|c| {
                let tag_end = c.find('>')?;
                attr_in(&c[..tag_end], "title")
            });
            let cells = cells
                .iter()
                .map(|c| {
                    let inner = &c[c.find('>').map_or(0, |i| i + 1)..];
                    strip_tags(&inner[..inner.find("</td>").unwrap_or(inner.len())])
                })
                .collect();
            Row { cells, title }
        })
        .collect()
}

/// Text without tags, entities decoded, whitespace collapsed.
pub fn strip_tags(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    decode(&out)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn decode(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&")
}

/// A number as shown ("16.9 W", "1.23 kJ", "4.2%", "0.08 Wh", "1,376"): its value in the base
/// unit (W, J, a share 0..=1, Wh) and half a unit of its last digit, the rounding it may hide.
pub fn shown_number(text: &str) -> Option<(f64, f64)> {
    let text = text.trim().replace(',', "");
    let text = text.as_str();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let value: f64 = num.parse().ok()?;
    let decimals = num.split_once('.').map_or(0, |(_, d)| d.len());
    let half = 0.5 * 10f64.powi(-(decimals as i32));
    let scale = match unit.trim() {
        "%" => 0.01,
        "kJ" | "kWh" => 1e3,
        "MJ" => 1e6,
        "GJ" => 1e9,
        _ => 1.0,
    };
    Some((value * scale, half * scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOM: &str = r#"<html><body><span id="w" class="x">16.9 W</span>
<div id="u" data-taken-at="12.5">updated <b>now</b></div>
<table id="t"><thead><tr><th>a</th></tr></thead><tbody><tr><td class="name" title="id1">a &amp; b<span class="tag">stopped</span></td><td class="num">1.0 W</td></tr><tr><td>c</td></tr></tbody></table>"#;

    #[test]
    fn reads_the_dom() {
        assert_eq!(text(DOM, "w").as_deref(), Some("16.9 W"));
        assert_eq!(text(DOM, "u").as_deref(), Some("updated now"));
        assert_eq!(attr(DOM, "u", "data-taken-at").as_deref(), Some("12.5"));
        let rows = table_rows(DOM, "t");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].cells, ["a & b stopped", "1.0 W"]);
        assert_eq!(rows[0].title.as_deref(), Some("id1"));
        assert_eq!(rows[1].title, None);
    }

    #[test]
    fn reads_numbers_as_shown() {
        assert_eq!(shown_number("16.9 W"), Some((16.9, 0.05)));
        let (v, half) = shown_number("1.23 kJ").unwrap();
        assert!((v - 1230.0).abs() < 1e-9 && (half - 5.0).abs() < 1e-9);
        let (v, half) = shown_number("4.2%").unwrap();
        assert!((v - 0.042).abs() < 1e-12 && (half - 0.0005).abs() < 1e-12);
        assert_eq!(shown_number("—"), None);
        assert_eq!(shown_number("522,690"), Some((522_690.0, 0.5)));
    }
}
