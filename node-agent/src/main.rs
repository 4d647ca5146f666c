//! `wattlet`: Wattlet's node agent.

use anyhow::Result;
use node_agent::{
    agent, check,
    config::{Cli, Command},
    report,
};

fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match cli.command {
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
        Command::Report(args) => Ok(tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(report::run(args))?),
    }
}
