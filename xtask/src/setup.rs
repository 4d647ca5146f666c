//! Installs, idempotently, what building and testing need: the nightly's rust-src, bpf-linker
//! built against the nightly's own libLLVM (no system LLVM), Prometheus for end-to-end tests,
//! Helm's library for Python for the deploy tests, and Chromium for the tests that look at the
//! page and the report in a real browser.
//! When everything is in place this costs a few rustc/version invocations.

use std::{
    env, fs,
    io::IsTerminal as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::ebpf_build::run_captured;

const BPF_LINKER_VERSION: &str = "0.13.0";
pub const NIGHTLY: &str = "nightly";

pub struct Tools {
    /// Directory holding the bpf-linker binary.
    pub bpf_linker_dir: PathBuf,
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn rustc_nightly(args: &[&str]) -> Result<String> {
    output(Command::new("rustc").arg(format!("+{NIGHTLY}")).args(args))
}

/// Where tools are kept between runs: $WATTLET_TOOLS_DIR, else the user's cache dir.
fn tools_dir() -> PathBuf {
    if let Some(d) = env::var_os("WATTLET_TOOLS_DIR") {
        return PathBuf::from(d);
    }
    let cache = env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    cache.join("wattlet")
}

/// The nightly toolchain (the eBPF build and cargo-fuzz need it), installed if missing; its
/// sysroot.
pub fn ensure_nightly() -> Result<PathBuf> {
    if let Ok(s) = rustc_nightly(&["--print", "sysroot"]) {
        return Ok(PathBuf::from(s));
    }
    eprintln!("xtask: installing the nightly toolchain (the eBPF build and fuzzing need it)");
    run(Command::new("rustup").args([
        "toolchain",
        "install",
        NIGHTLY,
        "--profile",
        "minimal",
        "--component",
        "rust-src",
    ]))?;
    Ok(PathBuf::from(rustc_nightly(&["--print", "sysroot"])?))
}

pub fn ensure_build_tools() -> Result<Tools> {
    let sysroot = ensure_nightly()?;

    let core_src = sysroot.join("lib/rustlib/src/rust/library/core/Cargo.toml");
    if !core_src.exists() {
        eprintln!("xtask: installing rust-src for the nightly toolchain (build-std=core needs it)");
        run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))?;
    }

    let version = rustc_nightly(&["-vV"])?;
    let llvm_major = llvm_major(&version).ok_or_else(|| {
        anyhow!("cannot find the LLVM version in `rustc +nightly -vV`:\n{version}")
    })?;
    let home = tools_dir().join(format!("bpf-linker-{BPF_LINKER_VERSION}-llvm{llvm_major}"));
    let bin_dir = home.join("bin");
    let linker = bin_dir.join("bpf-linker");
    let works = linker.exists()
        && Command::new(&linker)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !works {
        install_bpf_linker(&sysroot, llvm_major, &home)?;
    }
    Ok(Tools {
        bpf_linker_dir: bin_dir,
    })
}

/// "LLVM version: 22.1.2" → 22.
fn llvm_major(rustc_vv: &str) -> Option<u32> {
    rustc_vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version:"))
        .and_then(|v| v.trim().split('.').next())
        .and_then(|m| m.parse().ok())
}

fn install_bpf_linker(sysroot: &Path, llvm_major: u32, home: &Path) -> Result<()> {
    // The nightly ships libLLVM as lib/libLLVM.so.<major>.<minor>-rust-<ver>; bpf-linker's build
    // looks for <prefix>/lib/libLLVM.so, and its binary keeps an rpath to <prefix>/lib.
    let lib = sysroot.join("lib");
    let libllvm = fs::read_dir(&lib)
        .with_context(|| format!("listing {}", lib.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with(&format!("libLLVM.so.{llvm_major}")))
        .ok_or_else(|| {
            anyhow!(
                "no libLLVM.so.{llvm_major}* in {}: the nightly toolchain should ship it",
                lib.display()
            )
        })?;
    let prefix = home.join("llvm");
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib)?;
    for name in ["libLLVM.so", libllvm.as_str()] {
        let link = prefix_lib.join(name);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(lib.join(&libllvm), &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    let work = env::temp_dir();
    let what = format!(
        "building bpf-linker {BPF_LINKER_VERSION} against the nightly's LLVM {llvm_major}, into {} \
         (once, a few minutes)",
        home.display()
    );
    // cargo install warns that the --root is not on PATH: expected, xtask passes the full path.
    run_quietly(
        &what,
        ShowLog::OnFailure,
        Command::new("cargo")
            .current_dir(&work)
            .env("LLVM_PREFIX", &prefix)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTUP_TOOLCHAIN")
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
                "--no-default-features",
                "--features",
            ])
            .arg(format!("llvm-{llvm_major}"))
            .arg("--root")
            .arg(home),
    )
}

/// rustfmt and clippy for the active toolchain, and clippy for the nightly (it lints the eBPF
/// crate; the nightly's minimal profile lacks it).
pub fn ensure_lint_tools() -> Result<()> {
    let runs = |cmd: &mut Command| {
        cmd.arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    for (component, tool) in [("rustfmt", "cargo-fmt"), ("clippy", "cargo-clippy")] {
        if !runs(&mut Command::new(tool)) {
            eprintln!("xtask: installing {component}");
            run(Command::new("rustup").args(["component", "add", component]))?;
        }
    }
    if !runs(Command::new("rustup").args(["run", NIGHTLY, "cargo-clippy"])) {
        eprintln!("xtask: installing clippy for the nightly toolchain (it lints the eBPF crate)");
        run(Command::new("rustup").args(["component", "add", "clippy", "--toolchain", NIGHTLY]))?;
    }
    Ok(())
}

/// What the end-to-end tests run, by binary and the Debian package that brings it: Prometheus
/// and promtool, and capsh (the least-privilege tests drop capabilities with it).
const TEST_TOOLS: [(&str, &str); 3] = [
    ("prometheus", "prometheus"),
    ("promtool", "prometheus"),
    ("capsh", "libcap2-bin"),
];

/// Installs the end-to-end tests' tools that are missing, from Debian's packages.
pub fn ensure_prometheus() -> Result<()> {
    let have = |b: &str| {
        Command::new(b)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    let mut missing: Vec<&str> = TEST_TOOLS
        .iter()
        .filter(|(bin, _)| !have(bin))
        .map(|(_, pkg)| *pkg)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    if !Path::new("/usr/bin/apt-get").exists() {
        bail!(
            "the end-to-end tests need {}: install them (Debian/Ubuntu: apt-get install {})",
            missing.join(", "),
            missing.join(" ")
        );
    }
    eprintln!(
        "xtask: installing {} (apt-get) for the end-to-end tests",
        missing.join(", ")
    );
    run(Command::new("apt-get").arg("update").arg("-q"))?;
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing))
}

/// When [`run_quietly`] shows a successful command's output.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ShowLog {
    OnFailure,
    /// Also when the compiler warned.
    OnWarning,
}

/// Runs a long, chatty command (a cargo build) behind one progress line; its whole output is
/// shown only when it fails (or warns, if asked).
pub fn run_quietly(what: &str, show: ShowLog, cmd: &mut Command) -> Result<()> {
    eprint!("xtask: {what}… ");
    let start = Instant::now();
    if std::io::stderr().is_terminal() {
        cmd.env("CARGO_TERM_COLOR", "always");
    }
    let run = match run_captured(cmd) {
        Ok(run) => run,
        Err(log) => {
            eprintln!("failed\n{log}");
            bail!("{what} failed: its output is above");
        }
    };
    if run.compiled {
        eprintln!("done in {:.0} s", start.elapsed().as_secs_f64());
    } else {
        eprintln!("up to date");
    }
    if run.warned && show == ShowLog::OnWarning {
        eprintln!("{}", run.log);
    }
    Ok(())
}

/// Helm's own library for Python (PyPI's helm-python-sdk: Helm 4's Go code behind ctypes), with
/// which the deploy tests render and lint the chart without a helm binary.
pub fn ensure_helm_python() -> Result<()> {
    let importable = || {
        Command::new("python3")
            .args(["-c", "import helm_python"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if importable() {
        return Ok(());
    }
    eprintln!("xtask: installing helm-python-sdk (pip) for the deploy tests");
    run(Command::new("python3").args(["-m", "pip", "install", "--quiet", "helm-python-sdk"]))
        .context("python3 with pip is needed to install helm-python-sdk for the deploy tests")?;
    if !importable() {
        bail!("helm-python-sdk was installed but `import helm_python` still fails");
    }
    Ok(())
}

/// Debian's Chromium, for the tests that load the page and the HTML report headless.
pub fn ensure_chromium() -> Result<()> {
    let works = Command::new("chromium")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if works {
        return Ok(());
    }
    if !Path::new("/usr/bin/apt-get").exists() {
        bail!(
            "chromium is needed by the browser tests (the page, the HTML report): install it \
             (Debian/Ubuntu: apt-get install chromium)"
        );
    }
    eprintln!("xtask: installing chromium (apt-get) for the browser tests");
    run(Command::new("apt-get").arg("update").arg("-q"))?;
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-q", "--no-install-recommends", "chromium"]))
}

/// Runs a command to completion; an error names it and its exit status.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_llvm_major() {
        let vv = "rustc 1.97.0-nightly\nhost: x86_64-unknown-linux-gnu\nLLVM version: 22.1.2\n";
        assert_eq!(llvm_major(vv), Some(22));
        assert_eq!(llvm_major("rustc 1.0"), None);
    }
}
