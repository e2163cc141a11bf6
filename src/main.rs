//! The `invariantd` command: parses arguments, runs the command and maps its result to an exit
//! status. Everything else, logging included (the daemon's needs its config), is the library's.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = invariantd::cli::Cli::parse();
    match invariantd::app::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
