//! `bitsgw`: the appliance's command line.

mod check;
mod config;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// bitsgw: a bump-in-the-stack IPsec gateway with a Dual-Stack Mobile IPv6
/// tunnel stage.
#[derive(Debug, Parser)]
#[command(name = "bitsgw", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate an appliance configuration or a policy file and print the
    /// resolved ports, SPD and SAD (keys masked).
    Check {
        /// The appliance configuration or policy file (JSON).
        file: PathBuf,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { file, json } => match check::run(&file, json) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("bitsgw check: {e}");
                ExitCode::from(2)
            }
        },
    }
}
