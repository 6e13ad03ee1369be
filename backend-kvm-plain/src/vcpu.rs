//! The vCPU run loop: answer the pending exit through its KVM channel, `KVM_RUN`, map the exit.
//!
//! The hot path (an MMIO or PIO exit answered and re-entered) allocates nothing, takes no lock
//! and issues exactly one ioctl (`KVM_RUN`); the answer is a store into the shared `kvm_run`
//! page.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cvm_core::{Error, ExitDetail, Result, Resume, VcpuOps, VmExit};
use kvm_bindings::{
    kvm_run, KVM_MEMORY_EXIT_FLAG_PRIVATE, KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET,
    KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::VcpuFd;

use crate::arch;
use crate::exit::{fault, internal_error_name, system_event_name, HaltMeaning, Native, RawExit};
use crate::probe::{KVM_HC_MAP_GPA_RANGE, KVM_MAP_GPA_RANGE_ENCRYPTED};
use crate::vm::VmCore;

/// `KVM_EPERM` (include/uapi/linux/kvm_para.h): a hypercall refused by the host.
const KVM_EPERM: u64 = 1;

/// A KVM vCPU.
pub(crate) struct KvmVcpu {
    fd: VcpuFd,
    core: Arc<VmCore>,
    id: u32,
    native: Native,
    /// The last raw exit, kept for [`VcpuOps::exit_detail`] (formatted on demand).
    last: Option<RawExit>,
    /// `KVM_RUN` calls, counted lock-free into the VM's call counters.
    runs: Arc<AtomicU64>,
    /// Whether the frozen feature registers were applied (once, before the first `KVM_RUN`).
    features_applied: bool,
}

impl KvmVcpu {
    /// Wraps a vCPU fd whose registers are already set up.
    pub(crate) fn new(fd: VcpuFd, core: Arc<VmCore>, id: u32) -> Self {
        let runs = core.shared.stats.call_counter("KVM_RUN");
        Self {
            fd,
            core,
            id,
            native: Native::None,
            last: None,
            runs,
            features_applied: false,
        }
    }

    /// Writes the answer of the pending exit into its KVM channel. Idempotent, so a failed
    /// `KVM_RUN` can be retried with the same resume.
    fn answer(&mut self, resume: Resume) -> Result<()> {
        match (resume, self.native) {
            (Resume::Done, _) => Ok(()),
            (Resume::MmioRead(v), Native::MmioRead) => {
                let run = self.fd.get_kvm_run();
                // SAFETY: the pending exit is KVM_EXIT_MMIO (recorded in `native` when it was
                // returned, and kvm_run is not touched by KVM until the next KVM_RUN), so `mmio`
                // is the active member of the union.
                let mmio = unsafe { &mut run.__bindgen_anon_1.mmio };
                let len = (mmio.len as usize).min(8);
                mmio.data = [0; 8];
                mmio.data[..len].copy_from_slice(&v.to_le_bytes()[..len]);
                Ok(())
            }
            (Resume::PioRead(v), Native::PioIn) => self.write_pio_in(v),
            (Resume::HostCall(ret), Native::Hypercall) => arch::answer_hypercall(&mut self.fd, ret),
            (Resume::HostCall(ret), Native::HaltHostCall) => {
                arch::answer_halt_host_call(&self.fd, ret)
            }
            (Resume::HostCall(ret), Native::RiscvSbi) => arch::answer_sbi(&mut self.fd, ret),
            (Resume::SysReg(v), Native::RiscvCsr) => arch::answer_csr(&mut self.fd, v),
            (
                Resume::Conversion(accept),
                Native::MapGpaRange {
                    gpa,
                    size,
                    to_private,
                },
            ) => {
                let ret = if accept {
                    self.core.apply_conversion(gpa, size, to_private)?;
                    0
                } else {
                    KVM_EPERM.wrapping_neg()
                };
                // The pending exit is KVM_EXIT_HYPERCALL (see `native`); KVM moves `ret` to rax.
                self.fd.get_kvm_run().__bindgen_anon_1.hypercall.ret = ret;
                Ok(())
            }
            (
                Resume::Conversion(accept),
                Native::MemoryFault {
                    gpa,
                    size,
                    to_private,
                },
            ) => {
                if accept {
                    self.core.apply_conversion(gpa, size, to_private)?;
                }
                Ok(())
            }
            (Resume::InjectAbort, _) => arch::inject_abort(&self.fd),
            (resume, native) => Err(Error::InvalidArgument(format!(
                "{resume:?} does not fit the pending KVM exit ({native:?})"
            ))),
        }
    }

    /// Writes the low `io.size` bytes of `v` at `kvm_run + io.data_offset`.
    fn write_pio_in(&mut self, v: u32) -> Result<()> {
        let run_size = self.core.run_size;
        let run = self.fd.get_kvm_run();
        // SAFETY: the pending exit is KVM_EXIT_IO (see `native`), so `io` is the active member.
        let io = unsafe { run.__bindgen_anon_1.io };
        let size = usize::from(io.size).min(4);
        let off = usize::try_from(io.data_offset).unwrap_or(usize::MAX);
        if off.checked_add(size).is_none_or(|end| end > run_size) {
            return Err(Error::InvalidArgument(format!(
                "KVM_EXIT_IO data offset {off:#x} is outside the kvm_run mapping"
            )));
        }
        let base = run as *mut kvm_run as *mut u8;
        // SAFETY: `[off, off + size)` lies inside the kvm_run mapping (`run_size` bytes, checked
        // above), which KVM defines as where the `in` data is read from on the next KVM_RUN.
        unsafe { std::ptr::copy_nonoverlapping(v.to_le_bytes().as_ptr(), base.add(off), size) };
        Ok(())
    }

    /// `KVM_RUN` until a guest exit or an interruption: EAGAIN is retried, EINTR is
    /// [`VmExit::Interrupted`].
    fn enter(&mut self) -> Result<RawExit> {
        loop {
            self.runs.fetch_add(1, Ordering::Relaxed);
            match self.fd.run() {
                Ok(exit) => return Ok(RawExit::from_exit(exit)),
                Err(e) if e.errno() == libc::EAGAIN => continue,
                Err(e) if e.errno() == libc::EINTR => return Ok(RawExit::Intr),
                Err(e) => return Err(Error::os("KVM_RUN", e)),
            }
        }
    }

    /// Maps a raw exit, recording its answer channel.
    fn map(&mut self, raw: RawExit) -> Result<(VmExit, Native)> {
        Ok(match raw {
            RawExit::MmioWrite { addr, len, value } => (
                VmExit::Mmio {
                    gpa: addr,
                    size: len,
                    write: Some(value),
                },
                Native::None,
            ),
            RawExit::MmioRead { addr, len } => (
                VmExit::Mmio {
                    gpa: addr,
                    size: len,
                    write: None,
                },
                Native::MmioRead,
            ),
            RawExit::IoIn { port } | RawExit::IoOut { port, .. } => {
                let run = self.fd.get_kvm_run();
                // SAFETY: the exit is KVM_EXIT_IO, so `io` is the active member of the union.
                let io = unsafe { run.__bindgen_anon_1.io };
                if io.count != 1 {
                    let pc = arch::guest_pc(&self.fd);
                    (
                        fault(
                            pc,
                            u64::from(port),
                            format!(
                                "string port I/O (rep ins/outs, {} x {} bytes) on port {port:#x} \
                                 is not supported",
                                io.count, io.size
                            ),
                        ),
                        Native::None,
                    )
                } else {
                    match raw {
                        RawExit::IoOut { value, .. } => (
                            VmExit::Pio {
                                port,
                                size: io.size,
                                write: Some(mask_pio(value, io.size)),
                            },
                            Native::None,
                        ),
                        _ => (
                            VmExit::Pio {
                                port,
                                size: io.size,
                                write: None,
                            },
                            Native::PioIn,
                        ),
                    }
                }
            }
            RawExit::Hlt => match arch::classify_halt(&self.fd, &self.core)? {
                HaltMeaning::Halt => (VmExit::Halt, Native::None),
                HaltMeaning::SystemOff => (VmExit::SystemOff, Native::None),
                HaltMeaning::HostCall { nr, args } => {
                    (VmExit::HostCall { nr, args }, Native::HaltHostCall)
                }
            },
            RawExit::Hypercall { nr, args }
                if cfg!(target_arch = "x86_64") && nr == KVM_HC_MAP_GPA_RANGE =>
            {
                let gpa = args[0];
                let to_private = args[2] & KVM_MAP_GPA_RANGE_ENCRYPTED != 0;
                match args[1].checked_mul(cvm_core::PAGE_SIZE) {
                    Some(size) => (
                        VmExit::ConvertMemory {
                            gpa,
                            size,
                            to_private,
                        },
                        Native::MapGpaRange {
                            gpa,
                            size,
                            to_private,
                        },
                    ),
                    None => (
                        fault(
                            arch::guest_pc(&self.fd),
                            nr,
                            format!("KVM_HC_MAP_GPA_RANGE with {} pages overflows", args[1]),
                        ),
                        Native::None,
                    ),
                }
            }
            RawExit::Hypercall { nr, args } => {
                (arch::hypercall_exit(&self.fd, nr, args)?, Native::Hypercall)
            }
            RawExit::SystemEvent { ty, data0 } => match ty {
                KVM_SYSTEM_EVENT_SHUTDOWN => (VmExit::SystemOff, Native::None),
                KVM_SYSTEM_EVENT_RESET => (VmExit::Reset, Native::None),
                KVM_SYSTEM_EVENT_CRASH => (
                    fault(
                        arch::guest_pc(&self.fd),
                        data0,
                        "KVM_SYSTEM_EVENT_CRASH: the guest reported a crash".into(),
                    ),
                    Native::None,
                ),
                other => (
                    fault(
                        arch::guest_pc(&self.fd),
                        data0,
                        format!("{} ({other}) is not handled", system_event_name(other)),
                    ),
                    Native::None,
                ),
            },
            RawExit::MemoryFault { flags, gpa, size } => {
                let to_private = flags & u64::from(KVM_MEMORY_EXIT_FLAG_PRIVATE) != 0;
                (
                    VmExit::ConvertMemory {
                        gpa,
                        size,
                        to_private,
                    },
                    Native::MemoryFault {
                        gpa,
                        size,
                        to_private,
                    },
                )
            }
            RawExit::Shutdown => (
                fault(
                    arch::guest_pc(&self.fd),
                    0,
                    "KVM_EXIT_SHUTDOWN: triple fault".into(),
                ),
                Native::None,
            ),
            RawExit::FailEntry { reason, cpu } => (
                fault(
                    arch::guest_pc(&self.fd),
                    reason,
                    format!(
                        "KVM_EXIT_FAIL_ENTRY: hardware entry failure reason {reason:#x} on host \
                         cpu {cpu}"
                    ),
                ),
                Native::None,
            ),
            RawExit::InternalError => {
                let run = self.fd.get_kvm_run();
                // SAFETY: the exit is KVM_EXIT_INTERNAL_ERROR, so `internal` is the active member.
                let internal = unsafe { run.__bindgen_anon_1.internal };
                let n = (internal.ndata as usize).min(internal.data.len());
                let data: Vec<String> = internal.data[..n]
                    .iter()
                    .map(|d| format!("{d:#x}"))
                    .collect();
                (
                    fault(
                        arch::guest_pc(&self.fd),
                        u64::from(internal.suberror),
                        format!(
                            "KVM_EXIT_INTERNAL_ERROR: {} ({}), data [{}]",
                            internal_error_name(internal.suberror),
                            internal.suberror,
                            data.join(", ")
                        ),
                    ),
                    Native::None,
                )
            }
            RawExit::Intr => (VmExit::Interrupted, Native::None),
            RawExit::Unsupported(n) => match arch::arch_exit(&mut self.fd, n) {
                Some(e) => (e.exit, e.native),
                None => (
                    fault(
                        arch::guest_pc(&self.fd),
                        u64::from(n),
                        format!("unhandled KVM exit reason {n}"),
                    ),
                    Native::None,
                ),
            },
            RawExit::Other(name) => (
                fault(arch::guest_pc(&self.fd), 0, format!("unhandled {name}")),
                Native::None,
            ),
        })
    }
}

fn mask_pio(v: u32, size: u8) -> u32 {
    match size {
        1 => v & 0xff,
        2 => v & 0xffff,
        _ => v,
    }
}

impl VcpuOps for KvmVcpu {
    fn run(&mut self, resume: Resume, _pending: Option<&VmExit>) -> Result<VmExit> {
        if !self.features_applied {
            // The contract froze the feature registers just before this first run.
            crate::vm::KvmVm::apply_features(&self.core, &self.fd, self.id)?;
            self.features_applied = true;
        }
        self.answer(resume)?;
        let raw = self.enter()?;
        let (exit, native) = self.map(raw)?;
        self.native = native;
        self.last = Some(raw);
        tracing::trace!(vm = self.core.shared.id, vcpu = self.id, ?raw, "kvm exit");
        Ok(exit)
    }

    fn exit_detail(&self) -> Option<ExitDetail> {
        let raw = self.last?;
        let reg = |n: &str, v: u64| (n.to_string(), v);
        Some(match raw {
            RawExit::MmioRead { addr, len } => ExitDetail {
                reason: "KVM_EXIT_MMIO (load)".into(),
                registers: vec![
                    reg("mmio.phys_addr", addr),
                    reg("mmio.len", u64::from(len)),
                    reg("mmio.is_write", 0),
                ],
                channel: "kvm_run.mmio.data".into(),
            },
            RawExit::MmioWrite { addr, len, value } => ExitDetail {
                reason: "KVM_EXIT_MMIO (store)".into(),
                registers: vec![
                    reg("mmio.phys_addr", addr),
                    reg("mmio.len", u64::from(len)),
                    reg("mmio.is_write", 1),
                    reg("mmio.data", value),
                ],
                channel: "kvm_run.mmio.data".into(),
            },
            RawExit::IoIn { port } => ExitDetail {
                reason: "KVM_EXIT_IO (in)".into(),
                registers: vec![reg("io.port", u64::from(port))],
                channel: "kvm_run + io.data_offset".into(),
            },
            RawExit::IoOut { port, value } => ExitDetail {
                reason: "KVM_EXIT_IO (out)".into(),
                registers: vec![
                    reg("io.port", u64::from(port)),
                    reg("data", u64::from(value)),
                ],
                channel: "kvm_run + io.data_offset".into(),
            },
            RawExit::Hypercall { nr, args } => ExitDetail {
                reason: "KVM_EXIT_HYPERCALL".into(),
                registers: vec![reg("hypercall.nr", nr), reg("hypercall.args[0]", args[0])],
                channel: "kvm_run.hypercall.ret".into(),
            },
            RawExit::MemoryFault { flags, gpa, size } => ExitDetail {
                reason: "KVM_EXIT_MEMORY_FAULT".into(),
                registers: vec![
                    reg("memory_fault.flags", flags),
                    reg("memory_fault.gpa", gpa),
                    reg("memory_fault.size", size),
                ],
                channel: "KVM_SET_MEMORY_ATTRIBUTES, then re-entry".into(),
            },
            RawExit::SystemEvent { ty, data0 } => ExitDetail {
                reason: "KVM_EXIT_SYSTEM_EVENT".into(),
                registers: vec![
                    reg("system_event.type", u64::from(ty)),
                    reg("data[0]", data0),
                ],
                channel: String::new(),
            },
            RawExit::FailEntry { reason, cpu } => ExitDetail {
                reason: "KVM_EXIT_FAIL_ENTRY".into(),
                registers: vec![
                    reg("hardware_entry_failure_reason", reason),
                    reg("cpu", u64::from(cpu)),
                ],
                channel: String::new(),
            },
            other => ExitDetail {
                reason: format!("{other:?}"),
                registers: vec![],
                channel: String::new(),
            },
        })
    }
}
