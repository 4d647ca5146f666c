//! Builds the eBPF programs (crate node-agent-ebpf) with the nightly toolchain and bpf-linker,
//! and leaves the object in OUT_DIR for `include_bytes_aligned!`, as aya-template does.
//! `cargo xtask` installs the toolchain pieces; AYA_BUILD_SKIP=1 skips this for host-only checks
//! (clippy, docs), leaving an empty object that the agent refuses to run with.

use std::{env, fs, path::PathBuf};

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let object = out_dir.join("node-agent");
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    println!("cargo:rerun-if-env-changed=WATTLET_BPF_LINKER_DIR");
    if skip {
        fs::write(&object, b"")?;
        println!(
            "cargo:warning=AYA_BUILD_SKIP is set: the agent is built without its eBPF programs"
        );
        return Ok(());
    }
    // bpf-linker is found on PATH; `cargo xtask` installs it in a cache dir and says where.
    if let Some(dir) = env::var_os("WATTLET_BPF_LINKER_DIR") {
        let mut paths = vec![PathBuf::from(dir)];
        paths.extend(env::split_paths(&env::var_os("PATH").unwrap_or_default()));
        // SAFETY: build scripts are single-threaded here; the child cargo inherits PATH.
        unsafe { env::set_var("PATH", env::join_paths(paths)?) };
    }
    let in_path = env::split_paths(&env::var_os("PATH").unwrap_or_default())
        .any(|d| d.join("bpf-linker").is_file());
    if !in_path {
        anyhow::bail!(
            "bpf-linker is not installed: build with `cargo xtask build` (or `cargo xtask run` / \
             `cargo xtask test`), which installs it and the nightly's rust-src, or set \
             AYA_BUILD_SKIP=1 for a host-only check"
        );
    }
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../node-agent-ebpf");
    let root = root.to_str().expect("utf-8 path").to_owned();
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "node-agent-ebpf",
            root_dir: &root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )?;
    // Also rebuild when the shared layouts change.
    println!("cargo:rerun-if-changed=../node-agent-common/src");
    Ok(())
}
