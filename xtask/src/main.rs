//! `cargo xtask`: the commands (`setup`, `build`, `run`, `test`, `bench`, `lint`, `fuzz`) and
//! their helpers. Every command but `fuzz` first makes sure the toolchain pieces the eBPF build
//! needs are installed, idempotently, then builds the eBPF objects once (a progress line, not the
//! nested build's output) and hands them to every cargo invocation through WATTLET_EBPF_DIR.

#[allow(
    dead_code,
    reason = "shared with node-agent/build.rs, which uses other parts"
)]
mod ebpf_build;
mod fuzz;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};

use ebpf_build::{BENCH_OBJECT, EbpfBuild};

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
    /// cargo fmt --check; clippy (warnings are errors) on the userspace crates, and on the eBPF
    /// crate for its own target.
    Lint,
    /// Run libFuzzer (cargo-fuzz, nightly) on each fuzz target for a bounded time; a crash fails.
    Fuzz {
        /// Only this target (default: every one).
        target: Option<String>,
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        time: u64,
    },
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
            build_agent(&Prepared::new(&root)?)?;
        }
        Cmd::Run { args } => run_agent(&Prepared::new(&root)?, args)?,
        Cmd::Test { filter } => {
            let prepared = Prepared::new(&root)?;
            setup::ensure_prometheus()?;
            setup::ensure_helm_python()?;
            setup::ensure_chromium()?;
            test(&prepared, filter.as_deref())?;
        }
        Cmd::Bench => {
            let prepared = Prepared::new(&root)?;
            let bin = build_agent(&prepared)?;
            require_root("the benchmarks", "sudo -E cargo xtask bench")?;
            let mut b = prepared.cargo();
            b.args(["run", "--quiet", "--release", "-p", "integration-tests"])
                .args(["--bin", "wattlet-bench"])
                .env("WATTLET_BIN", &bin)
                .env("WATTLET_BENCH_OBJECT", prepared.ebpf.object(BENCH_OBJECT));
            setup::run(&mut b)?;
        }
        Cmd::Lint => lint(&root)?,
        Cmd::Fuzz { target, time } => fuzz::fuzz(&root, target.as_deref(), time)?,
    }
    Ok(())
}

/// The toolchain pieces in place and the eBPF objects built: what every cargo command here needs.
struct Prepared {
    root: PathBuf,
    ebpf: EbpfBuild,
}

impl Prepared {
    fn new(root: &Path) -> Result<Self> {
        let tools = setup::ensure_build_tools()?;
        let ebpf = EbpfBuild {
            workspace: root.to_owned(),
            target_dir: target_dir(root).join("ebpf"),
            arch: std::env::consts::ARCH.to_owned(),
            big_endian: cfg!(target_endian = "big"),
            linker_dir: Some(tools.bpf_linker_dir),
        };
        build_ebpf(&ebpf)?;
        Ok(Self {
            root: root.to_owned(),
            ebpf,
        })
    }

    /// A cargo command in the workspace whose node-agent build embeds the objects just built
    /// (node-agent/build.rs reads WATTLET_EBPF_DIR).
    fn cargo(&self) -> Command {
        let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        c.current_dir(&self.root)
            .env("WATTLET_EBPF_DIR", self.ebpf.objects_dir());
        c
    }
}

/// Builds every eBPF object behind one progress line.
fn build_ebpf(ebpf: &EbpfBuild) -> Result<()> {
    setup::run_quietly(
        "building the eBPF programs (nightly toolchain, bpf target)",
        setup::ShowLog::OnWarning,
        &mut ebpf.build_command(),
    )
}

fn build_agent(prepared: &Prepared) -> Result<PathBuf> {
    eprintln!("xtask: building wattlet (release, eBPF programs embedded)");
    setup::run(
        prepared
            .cargo()
            .args(["build", "--release", "-p", "node-agent"]),
    )?;
    Ok(target_dir(&prepared.root).join("release/wattlet"))
}

fn run_agent(prepared: &Prepared, args: Vec<String>) -> Result<()> {
    let bin = build_agent(prepared)?;
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
    Ok(())
}

fn test(prepared: &Prepared, filter: Option<&str>) -> Result<()> {
    let bin = build_agent(prepared)?;
    eprintln!("xtask: unit tests");
    let mut unit = prepared.cargo();
    unit.args(["test", "--workspace"]).args([
        "--exclude",
        "integration-tests",
        "--exclude",
        "node-agent-ebpf",
    ]);
    unit.args(filter);
    setup::run(&mut unit)?;
    require_root(
        "the eBPF tests (real programs in real cgroups)",
        "sudo -E cargo xtask test",
    )?;
    eprintln!("xtask: eBPF and end-to-end tests (serial: they measure CPU time)");
    let mut it = prepared.cargo();
    // Every test binary runs even after one fails, so that one run shows every failure.
    it.args([
        "test",
        "--release",
        "--no-fail-fast",
        "-p",
        "integration-tests",
        "--",
    ])
    .args(["--test-threads=1", "--nocapture"])
    .args(filter)
    .env("WATTLET_BIN", &bin);
    setup::run(&mut it)
}

/// Formatting, then clippy with warnings as errors: the userspace crates together, the eBPF
/// crate alone for its own target (built with them, feature unification would pull std in).
fn lint(root: &Path) -> Result<()> {
    setup::ensure_lint_tools()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    setup::run(
        Command::new(&cargo)
            .args(["fmt", "--all", "--check"])
            .current_dir(root),
    )?;
    let prepared = Prepared::new(root)?;
    eprintln!("xtask: clippy, userspace crates");
    setup::run(prepared.cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        "node-agent-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    eprintln!("xtask: clippy, eBPF crate (nightly, bpf target)");
    setup::run(
        prepared
            .ebpf
            .cargo("clippy")
            .args(["--lib", "--bins", "--", "-D", "warnings"]),
    )
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
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
