//! What stops a vCPU ([`VmExit`]) and how the VMM answers it ([`Resume`]).
//!
//! `run(resume)` first states how the previous exit was answered, then enters the guest. This is
//! where the three architectures' register-transfer channels meet (see DESIGN.md):
//!
//! | exit | resume | CCA | CoVE | KVM |
//! |---|---|---|---|---|
//! | `Mmio { write: Some(v) }` | `Done` / `InjectAbort` | v = RecExit.gprs\[0\] | v = NACL scratch a0 | kvm_run.mmio.data |
//! | `Mmio { write: None }` | `MmioRead(v)` / `InjectAbort` | RecEntry.gprs\[0\] + EMULATED_MMIO | NACL scratch a0 | kvm_run.mmio.data |
//! | `ConvertMemory` | `Conversion(accept)` | RIPAS_CHANGE / RIPAS_RESPONSE | COVG SHARE/UNSHARE | MEMORY_FAULT / MAP_GPA_RANGE |
//! | `HostCall` | `HostCall(ret)` | RSI_HOST_CALL | forwarded SBI ecall | hypercall |
//! | `SysReg` | `SysReg(v)` / `InjectAbort` | trapped sysreg | SEED CSR | KVM_EXIT_RISCV_CSR |
//! | `Pio` (x86) | `Done` / `PioRead(v)` | — | — | kvm_run.io |
//! | `Halt`, `SystemOff`, `Reset`, `Fault`, `Interrupted` | `Done` | PSCI / SERROR | SRST / fatal | HLT / SYSTEM_EVENT |
//!
//! [`validate_resume`] is the single check every backend relies on: a resume that does not
//! answer the pending exit is [`Error::ResumeMismatch`] and the guest is not entered.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Why a vCPU stopped. Addresses are the device view (CCA's unprotected-IPA bit stripped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmExit {
    /// A guest access to an address no memory backs: the VMM emulates the device.
    Mmio {
        /// Guest-physical address (device view).
        gpa: u64,
        /// Access width in bytes: 1, 2, 4 or 8.
        size: u8,
        /// `Some(value)` for a store (already masked to `size`), `None` for a load.
        write: Option<u64>,
    },
    /// x86 port I/O.
    Pio {
        /// The port.
        port: u16,
        /// Width in bytes: 1, 2 or 4.
        size: u8,
        /// `Some(value)` for `out`, `None` for `in`.
        write: Option<u32>,
    },
    /// The guest asks to convert a range between private and shared.
    ConvertMemory {
        /// Start (4 KiB aligned).
        gpa: u64,
        /// Length in bytes.
        size: u64,
        /// `true`: shared → private; `false`: private → shared.
        to_private: bool,
    },
    /// A call from the guest to the VMM (RSI_HOST_CALL, forwarded SBI ecall, hypercall).
    HostCall {
        /// Call number (CCA immediate, SBI extension/function, hypercall number).
        nr: u64,
        /// Arguments as the guest passed them.
        args: [u64; 6],
    },
    /// A system-register / CSR access the firmware forwards to the VMM.
    SysReg {
        /// Register id (AArch64 MRS encoding; RISC-V CSR number).
        reg: u64,
        /// `Some(value)` for a write (RISC-V: the new value, under `write_mask`), `None` for a pure read.
        write: Option<u64>,
        /// RISC-V read-modify-write mask; all ones for plain writes, 0 for reads.
        write_mask: u64,
    },
    /// The vCPU halted (WFI/HLT) with nothing pending.
    Halt,
    /// The guest powered the system off; the VM is now `Off`.
    SystemOff,
    /// The guest asked for a reset; confidential VMs cannot be reset in place, the VM is now `Off`.
    Reset,
    /// The guest did something the platform treats as fatal.
    Fault {
        /// Guest PC, if known.
        pc: u64,
        /// Architectural syndrome (ESR / scause / KVM reason).
        syndrome: u64,
        /// Faulting instruction, if known.
        insn: Option<u32>,
        /// Human-readable cause.
        reason: String,
    },
    /// The host interrupted the run (signal, EINTR); not a guest event.
    Interrupted,
}

/// The kinds of [`VmExit`], for statistics and errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum ExitKind {
    MmioRead,
    MmioWrite,
    PioIn,
    PioOut,
    ConvertMemory,
    HostCall,
    SysReg,
    Halt,
    SystemOff,
    Reset,
    Fault,
    Interrupted,
}

impl ExitKind {
    /// Every kind, in a fixed order (the index used by counters).
    pub const ALL: [ExitKind; 12] = [
        ExitKind::MmioRead,
        ExitKind::MmioWrite,
        ExitKind::PioIn,
        ExitKind::PioOut,
        ExitKind::ConvertMemory,
        ExitKind::HostCall,
        ExitKind::SysReg,
        ExitKind::Halt,
        ExitKind::SystemOff,
        ExitKind::Reset,
        ExitKind::Fault,
        ExitKind::Interrupted,
    ];

    /// Stable snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            ExitKind::MmioRead => "mmio_read",
            ExitKind::MmioWrite => "mmio_write",
            ExitKind::PioIn => "pio_in",
            ExitKind::PioOut => "pio_out",
            ExitKind::ConvertMemory => "convert_memory",
            ExitKind::HostCall => "host_call",
            ExitKind::SysReg => "sys_reg",
            ExitKind::Halt => "halt",
            ExitKind::SystemOff => "system_off",
            ExitKind::Reset => "reset",
            ExitKind::Fault => "fault",
            ExitKind::Interrupted => "interrupted",
        }
    }

    /// Index into [`ExitKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl VmExit {
    /// The exit's kind.
    pub fn kind(&self) -> ExitKind {
        match self {
            VmExit::Mmio { write: None, .. } => ExitKind::MmioRead,
            VmExit::Mmio { write: Some(_), .. } => ExitKind::MmioWrite,
            VmExit::Pio { write: None, .. } => ExitKind::PioIn,
            VmExit::Pio { write: Some(_), .. } => ExitKind::PioOut,
            VmExit::ConvertMemory { .. } => ExitKind::ConvertMemory,
            VmExit::HostCall { .. } => ExitKind::HostCall,
            VmExit::SysReg { .. } => ExitKind::SysReg,
            VmExit::Halt => ExitKind::Halt,
            VmExit::SystemOff => ExitKind::SystemOff,
            VmExit::Reset => ExitKind::Reset,
            VmExit::Fault { .. } => ExitKind::Fault,
            VmExit::Interrupted => ExitKind::Interrupted,
        }
    }

    /// Whether the VM is off after this exit.
    pub fn is_terminal(&self) -> bool {
        matches!(self, VmExit::SystemOff | VmExit::Reset)
    }
}

/// How the previous exit was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resume {
    /// Nothing to hand back (first entry, MMIO/PIO write done, halt, interrupted).
    Done,
    /// The value an MMIO load reads (masked and, where the instruction says so, sign-extended by
    /// the firmware or backend).
    MmioRead(u64),
    /// The value a PIO `in` reads.
    PioRead(u32),
    /// Make the access fail in the guest (synchronous external abort / access fault).
    InjectAbort,
    /// Accept (`true`) or reject (`false`) a guest conversion request.
    Conversion(bool),
    /// Return values of a host call (x0/x1, a0/a1, or rax).
    HostCall([u64; 2]),
    /// The value a forwarded system-register read returns (ignored for pure writes).
    SysReg(u64),
}

/// The kinds of [`Resume`], for errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum ResumeKind {
    Done,
    MmioRead,
    PioRead,
    InjectAbort,
    Conversion,
    HostCall,
    SysReg,
}

impl Resume {
    /// The resume's kind.
    pub fn kind(&self) -> ResumeKind {
        match self {
            Resume::Done => ResumeKind::Done,
            Resume::MmioRead(_) => ResumeKind::MmioRead,
            Resume::PioRead(_) => ResumeKind::PioRead,
            Resume::InjectAbort => ResumeKind::InjectAbort,
            Resume::Conversion(_) => ResumeKind::Conversion,
            Resume::HostCall(_) => ResumeKind::HostCall,
            Resume::SysReg(_) => ResumeKind::SysReg,
        }
    }
}

/// Checks that `resume` answers `pending` (the exit the vCPU last returned, `None` before the
/// first run). Every backend calls this before entering the guest.
pub fn validate_resume(pending: Option<&VmExit>, resume: &Resume) -> Result<()> {
    use ResumeKind as R;
    let ok = matches!(
        (pending.map(VmExit::kind), resume.kind()),
        (None, R::Done)
            | (Some(ExitKind::MmioWrite), R::Done | R::InjectAbort)
            | (Some(ExitKind::MmioRead), R::MmioRead | R::InjectAbort)
            | (Some(ExitKind::PioOut), R::Done)
            | (Some(ExitKind::PioIn), R::PioRead)
            | (Some(ExitKind::ConvertMemory), R::Conversion)
            | (Some(ExitKind::HostCall), R::HostCall)
            | (Some(ExitKind::SysReg), R::SysReg | R::InjectAbort)
            | (
                Some(
                    ExitKind::Halt
                        | ExitKind::Interrupted
                        | ExitKind::Fault
                        | ExitKind::SystemOff
                        | ExitKind::Reset,
                ),
                R::Done,
            )
    );
    if ok {
        Ok(())
    } else {
        Err(Error::ResumeMismatch {
            pending: pending.map(VmExit::kind),
            resume: resume.kind(),
        })
    }
}

/// Masks `value` to an access of `size` bytes.
pub fn mask_to_size(value: u64, size: u8) -> u64 {
    match size {
        1 => value & 0xff,
        2 => value & 0xffff,
        4 => value & 0xffff_ffff,
        _ => value,
    }
}

/// Sign-extends the low `size` bytes of `value` to 64 bits.
pub fn sign_extend(value: u64, size: u8) -> u64 {
    match size {
        1 => value as u8 as i8 as i64 as u64,
        2 => value as u16 as i16 as i64 as u64,
        4 => value as u32 as i32 as i64 as u64,
        _ => value,
    }
}

/// What the host saw natively behind the last exit, for comparison and debugging: the
/// architecture's own syndrome registers and the channel a value travelled through.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitDetail {
    /// Native exit reason, e.g. `RMI_EXIT_SYNC`, `scause=21`, `KVM_EXIT_MMIO`.
    pub reason: String,
    /// Native registers as (name, value), e.g. `("esr", 0x9380_0047)`, `("htinst", 0x2503)`.
    pub registers: Vec<(String, u64)>,
    /// Where an MMIO/host-call value travels, e.g. `RecExit.gprs[0]`, `NACL scratch a0`,
    /// `kvm_run.mmio.data`.
    pub channel: String,
}
