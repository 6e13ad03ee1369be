//! Predicting a launch measurement offline, as a verifier would: no VM, no KVM, no model.
//!
//! ```text
//! cargo run --example measure                                   # the three sample specs
//! cargo run --example measure -- examples/specs/hello-cca.toml  # one launch spec
//! cargo run --example measure -- cca LOG.json                   # a CCA measurement log
//! cargo run --example measure -- cove LOG.json                  # a CoVE measurement log
//! ```
//!
//! A launch spec is turned into the [`cvm::MeasurementLog`] its backend records when the VM
//! is built (`Launch::measurement_log`), which the backend's pure measurer replays — the same
//! code the firmware model runs, so the prediction equals what `cvm run` reports.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cvm::spec::{format_measurement, LaunchSpec};
use cvm::MeasurementLog;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [] => {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/specs");
            ["hello-kvm.toml", "hello-cca.toml", "hello-cove.toml"]
                .iter()
                .try_for_each(|f| predict_spec(&dir.join(f)))
        }
        [spec] => predict_spec(Path::new(spec)),
        [arch, log] => predict_log(arch, &PathBuf::from(log)),
        _ => Err("usage: measure [SPEC.toml | cca LOG.json | cove LOG.json]".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("measure: {e}");
            ExitCode::FAILURE
        }
    }
}

fn predict_spec(path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    // Parse and validate the spec (images are read relative to it).
    let launch = LaunchSpec::load(path)?;
    // The events the backend will log, in the order its host flow issues them ...
    let log = launch.measurement_log()?;
    // ... and the registers they produce.
    let m = launch.measurement()?;
    println!(
        "{} ({}, {} events, {}):",
        path.display(),
        launch.backend.name(),
        log.events.len(),
        m.algorithm.name()
    );
    print!("{}", format_measurement(&m));
    Ok(())
}

fn predict_log(arch: &str, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    // `from_path` inlines `file` contents relative to the log.
    let log = MeasurementLog::from_path(path)?;
    match arch {
        "cca" | "arm-cca" => {
            let m = cvm::cca::replay(&log)?;
            print!("{}", format_measurement(&m.to_measurement()));
        }
        "cove" | "riscv-cove" => {
            let m = cvm::cove::replay(&log)?;
            print!("{}", format_measurement(&m.to_measurement()));
        }
        other => return Err(format!("unknown architecture {other:?}: cca or cove").into()),
    }
    Ok(())
}
