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
    /// Predict a launch measurement offline: `cvm measure cca LOG.json`, `cvm measure cove
    /// LOG.json`, or `cvm measure SPEC.toml` (the measurement `cvm run SPEC.toml` reports).
    Measure {
        /// `cca` or `cove` (a measurement log follows), or a launch spec (`*.toml`).
        target: String,
        /// The measurement log (JSON), after `cca` / `cove`.
        log: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Build the VM a launch spec describes and run it; the UART is the console (stdout), a
    /// summary with exits and the measurement goes to stderr.
    Run {
        /// The launch spec (TOML; see `cvm::spec`).
        spec: PathBuf,
        /// The most exits before the run is stopped (at least 1).
        #[arg(
            long,
            default_value_t = cvm::guest::DEFAULT_EXIT_BUDGET,
            value_parser = clap::value_parser!(u64).range(1..)
        )]
        max_exits: u64,
    },
    /// Run one portable guest program on every backend and compare them side by side.
    Compare {
        /// A program as JSON (see `cvm::compare::program_from_json`); the built-in one if absent.
        program: Option<PathBuf>,
        /// Print JSON (one object per backend).
        #[arg(long)]
        json: bool,
        /// Also write a sequence diagram of one MMIO read round trip per backend (SVG).
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
        /// Only these backends (comma-separated: kvm, arm-cca, riscv-cove).
        #[arg(long, value_delimiter = ',')]
        backends: Vec<String>,
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
        Command::Measure { target, log, json } => match (target.as_str(), log) {
            ("cca" | "arm-cca", Some(log)) => {
                cvm::cca::measure_log_cli(&log, json).map_err(|e| e.to_string())
            }
            ("cove" | "riscv-cove", Some(log)) => {
                cvm::cove::measure_log_cli(&log, json).map_err(|e| e.to_string())
            }
            (spec, None) if spec.ends_with(".toml") => measure_spec(spec.as_ref(), json),
            ("cca" | "arm-cca" | "cove" | "riscv-cove", None) => Err(format!(
                "`cvm measure {target}` needs a measurement log (LOG.json)"
            )),
            (spec, Some(_)) if spec.ends_with(".toml") => {
                Err("`cvm measure SPEC.toml` takes no second argument".into())
            }
            (other, _) => Err(format!(
                "unknown measurement target {other:?}: expected `cca LOG`, `cove LOG` or SPEC.toml"
            )),
        },
        Command::Run { .. } => Err("internal: `run` is handled in main".into()),
        Command::Compare {
            program,
            json,
            svg,
            backends,
        } => compare(program, json, svg, &backends),
    }
}

fn measure_spec(path: &std::path::Path, json: bool) -> Result<String, String> {
    let launch = cvm::spec::LaunchSpec::load(path).map_err(|e| e.to_string())?;
    let m = launch.measurement().map_err(|e| e.to_string())?;
    if json {
        serde_json::to_string_pretty(&m).map_err(|e| e.to_string())
    } else {
        Ok(cvm::spec::format_measurement(&m))
    }
}

/// `cvm run`: the console streams to stdout while the guest runs, so it does not go through
/// `run`'s collected output.
fn run_spec(spec: &std::path::Path, max_exits: u64) -> ExitCode {
    let launch = match cvm::spec::LaunchSpec::load(spec) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cvm: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if launch.config.vcpus > 1 {
        eprintln!(
            "cvm: note: the spec creates {} vCPUs; `cvm run` schedules vCPU 0 only (the others are \
             created, and measured where the architecture measures them, but never run)",
            launch.config.vcpus
        );
    }
    let options = cvm::run::RunOptions { max_exits };
    match cvm::run::run(&launch, &options, std::io::stdout()) {
        Ok(summary) => {
            eprint!("{}", summary.render());
            if summary.success() {
                ExitCode::SUCCESS
            } else {
                eprintln!("cvm: error: the run ended with {}", summary.end);
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("cvm: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn compare(
    program: Option<PathBuf>,
    json: bool,
    svg: Option<PathBuf>,
    only: &[String],
) -> Result<String, String> {
    use cvm::compare;
    use cvm::guest::Layout;
    let program = match program {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            compare::program_from_json(&text)?
        }
        None => compare::default_program(&Layout::standard()),
    };
    let mut backends = cvm::backends();
    if !only.is_empty() {
        for name in only {
            if !cvm::BACKEND_NAMES.contains(&name.as_str()) {
                return Err(format!(
                    "unknown backend {name:?}; known: {}",
                    cvm::BACKEND_NAMES.join(", ")
                ));
            }
        }
        backends.retain(|b| only.contains(&b.info().name));
    }
    let reports = compare::compare_all(&backends, &program);
    if let Some(path) = svg {
        std::fs::write(&path, compare::render_svg(&reports))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if json {
        serde_json::to_string_pretty(&reports).map_err(|e| e.to_string())
    } else {
        Ok(compare::render_table(&reports))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Run { spec, max_exits } = &cli.command {
        return run_spec(spec, *max_exits);
    }
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
