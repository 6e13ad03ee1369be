//! `cvm compare` as a library call: run one portable guest program on every backend and print
//! what each architecture did, side by side.
//!
//! ```text
//! cargo run --example compare                     # every backend
//! cargo run --example compare -- arm-cca riscv-cove
//! ```
//!
//! A backend that is unavailable here (e.g. `kvm` without `/dev/kvm`) still gets a row saying
//! why; nothing is silently dropped.

use cvm::guest::Layout;

fn main() {
    let only: Vec<String> = std::env::args().skip(1).collect();

    // The built-in program: MMIO reads and writes of every width, a shared page, the launch
    // measurement, entropy and a host call — at the standard layout.
    let program = cvm::compare::default_program(&Layout::standard());

    // Every compiled-in backend, or the ones named on the command line.
    let mut backends = cvm::backends();
    if !only.is_empty() {
        backends.retain(|b| only.contains(&b.info().name));
    }

    // One report per backend: firmware calls, exits by kind, the MMIO round trip, the
    // measurement, time per exit.
    let reports = cvm::compare::compare_all(&backends, &program);
    print!("{}", cvm::compare::render_table(&reports));
}
