//! Native KVM exits → [`VmExit`], and what each exit's answer must write back.
//!
//! kvm-ioctls' [`VcpuExit`] borrows `kvm_run`; [`RawExit::from_exit`] copies out the few
//! values the mapping needs so that the borrow ends before any further ioctl. The full mapping
//! table is in the crate docs.

use cvm_core::{mask_to_size, VmExit};
use kvm_ioctls::VcpuExit;

/// What the pending exit needs from its answer (the KVM-side channel of the resume).
/// What a `KVM_EXIT_HLT` means. On x86 a "signed" `HLT` (rbx holds a signature) is a host call
/// or power-off (see the platform docs); on arm64 and riscv64 WFI is handled in the kernel, so
/// every `HLT` exit there is a plain halt and only [`HaltMeaning::Halt`] is produced.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) enum HaltMeaning {
    /// A plain `HLT`.
    Halt,
    /// A signed `HLT`: a host call.
    HostCall {
        /// rax.
        nr: u64,
        /// rdi, rsi, rdx, rcx, then arguments 5–6 from the host-call block.
        args: [u64; 6],
    },
    /// A signed `HLT`: system off.
    SystemOff,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Native {
    /// Nothing to write back.
    None,
    /// `KVM_EXIT_MMIO` load: the value goes to `kvm_run.mmio.data`.
    MmioRead,
    /// `KVM_EXIT_IO` in: the value goes to `kvm_run` at `io.data_offset`.
    PioIn,
    /// `KVM_EXIT_HYPERCALL` (other than MAP_GPA_RANGE): ret\[0\] goes to `hypercall.ret`.
    Hypercall,
    /// `KVM_EXIT_HYPERCALL` for `KVM_HC_MAP_GPA_RANGE`: convert if accepted, then
    /// `hypercall.ret` = 0 or `-KVM_EPERM`.
    MapGpaRange {
        /// Start.
        gpa: u64,
        /// Length in bytes.
        size: u64,
        /// Direction.
        to_private: bool,
    },
    /// `KVM_EXIT_MEMORY_FAULT`: convert if accepted; the guest re-faults otherwise.
    MemoryFault {
        /// Start.
        gpa: u64,
        /// Length in bytes.
        size: u64,
        /// Direction.
        to_private: bool,
    },
    /// x86 signed `HLT` host call: rax/rdx via `KVM_SET_REGS`.
    HaltHostCall,
    /// `KVM_EXIT_RISCV_SBI`: `riscv_sbi.ret[0..2]`.
    #[cfg_attr(not(target_arch = "riscv64"), allow(dead_code))]
    RiscvSbi,
    /// `KVM_EXIT_RISCV_CSR`: `riscv_csr.ret_value`.
    #[cfg_attr(not(target_arch = "riscv64"), allow(dead_code))]
    RiscvCsr,
}

/// An exit produced by architecture-specific code (riscv64 SBI/CSR).
pub(crate) struct ArchExit {
    /// The portable exit.
    pub exit: VmExit,
    /// Its answer channel.
    pub native: Native,
}

/// The values of a [`VcpuExit`] copied out of `kvm_run`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RawExit {
    /// `KVM_EXIT_MMIO`, load.
    MmioRead { addr: u64, len: u8 },
    /// `KVM_EXIT_MMIO`, store.
    MmioWrite { addr: u64, len: u8, value: u64 },
    /// `KVM_EXIT_IO`, in.
    IoIn { port: u16 },
    /// `KVM_EXIT_IO`, out (the first element's bytes).
    IoOut { port: u16, value: u32 },
    /// `KVM_EXIT_HLT`.
    Hlt,
    /// `KVM_EXIT_HYPERCALL`.
    Hypercall { nr: u64, args: [u64; 6] },
    /// `KVM_EXIT_SYSTEM_EVENT`.
    SystemEvent { ty: u32, data0: u64 },
    /// `KVM_EXIT_MEMORY_FAULT` (returned with -EFAULT/-EHWPOISON).
    MemoryFault { flags: u64, gpa: u64, size: u64 },
    /// `KVM_EXIT_SHUTDOWN` (x86 triple fault).
    Shutdown,
    /// `KVM_EXIT_FAIL_ENTRY`.
    FailEntry { reason: u64, cpu: u32 },
    /// `KVM_EXIT_INTERNAL_ERROR`.
    InternalError,
    /// `KVM_EXIT_INTR`.
    Intr,
    /// An exit kvm-ioctls does not decode (riscv SBI = 35, CSR = 36, …).
    Unsupported(u32),
    /// Any other decoded exit.
    Other(&'static str),
}

fn le_value(data: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = data.len().min(8);
    b[..n].copy_from_slice(&data[..n]);
    u64::from_le_bytes(b)
}

impl RawExit {
    /// Copies the values out of a kvm-ioctls exit.
    pub(crate) fn from_exit(exit: VcpuExit<'_>) -> Self {
        match exit {
            VcpuExit::MmioRead(addr, data) => RawExit::MmioRead {
                addr,
                len: data.len() as u8,
            },
            VcpuExit::MmioWrite(addr, data) => RawExit::MmioWrite {
                addr,
                len: data.len() as u8,
                value: mask_to_size(le_value(data), data.len() as u8),
            },
            VcpuExit::IoIn(port, _) => RawExit::IoIn { port },
            VcpuExit::IoOut(port, data) => RawExit::IoOut {
                port,
                value: le_value(&data[..data.len().min(4)]) as u32,
            },
            VcpuExit::Hlt => RawExit::Hlt,
            VcpuExit::Hypercall(h) => RawExit::Hypercall {
                nr: h.nr,
                args: h.args,
            },
            VcpuExit::SystemEvent(ty, data) => RawExit::SystemEvent {
                ty,
                data0: data.first().copied().unwrap_or(0),
            },
            VcpuExit::MemoryFault { flags, gpa, size } => RawExit::MemoryFault { flags, gpa, size },
            VcpuExit::Shutdown => RawExit::Shutdown,
            VcpuExit::FailEntry(reason, cpu) => RawExit::FailEntry { reason, cpu },
            VcpuExit::InternalError => RawExit::InternalError,
            VcpuExit::Intr => RawExit::Intr,
            VcpuExit::Unsupported(n) => RawExit::Unsupported(n),
            VcpuExit::Unknown => RawExit::Other("KVM_EXIT_UNKNOWN"),
            VcpuExit::Exception => RawExit::Other("KVM_EXIT_EXCEPTION"),
            VcpuExit::Debug(_) => RawExit::Other("KVM_EXIT_DEBUG"),
            VcpuExit::IrqWindowOpen => RawExit::Other("KVM_EXIT_IRQ_WINDOW_OPEN"),
            VcpuExit::SetTpr => RawExit::Other("KVM_EXIT_SET_TPR"),
            VcpuExit::TprAccess => RawExit::Other("KVM_EXIT_TPR_ACCESS"),
            VcpuExit::Nmi => RawExit::Other("KVM_EXIT_NMI"),
            VcpuExit::IoapicEoi(_) => RawExit::Other("KVM_EXIT_IOAPIC_EOI"),
            VcpuExit::Hyperv => RawExit::Other("KVM_EXIT_HYPERV"),
            VcpuExit::X86Rdmsr(_) => RawExit::Other("KVM_EXIT_X86_RDMSR"),
            VcpuExit::X86Wrmsr(_) => RawExit::Other("KVM_EXIT_X86_WRMSR"),
            VcpuExit::Watchdog => RawExit::Other("KVM_EXIT_WATCHDOG"),
            _ => RawExit::Other("an exit of another architecture (s390/ppc)"),
        }
    }
}

/// Name of an `KVM_INTERNAL_ERROR_*` sub-error (include/uapi/linux/kvm.h).
pub(crate) fn internal_error_name(suberror: u32) -> &'static str {
    match suberror {
        1 => "KVM_INTERNAL_ERROR_EMULATION",
        2 => "KVM_INTERNAL_ERROR_SIMUL_EX",
        3 => "KVM_INTERNAL_ERROR_DELIVERY_EV",
        4 => "KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON",
        _ => "unknown sub-error",
    }
}

/// Name of a `KVM_SYSTEM_EVENT_*` type (include/uapi/linux/kvm.h).
pub(crate) fn system_event_name(ty: u32) -> &'static str {
    match ty {
        1 => "KVM_SYSTEM_EVENT_SHUTDOWN",
        2 => "KVM_SYSTEM_EVENT_RESET",
        3 => "KVM_SYSTEM_EVENT_CRASH",
        4 => "KVM_SYSTEM_EVENT_WAKEUP",
        5 => "KVM_SYSTEM_EVENT_SUSPEND",
        6 => "KVM_SYSTEM_EVENT_SEV_TERM",
        7 => "KVM_SYSTEM_EVENT_TDX_FATAL",
        _ => "unknown system event",
    }
}

/// A fault exit.
pub(crate) fn fault(pc: u64, syndrome: u64, reason: String) -> VmExit {
    VmExit::Fault {
        pc,
        syndrome,
        insn: None,
        reason,
    }
}
