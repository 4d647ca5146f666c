//! How the eBPF objects are built: one nested nightly cargo over node-agent-ebpf's binaries (each
//! binary is one object) for the bpf target, with `-Z build-std=core` and bpf-linker, as
//! aya-build 0.2.0 does. Its output is captured rather than forwarded line by line: the caller
//! shows it only when the build fails or warns.
//!
//! Shared by xtask (which builds the objects once, with a progress line, for every profile) and
//! node-agent/build.rs (which includes this file by path, for a plain `cargo build`), so that the
//! two builds cannot drift apart. std only, for that reason.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

/// The object the agent embeds and loads (binary `node-agent` of node-agent-ebpf).
pub const AGENT_OBJECT: &str = "node-agent";
/// The object `cargo xtask bench` loads: the agent's program plus reference programs.
pub const BENCH_OBJECT: &str = "node-agent-bench";

/// One build of the eBPF crate.
pub struct EbpfBuild {
    /// The workspace root (holds node-agent-ebpf).
    pub workspace: PathBuf,
    /// Cargo's target directory for the nested build, kept apart from the outer build's.
    pub target_dir: PathBuf,
    /// The architecture the programs will run on (`bpf_target_arch`, for aya-ebpf).
    pub arch: String,
    pub big_endian: bool,
    /// Prepended to PATH so that the nested cargo finds bpf-linker.
    pub linker_dir: Option<PathBuf>,
}

impl EbpfBuild {
    fn triple(&self) -> &'static str {
        if self.big_endian {
            "bpfeb-unknown-none"
        } else {
            "bpfel-unknown-none"
        }
    }

    /// Where the built objects land, one file per binary.
    pub fn objects_dir(&self) -> PathBuf {
        self.target_dir.join(self.triple()).join("release")
    }

    /// `cargo <subcommand>` on the eBPF crate with the nightly toolchain, for its own target.
    pub fn cargo(&self, subcommand: &str) -> Command {
        // `rustup run` rather than `cargo +nightly`: under a build script or `cargo run`, `cargo`
        // and RUSTUP_TOOLCHAIN name the outer (stable) toolchain.
        let mut cmd = Command::new("rustup");
        cmd.args(["run", "nightly", "cargo", subcommand])
            .args(["--package", "node-agent-ebpf", "--target", self.triple()])
            .args(["-Z", "build-std=core"])
            .arg("--target-dir")
            .arg(&self.target_dir)
            .current_dir(&self.workspace);
        // The same flags as aya-build: the target arch for aya-ebpf, BTF for the loader.
        let flags = [
            format!("--cfg=bpf_target_arch=\"{}\"", self.arch),
            "-Cdebuginfo=2".to_owned(),
            "-Clink-arg=--btf".to_owned(),
        ];
        cmd.env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f"));
        // The outer cargo's compiler and wrappers are the stable toolchain's.
        for key in ["RUSTC", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER"] {
            cmd.env_remove(key);
        }
        if let Some(dir) = &self.linker_dir {
            let path = std::env::var_os("PATH").unwrap_or_default();
            let dirs = std::iter::once(dir.clone()).chain(std::env::split_paths(&path));
            if let Ok(path) = std::env::join_paths(dirs) {
                cmd.env("PATH", path);
            }
        }
        cmd
    }

    /// The release build of every object.
    pub fn build_command(&self) -> Command {
        let mut cmd = self.cargo("build");
        cmd.args(["--bins", "--release"]);
        cmd
    }

    /// The path of one built object, by binary name.
    pub fn object(&self, name: &str) -> PathBuf {
        self.objects_dir().join(name)
    }
}

/// What a captured run printed (stderr then stdout).
pub struct Captured {
    pub log: String,
    /// Something was compiled (not only an up-to-date check).
    pub compiled: bool,
    /// The compiler warned: worth showing the log although the build succeeded.
    pub warned: bool,
}

/// Runs `cmd` with its output captured. Err carries the whole log, for the caller to show.
pub fn run_captured(cmd: &mut Command) -> Result<Captured, String> {
    let shown = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot start `{shown}`: {e}"))?;
    let mut log = String::from_utf8_lossy(&out.stderr).into_owned();
    log.push_str(&String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        return Err(format!("`{shown}` failed ({}):\n{log}", out.status));
    }
    // `contains`, not `starts_with`: the log may be coloured.
    let has = |word: &str| log.lines().any(|l| l.contains(word));
    Ok(Captured {
        compiled: has("Compiling"),
        warned: has("warning"),
        log,
    })
}

/// The command line, without the environment that `{cmd:?}` would also print.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}
