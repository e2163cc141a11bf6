//! The `invariantd` command: parses arguments, starts logging, runs the command and maps its
//! result to an exit status. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = invariantd::cli::Cli::parse();
    invariantd::telemetry::init(&cli.log_level);
    match invariantd::app::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
