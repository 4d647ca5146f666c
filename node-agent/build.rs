//! Puts the agent's eBPF object (binary `node-agent` of crate node-agent-ebpf) in OUT_DIR for
//! `include_bytes_aligned!`, as aya-template does.
//!
//! - Under `cargo xtask`, WATTLET_EBPF_DIR names the objects xtask has just built (once for every
//!   profile, with a progress line): copy the agent's.
//! - Otherwise (a plain `cargo build`), build them here with the nightly toolchain and
//!   bpf-linker, quietly; when that build fails its whole output is shown.
//! - AYA_BUILD_SKIP=1 skips the eBPF build for host-only checks (clippy, docs), leaving an empty
//!   object that the agent refuses to run with.

use std::{
    env, fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

// The build recipe is shared with xtask, so that both produce the same object.
#[allow(dead_code, reason = "shared with xtask, which uses other parts")]
#[path = "../xtask/src/ebpf_build.rs"]
mod ebpf_build;

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let embedded = out_dir.join(ebpf_build::AGENT_OBJECT);
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    println!("cargo:rerun-if-env-changed=WATTLET_EBPF_DIR");
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        fs::write(&embedded, b"")?;
        println!(
            "cargo:warning=AYA_BUILD_SKIP is set: the agent is built without its eBPF programs"
        );
        return Ok(());
    }
    let built = match env::var_os("WATTLET_EBPF_DIR") {
        Some(dir) => prebuilt(Path::new(&dir))?,
        None => build_here(&out_dir)?,
    };
    fs::copy(&built, &embedded)
        .with_context(|| format!("copying {} to {}", built.display(), embedded.display()))?;
    Ok(())
}

/// The object xtask built.
fn prebuilt(dir: &Path) -> anyhow::Result<PathBuf> {
    let object = dir.join(ebpf_build::AGENT_OBJECT);
    if !object.is_file() {
        bail!(
            "WATTLET_EBPF_DIR={} holds no {}: that variable is for `cargo xtask`, which builds \
             the objects first; unset it to build them here",
            dir.display(),
            ebpf_build::AGENT_OBJECT
        );
    }
    println!("cargo:rerun-if-changed={}", object.display());
    Ok(object)
}

fn build_here(out_dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let workspace = manifest
        .parent()
        .context("node-agent lives in the workspace")?;
    // The eBPF crate is a binary the agent does not depend on, so cargo does not track it: say
    // what it is made of. (cargo scans a directory's files recursively.)
    for dir in ["node-agent-ebpf", "node-agent-common"] {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }
    // bpf-linker is found on PATH; `cargo xtask` installs it in a cache dir and says where.
    println!("cargo:rerun-if-env-changed=WATTLET_BPF_LINKER_DIR");
    let linker_dir = env::var_os("WATTLET_BPF_LINKER_DIR").map(PathBuf::from);
    let path = env::var_os("PATH").unwrap_or_default();
    let found = linker_dir
        .iter()
        .cloned()
        .chain(env::split_paths(&path))
        .any(|d| d.join("bpf-linker").is_file());
    if !found {
        bail!(
            "bpf-linker is not installed: build with `cargo xtask build` (or `cargo xtask run` / \
             `cargo xtask test`), which installs it and the nightly's rust-src, or set \
             AYA_BUILD_SKIP=1 for a host-only check"
        );
    }
    let build = ebpf_build::EbpfBuild {
        workspace: workspace.to_owned(),
        target_dir: out_dir.join("ebpf-target"),
        arch: env::var("CARGO_CFG_TARGET_ARCH")?,
        big_endian: env::var("CARGO_CFG_TARGET_ENDIAN")? == "big",
        linker_dir,
    };
    match ebpf_build::run_captured(&mut build.build_command()) {
        Ok(run) if run.warned => {
            for line in run.log.lines() {
                println!("cargo:warning={line}");
            }
        }
        Ok(_) => {}
        Err(log) => {
            // Cargo shows a failed build script's stderr in full.
            eprintln!("{log}");
            bail!("building the eBPF programs (crate node-agent-ebpf) failed: its output is above");
        }
    }
    Ok(build.object(ebpf_build::AGENT_OBJECT))
}
