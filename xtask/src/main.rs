//! `cargo xtask`: the two commands (`run`, `test`) and their helpers. Every command first makes
//! sure the toolchain pieces the eBPF build needs are installed, idempotently, and says so.

mod setup;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the build needs (nightly rust-src, bpf-linker), if missing.
    Setup,
    /// Build the agent (with its embedded eBPF programs), release profile.
    Build,
    /// Build and run the agent on this machine (needs root); arguments after `--` go to wattlet.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every test, the privileged eBPF tests included (needs root).
    Test {
        /// Only tests whose name contains this.
        filter: Option<String>,
    },
    /// Run the benchmarks and print their figures (needs root).
    Bench,
    /// cargo fmt --check and clippy on the userspace crates.
    Lint,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let root = workspace_root();
    match cli.command {
        Cmd::Setup => {
            setup::ensure_build_tools()?;
        }
        Cmd::Build => {
            let tools = setup::ensure_build_tools()?;
            build_agent(&root, &tools)?;
        }
        Cmd::Run { args } => {
            let tools = setup::ensure_build_tools()?;
            let bin = build_agent(&root, &tools)?;
            require_root("cargo xtask run", "sudo -E cargo xtask run")?;
            let args = if args.is_empty() {
                vec!["run".to_owned()]
            } else {
                args
            };
            eprintln!("xtask: running {} {}", bin.display(), args.join(" "));
            let status = Command::new(&bin).args(&args).status()?;
            if !status.success() {
                bail!("wattlet exited with {status}");
            }
        }
        Cmd::Test { filter } => {
            let tools = setup::ensure_build_tools()?;
            setup::ensure_prometheus()?;
            setup::ensure_chromium()?;
            let bin = build_agent(&root, &tools)?;
            eprintln!("xtask: unit tests");
            let mut unit = cargo(&tools);
            unit.args([
                "test",
                "--workspace",
                "--exclude",
                "integration-tests",
                "--exclude",
                "node-agent-ebpf",
            ]);
            if let Some(f) = &filter {
                unit.arg(f);
            }
            setup::run(unit.current_dir(&root))?;
            require_root(
                "the eBPF tests (real programs in real cgroups)",
                "sudo -E cargo xtask test",
            )?;
            eprintln!("xtask: eBPF and end-to-end tests (serial: they measure CPU time)");
            let mut it = cargo(&tools);
            it.args(["test", "--release", "-p", "integration-tests", "--"])
                .args(["--test-threads=1", "--nocapture"]);
            if let Some(f) = &filter {
                it.arg(f);
            }
            setup::run(it.current_dir(&root).env("WATTLET_BIN", &bin))?;
        }
        Cmd::Bench => {
            let tools = setup::ensure_build_tools()?;
            let bin = build_agent(&root, &tools)?;
            require_root("the benchmarks", "sudo -E cargo xtask bench")?;
            let mut b = cargo(&tools);
            b.args([
                "run",
                "--quiet",
                "--release",
                "-p",
                "integration-tests",
                "--bin",
                "wattlet-bench",
            ]);
            setup::run(b.current_dir(&root).env("WATTLET_BIN", &bin))?;
        }
        Cmd::Lint => {
            let tools = setup::ensure_build_tools()?;
            setup::run(
                cargo(&tools)
                    .args(["fmt", "--all", "--check"])
                    .current_dir(&root),
            )?;
            setup::run(
                cargo(&tools)
                    .args([
                        "clippy",
                        "--workspace",
                        "--exclude",
                        "node-agent-ebpf",
                        "--all-targets",
                        "--",
                        "-D",
                        "warnings",
                    ])
                    .current_dir(&root),
            )?;
        }
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// A cargo command that finds bpf-linker (through node-agent's build.rs).
fn cargo(tools: &setup::Tools) -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.env("WATTLET_BPF_LINKER_DIR", &tools.bpf_linker_dir);
    c
}

fn build_agent(root: &Path, tools: &setup::Tools) -> Result<PathBuf> {
    eprintln!("xtask: building wattlet (release, eBPF programs embedded)");
    setup::run(
        cargo(tools)
            .args(["build", "--release", "-p", "node-agent"])
            .current_dir(root),
    )?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(target.join("release/wattlet"))
}

fn require_root(what: &str, how: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        bail!(
            "{what} need root to load eBPF programs and create cgroups: run `{how}` \
             (-E keeps your rustup and cargo environment)"
        );
    }
    Ok(())
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
