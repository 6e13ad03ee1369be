//! The `cvm` command line: `info`, `measure`, `compare`, `run`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// One API for confidential VMs on Arm CCA, RISC-V CoVE and plain KVM.
#[derive(Parser)]
#[command(name = "cvm", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every compiled-in backend and what it reports on this host.
    Info {
        /// Print JSON (one entry per backend).
        #[arg(long)]
        json: bool,
    },
    /// Predict a launch measurement offline: `cvm measure cca LOG.json`, `cvm measure cove LOG.json`.
    Measure {
        /// `cca` or `cove` (a measurement log follows).
        target: String,
        /// The measurement log (JSON).
        log: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn run(cli: Cli) -> Result<String, String> {
    match cli.command {
        Command::Info { json } => {
            let infos = cvm::info::collect();
            if json {
                serde_json::to_string_pretty(&infos).map_err(|e| e.to_string())
            } else {
                Ok(cvm::info::render_table(&infos))
            }
        }
        Command::Measure { target, log, json } => match target.as_str() {
            "cca" | "arm-cca" => cvm::cca::measure_log_cli(&log, json).map_err(|e| e.to_string()),
            "cove" | "riscv-cove" => {
                cvm::cove::measure_log_cli(&log, json).map_err(|e| e.to_string())
            }
            other => Err(format!(
                "unknown measurement target {other:?}: expected `cca` or `cove`"
            )),
        },
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(out) => {
            print!("{out}");
            if !out.ends_with('\n') {
                println!();
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cvm: error: {e}");
            ExitCode::FAILURE
        }
    }
}
