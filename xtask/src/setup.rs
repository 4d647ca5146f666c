//! Installs, idempotently, what building and testing need: the nightly's rust-src, bpf-linker
//! built against the nightly's own libLLVM (no system LLVM), and Prometheus for end-to-end tests.
//! When everything is in place this costs a few rustc/version invocations.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, anyhow, bail};

const BPF_LINKER_VERSION: &str = "0.13.0";
const NIGHTLY: &str = "nightly";

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

pub fn ensure_build_tools() -> Result<Tools> {
    let sysroot = match rustc_nightly(&["--print", "sysroot"]) {
        Ok(s) => PathBuf::from(s),
        Err(_) => {
            eprintln!("xtask: installing the nightly toolchain (the eBPF build needs it)");
            run(Command::new("rustup").args([
                "toolchain",
                "install",
                NIGHTLY,
                "--profile",
                "minimal",
                "--component",
                "rust-src",
            ]))?;
            PathBuf::from(rustc_nightly(&["--print", "sysroot"])?)
        }
    };

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
    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against the nightly's LLVM {llvm_major} \
         into {} (about a minute, once)",
        home.display()
    );
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
    run(Command::new("cargo")
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
        .arg(home))
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
