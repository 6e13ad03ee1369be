//! A minimal VMM over any cvm backend, chosen by name at run time:
//!
//! ```text
//! cargo run --example vmm -- arm-cca      # or: kvm, riscv-cove
//! ```
//!
//! It walks the whole API once:
//!
//! 1. pick a backend by name ([`cvm::backend`]) and read what it offers ([`cvm::BackendInfo`]);
//! 2. create a VM of the confidentiality the backend provides (selection fails closed);
//! 3. add RAM (private where the backend has private memory);
//! 4. lower a portable guest program that prints a line on a 16550 UART, for *this VM's*
//!    platform (x86-64 on KVM here, AArch64 realm, RV64 TVM) — the same program everywhere;
//! 5. load it measured, create the boot vCPU, finalize (the launch is sealed and measured);
//! 6. run the vCPU in a loop, answering every [`VmExit`] with a [`Resume`]; the UART is a
//!    rust-vmm `vm_superio::Serial` whose output is this process's stdout.
//!
//! `cvm run SPEC.toml` (see `src/run.rs`) is the same loop driven by a launch spec.

use std::io::Write;
use std::process::ExitCode;

use cvm::guest::{lower, Layout, Program};
use cvm::{Measure, MemoryKind, MemoryRegion, Resume, VcpuInit, VmConfig, VmExit};
use vm_superio::{Serial, Trigger};

/// Guest RAM: 4 MiB at 2 GiB; the code goes at its start.
const RAM_BASE: u64 = 0x8000_0000;
const RAM_SIZE: u64 = 4 << 20;
/// The 16550's registers, at the same device address on every backend (exits carry the
/// device view: CCA's unprotected-IPA bit is already stripped).
const UART_BASE: u64 = 0x1000_0000;
/// Where portable programs report back (the lowering always reports "done" before power-off).
const DOORBELL: u64 = 0x0900_0000;

/// Our UART has no interrupt line: the guest only writes THR, so nothing needs raising.
struct NoIrq;

impl Trigger for NoIrq {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        Ok(())
    }
}

fn main() -> ExitCode {
    let name = std::env::args().nth(1).unwrap_or_else(|| "arm-cca".into());
    match vmm(&name) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vmm: {e}");
            ExitCode::FAILURE
        }
    }
}

fn vmm(name: &str) -> Result<(), Box<dyn std::error::Error>> {
    // 1. The backend. `cvm::backend` refuses unknown or unavailable ones with a typed error.
    let backend = cvm::backend(name)?;
    let info = backend.info();
    eprintln!(
        "vmm: {} ({:?} on {:?}, {:?})",
        info.name, info.confidentiality, info.arch, info.implementation
    );

    // 2. The VM. Asking for `info.confidentiality` gets a realm from arm-cca, a TVM from
    //    riscv-cove and a plain VM from kvm.
    let vm = backend.create_vm(&VmConfig::new(info.confidentiality))?;

    // 3. RAM. Private memory is guest_memfd-style: the VMM never gets a pointer to it.
    let kind = if info.private_memory {
        MemoryKind::Private
    } else {
        MemoryKind::Shared
    };
    vm.add_memory(MemoryRegion {
        kind,
        ..MemoryRegion::private(RAM_BASE, RAM_SIZE)
    })?;

    // 4. The guest: one MMIO byte store to the UART's THR (offset 0) per character, then
    //    power off. Lowering asks the VM's platform for everything architecture-specific
    //    (CCA's unprotected alias for the UART, CoVE's COVG_ADD_MMIO_REGION prologue for the
    //    device ranges listed in the layout, the power-off call).
    let mut program = Program::new();
    for byte in format!("hello from {} (vmm example)\n", info.name).bytes() {
        program.mmio_write(UART_BASE, 1, u64::from(byte));
    }
    program.system_off();
    let layout = Layout {
        code: RAM_BASE,
        data: RAM_BASE + 0x10_0000,
        doorbell: DOORBELL,
        devices: vec![(UART_BASE, 0x1000)],
    };
    let image = lower(&program, vm.guest_platform().as_ref(), &layout)?;

    // 5. Load (measured), create the boot vCPU at the entry, seal the launch.
    vm.load(image.entry, &image.code, Measure::Yes)?;
    let mut vcpu = vm.create_vcpu(VcpuInit::boot(image.entry, &[]))?;
    vm.finalize()?;
    let measurement = vm.measurement()?;

    // 6. The run loop. `run(resume)` first answers the previous exit, then enters the guest.
    let mut uart = Serial::new(NoIrq, std::io::stdout());
    let mut resume = Resume::Done; // nothing to answer before the first entry
    let mut exits = 0u64;
    loop {
        let exit = vcpu.run(resume)?;
        exits += 1;
        if exits > 10_000 {
            return Err("exit budget spent: the guest did not power off".into());
        }
        resume = match exit {
            // A store to the UART: hand the byte to the 16550 model (THR → stdout).
            VmExit::Mmio {
                gpa,
                write: Some(value),
                ..
            } if (UART_BASE..UART_BASE + 8).contains(&gpa) => {
                uart.write((gpa - UART_BASE) as u8, value as u8)
                    .map_err(|e| format!("uart: {e:?}"))?;
                Resume::Done
            }
            // A load from the UART (e.g. LSR polling): the register value goes back to the
            // guest's destination register.
            VmExit::Mmio {
                gpa, write: None, ..
            } if (UART_BASE..UART_BASE + 8).contains(&gpa) => {
                Resume::MmioRead(u64::from(uart.read((gpa - UART_BASE) as u8)))
            }
            // The program's doorbell ("done" before power-off): acknowledge.
            VmExit::Mmio {
                gpa,
                write: Some(_),
                ..
            } if (DOORBELL..DOORBELL + 0x1000).contains(&gpa) => Resume::Done,
            // Nothing else is emulated: the guest gets an external abort / access fault
            // (x86 KVM cannot inject one and refuses this resume with a typed error).
            VmExit::Mmio { .. } => Resume::InjectAbort,
            // The guest shares or unshares memory: accept.
            VmExit::ConvertMemory { .. } => Resume::Conversion(true),
            // Host calls: no services here; answer "not supported" (-1).
            VmExit::HostCall { .. } => Resume::HostCall([u64::MAX, 0]),
            // Forwarded system registers (e.g. the RISC-V seed CSR): read as zero.
            VmExit::SysReg { .. } => Resume::SysReg(0),
            // x86 port I/O: reads float high, writes are ignored.
            VmExit::Pio { write: None, .. } => Resume::PioRead(u32::MAX),
            VmExit::Pio { .. } => Resume::Done,
            // Idle or interrupted by the host: just resume.
            VmExit::Halt | VmExit::Interrupted => Resume::Done,
            // The guest is done (the VM is now Off).
            VmExit::SystemOff => break,
            VmExit::Reset => return Err("the guest asked for a reset".into()),
            VmExit::Fault { pc, reason, .. } => {
                return Err(format!("guest fault at {pc:#x}: {reason}").into())
            }
        };
    }
    std::io::stdout().flush()?;
    eprintln!("vmm: system off after {exits} exits");
    for r in &measurement.registers {
        eprintln!("vmm: {} {}", r.name, hex(&r.value));
    }
    vm.destroy()?;
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
