//! `cargo xtask fuzz [TARGET] [--time SECS]`: real libFuzzer (cargo-fuzz, nightly,
//! AddressSanitizer) on each fuzz target for a bounded time, from its seed corpus
//! (`fuzz/corpus/<target>`, only read) and its dictionary (`fuzz/dicts/<target>.dict`), into a
//! working corpus under `target/fuzz-corpus/<target>` that carries over from run to run. Prints
//! per target the runs, the executions per second, the new corpus entries and any crash with its
//! reproducer; a crash fails the command. (`cargo xtask test` runs the cheap smoke of the same
//! targets.)

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::setup::{self, NIGHTLY, ShowLog};

/// What one target's run did.
struct Report {
    target: String,
    runs: u64,
    exec_per_sec: u64,
    new_units: u64,
    /// The reproducer libFuzzer wrote, if the target crashed (or failed otherwise: its log).
    failure: Option<String>,
}

pub fn fuzz(root: &Path, only: Option<&str>, secs: u64) -> Result<()> {
    setup::ensure_nightly()?;
    ensure_cargo_fuzz()?;
    let targets = targets(root, only)?;
    setup::run_quietly(
        "building the fuzz targets (nightly, AddressSanitizer)",
        ShowLog::OnFailure,
        cargo_fuzz(root).arg("build").args(only),
    )?;
    let mut reports = Vec::new();
    for t in &targets {
        eprintln!("xtask: fuzzing {t} for {secs} s");
        reports.push(run_target(root, t, secs)?);
    }
    print_reports(&reports, secs);
    let failed: Vec<&str> = (reports.iter())
        .filter(|r| r.failure.is_some())
        .map(|r| r.target.as_str())
        .collect();
    if !failed.is_empty() {
        bail!(
            "fuzz target(s) {} failed: reproduce with `cd fuzz && AYA_BUILD_SKIP=1 cargo \
             +nightly fuzz run <target> <reproducer>`, fix the parser and add the input as a \
             regression test",
            failed.join(", ")
        );
    }
    Ok(())
}

/// `cargo +nightly fuzz` in the workspace: node-agent's build script skips the eBPF build
/// (the parsers need no eBPF object).
fn cargo_fuzz(root: &Path) -> Command {
    let mut c = Command::new("cargo");
    c.arg(format!("+{NIGHTLY}"))
        .arg("fuzz")
        .current_dir(root.join("fuzz"))
        .env("AYA_BUILD_SKIP", "1")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO_TARGET_DIR");
    c
}

fn ensure_cargo_fuzz() -> Result<()> {
    let works = Command::new("cargo")
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if works {
        return Ok(());
    }
    setup::run_quietly(
        "installing cargo-fuzz (cargo install cargo-fuzz --locked, once)",
        ShowLog::OnFailure,
        Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]),
    )
}

/// The targets cargo-fuzz knows (`cargo fuzz list`), or the one asked for.
fn targets(root: &Path, only: Option<&str>) -> Result<Vec<String>> {
    let out = cargo_fuzz(root)
        .arg("list")
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo fuzz list")?;
    if !out.status.success() {
        bail!("cargo fuzz list failed ({})", out.status);
    }
    let all: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    match only {
        None => Ok(all),
        Some(t) if all.iter().any(|a| a == t) => Ok(vec![t.to_owned()]),
        Some(t) => bail!("no fuzz target {t:?}: the targets are {}", all.join(", ")),
    }
}

/// One target for `secs` seconds; its whole log is kept in `target/fuzz-logs/<target>.log`.
fn run_target(root: &Path, target: &str, secs: u64) -> Result<Report> {
    let fuzz = root.join("fuzz");
    let work = root.join("target/fuzz-corpus").join(target);
    let logs = root.join("target/fuzz-logs");
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    fs::create_dir_all(&logs)?;
    let mut cmd = cargo_fuzz(root);
    // New entries go to the first directory; the seeds are only read.
    cmd.args(["run", target])
        .arg(&work)
        .arg(fuzz.join("corpus").join(target))
        .arg("--")
        .arg(format!("-max_total_time={secs}"))
        .arg("-print_final_stats=1");
    let dict = fuzz.join("dicts").join(format!("{target}.dict"));
    if dict.exists() {
        cmd.arg(format!("-dict={}", dict.display()));
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running cargo fuzz run {target}"))?;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let log_path = logs.join(format!("{target}.log"));
    fs::write(&log_path, &log).with_context(|| format!("writing {}", log_path.display()))?;
    let mut report = parse_log(target, &log);
    if !out.status.success() && report.failure.is_none() {
        report.failure = Some(format!(
            "exited with {}, see {}",
            out.status,
            log_path.display()
        ));
    }
    if report.failure.is_some() {
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        eprintln!("{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
    }
    Ok(report)
}

/// The figures of a libFuzzer log: the final stats (`-print_final_stats=1`), else the last
/// status line (a crash ends the run before the stats), and the reproducer of a crash.
fn parse_log(target: &str, log: &str) -> Report {
    let stat = |key: &str| {
        log.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
    };
    let status = log.lines().rev().find(|l| l.starts_with('#'));
    let field = |name: &str| -> Option<u64> {
        let rest = status?.split_once(name)?.1;
        rest.split_whitespace().next()?.parse().ok()
    };
    let runs = status.and_then(|l| l[1..].split_whitespace().next()?.parse().ok());
    let failure = log
        .lines()
        .find_map(|l| l.split_once("Test unit written to "))
        .map(|(_, path)| path.trim().to_owned());
    Report {
        target: target.to_owned(),
        runs: stat("stat::number_of_executed_units:")
            .or(runs)
            .unwrap_or(0),
        exec_per_sec: stat("stat::average_exec_per_sec:")
            .or_else(|| field("exec/s:"))
            .unwrap_or(0),
        new_units: stat("stat::new_units_added:").unwrap_or(0),
        failure,
    }
}

fn print_reports(reports: &[Report], secs: u64) {
    println!("\nfuzzing, {secs} s per target (cargo +{NIGHTLY} fuzz run, AddressSanitizer):");
    println!(
        "{:<18} {:>12} {:>9} {:>12}  result",
        "target", "runs", "exec/s", "new entries"
    );
    for r in reports {
        let result = match &r.failure {
            None => "ok".to_owned(),
            Some(f) => format!("FAILED: {f}"),
        };
        println!(
            "{:<18} {:>12} {:>9} {:>12}  {result}",
            r.target, r.runs, r.exec_per_sec, r.new_units
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_final_stats() {
        let log = "INFO: Seed: 1\n#2\tINITED cov: 10 ft: 11 corp: 5/1b exec/s: 0 rss: 30Mb\n\
                   #4096\tpulse  cov: 10 ft: 11 corp: 6/2b lim: 43 exec/s: 2048 rss: 31Mb\n\
                   Done 8000 runs in 3 second(s)\nstat::number_of_executed_units: 8000\n\
                   stat::average_exec_per_sec:     2666\nstat::new_units_added:          7\n";
        let r = parse_log("t", log);
        assert_eq!((r.runs, r.exec_per_sec, r.new_units), (8000, 2666, 7));
        assert!(r.failure.is_none());
    }

    #[test]
    fn a_crash_names_its_reproducer() {
        let log = "#1024\tpulse  cov: 10 ft: 11 corp: 6/2b exec/s: 512 rss: 31Mb\n\
                   ==1== ERROR: libFuzzer: deadly signal\n\
                   artifact_prefix='/w/fuzz/artifacts/t/'; Test unit written to \
                   /w/fuzz/artifacts/t/crash-abc\n";
        let r = parse_log("t", log);
        assert_eq!((r.runs, r.exec_per_sec), (1024, 512));
        assert_eq!(r.failure.as_deref(), Some("/w/fuzz/artifacts/t/crash-abc"));
    }
}
