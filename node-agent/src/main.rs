//! `wattlet`: Wattlet's node agent.

use anyhow::Result;
use clap::{Parser, Subcommand};
use node_agent::{agent, check, config::Options};

#[derive(Parser)]
#[command(
    name = "wattlet",
    version,
    about = "eBPF node power and energy exporter"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    options: Options,
}

#[derive(Subcommand)]
enum Command {
    /// Measure and serve /metrics (the default).
    Run,
    /// Print what this node supports and what the agent will use; non-zero exit if it cannot run.
    Check,
}

fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => {
            let report = check::run_checks(&cli.options);
            print!("{}", report.render());
            if !report.can_run() {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Run => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
            .block_on(agent::run(cli.options)),
    }
}
