//! # backend-kvm-plain: cvm on real `/dev/kvm`, with guest_memfd-backed memory
//!
//! The plain (non-confidential) cvm backend. It runs guests on this host's KVM through
//! kvm-ioctls, with the same [`Backend`] → [`Vm`] → [`Vcpu`](cvm_core::Vcpu)
//! contract, launch lifecycle, exits and measurement log as the Arm CCA and RISC-V CoVE
//! backends, so that one test body or VMM runs on all three.
//!
//! ```no_run
//! use backend_kvm_plain::KvmBackend;
//! use cvm_core::{Backend, MemoryRegion, Measure, Resume, VcpuInit, VmConfig, VmExit};
//!
//! let backend = KvmBackend::open()?;
//! let vm = backend.create_vm(&VmConfig::default())?;
//! vm.add_memory(MemoryRegion::shared(0x10_0000, 0x1_0000))?;
//! vm.load(0x10_0000, &[0xf4], Measure::Yes)?; // hlt
//! let mut vcpu = vm.create_vcpu(VcpuInit::boot(0x10_0000, &[]))?;
//! vm.finalize()?;
//! assert_eq!(vcpu.run(Resume::Done)?, VmExit::Halt);
//! # Ok::<(), cvm_core::Error>(())
//! ```
//!
//! * **Probe** ([`KvmBackend::probe`], [`probe`]): `/dev/kvm` and the capabilities
//!   `KVM_CAP_USER_MEMORY2`, `KVM_CAP_GUEST_MEMFD`, `KVM_CAP_GUEST_MEMFD_FLAGS` (MMAP,
//!   INIT_SHARED), `KVM_CAP_MEMORY_ATTRIBUTES` (PRIVATE), `KVM_CAP_VM_TYPES`,
//!   `KVM_CAP_EXIT_HYPERCALL`, each reported present or not with its value. Asking for a
//!   confidential VM fails closed ([`Error::Unsupported`]).
//! * **Memory** ([`memory`] docs): one guest_memfd per region, mapped
//!   (`GUEST_MEMFD_FLAG_MMAP | INIT_SHARED`) and registered with `KVM_SET_USER_MEMORY_REGION2`;
//!   a memfd + `KVM_SET_USER_MEMORY_REGION` otherwise and for read-only regions. Private
//!   regions need `KVM_MEMORY_ATTRIBUTE_PRIVATE`; where KVM lacks it (e.g. the default x86 VM
//!   type) they are refused with [`RegionError::KindUnsupported`](cvm_core::RegionError)
//!   naming the capability.
//! * **vCPUs**: x86-64 starts in long mode with identity page tables in a backend-owned hidden
//!   memslot (see [`x86_64`](crate::arch) docs); aarch64 uses `KVM_ARM_VCPU_INIT` (preferred
//!   target, PSCI 0.2) and riscv64 sets PC and a0.. through `KVM_SET_ONE_REG`.
//! * **Measurement** ([`measure`]): a software SHA-256 launch digest over the
//!   [`MeasurementLog`](cvm_core::MeasurementLog), register `LAUNCH` — for parity only, **not
//!   hardware-rooted**.
//!
//! ## Exit mapping
//!
//! | KVM exit | [`VmExit`](cvm_core::VmExit) | answer ([`Resume`](cvm_core::Resume)) and where it goes |
//! |---|---|---|
//! | `KVM_EXIT_MMIO`, `is_write = 1` (any width, also a guest store to a read-only region) | `Mmio { gpa, size: len, write: Some(data masked to len) }` | `Done`; `InjectAbort`: see below |
//! | `KVM_EXIT_MMIO`, `is_write = 0` | `Mmio { gpa, size: len, write: None }` | `MmioRead(v)`: low `len` bytes of `v` → `mmio.data` (KVM sign- or zero-extends per the instruction on the next `KVM_RUN`) |
//! | `KVM_EXIT_IO` out, `count = 1` | `Pio { port, size, write: Some(v) }` | `Done` |
//! | `KVM_EXIT_IO` in, `count = 1` | `Pio { port, size, write: None }` | `PioRead(v)`: low `size` bytes → `kvm_run + io.data_offset` |
//! | `KVM_EXIT_IO` with `count > 1` (string I/O) | `Fault { syndrome: port, .. }` | `Done` |
//! | `KVM_EXIT_HLT` (x86), rbx ≠ a signature | `Halt` | `Done` (execution continues after `HLT`) |
//! | `KVM_EXIT_HLT` (x86), rbx = `HOST_CALL_SIGNATURE` | `HostCall { nr: rax, args: [rdi, rsi, rdx, rcx, block+0, block+8] }` (block = `X86_HOST_CALL_BLOCK`, 0xFFC0_0000) | `HostCall([a, b])`: rax = a, rdx = b, rbx = 0 (`KVM_SET_REGS`) |
//! | `KVM_EXIT_HLT` (x86), rbx = `SYSTEM_OFF_SIGNATURE` | `SystemOff` (VM → `Off`) | — |
//! | `KVM_EXIT_HYPERCALL`, nr = 12 `KVM_HC_MAP_GPA_RANGE` (x86; forwarded because `KVM_CAP_EXIT_HYPERCALL` is enabled for it when the host offers it) | `ConvertMemory { gpa: args[0], size: args[1] × 4 KiB, to_private: args[2] & KVM_MAP_GPA_RANGE_ENCRYPTED }` | `Conversion(true)`: attributes changed (shared→private refused with `KindUnsupported` where KVM lacks PRIVATE; private→shared is a no-op there), `hypercall.ret = 0`; `Conversion(false)`: `hypercall.ret = -KVM_EPERM` |
//! | `KVM_EXIT_HYPERCALL`, other nr | `HostCall { nr, args }` | `HostCall([a, _])`: `hypercall.ret = a` |
//! | `KVM_EXIT_MEMORY_FAULT` (returned with -EFAULT) | `ConvertMemory { gpa, size, to_private: flags & KVM_MEMORY_EXIT_FLAG_PRIVATE }` | `Conversion(true)`: `KVM_SET_MEMORY_ATTRIBUTES` (+ punch hole towards shared); `Conversion(false)`: nothing, the guest faults again |
//! | `KVM_EXIT_SYSTEM_EVENT` `SHUTDOWN` | `SystemOff` | — |
//! | `KVM_EXIT_SYSTEM_EVENT` `RESET` | `Reset` | — |
//! | `KVM_EXIT_SYSTEM_EVENT` `CRASH` / other types | `Fault { syndrome: data[0], reason: type name }` | `Done` |
//! | `KVM_EXIT_SHUTDOWN` (x86 triple fault) | `Fault { pc: rip, reason: "…triple fault" }` | `Done` |
//! | `KVM_EXIT_INTERNAL_ERROR` | `Fault { syndrome: suberror, reason: sub-error name + data words }` | `Done` |
//! | `KVM_EXIT_FAIL_ENTRY` | `Fault { syndrome: hardware_entry_failure_reason, .. }` | `Done` |
//! | `KVM_RUN` returns `EINTR` (signal, `immediate_exit`), or `KVM_EXIT_INTR` | `Interrupted` (never a guest exit) | `Done` |
//! | `KVM_RUN` returns `EAGAIN` | — (retried) | — |
//! | `KVM_EXIT_RISCV_SBI` (35, riscv64; kvm-ioctls reports `Unsupported(35)`) | `HostCall { nr: extension_id << 32 \| function_id, args }` | `HostCall([a0, a1])` → `riscv_sbi.ret[0..2]` |
//! | `KVM_EXIT_RISCV_CSR` (36, riscv64) | `SysReg { reg: csr_num, write: Some(new_value) if write_mask ≠ 0, write_mask }` | `SysReg(v)` → `riscv_csr.ret_value` |
//! | anything else | `Fault { reason: exit name }` | `Done` |
//!
//! `Resume::InjectAbort` is **refused on x86** with [`Error::Unsupported`]: KVM has no way to
//! fail an emulated MMIO access there; nothing is entered and the exit stays pending. On
//! aarch64 it sets `ext_dabt_pending` through `KVM_SET_VCPU_EVENTS` (KVM injects a synchronous
//! external abort); on riscv64 it is refused like on x86.
//!
//! On x86 a host call cannot be a `VMCALL`: KVM completes unknown hypercall numbers itself
//! with `-KVM_ENOSYS` and never exits. The portable host call and power-off are therefore a
//! *signed `HLT`* (see [`arch`] docs and [`platform`]).

pub mod measure;
pub mod memory;
pub mod platform;
pub mod probe;

mod exit;
mod vcpu;
mod vm;

#[cfg(target_arch = "aarch64")]
#[path = "aarch64.rs"]
pub mod arch;
#[cfg(target_arch = "riscv64")]
#[path = "riscv64.rs"]
pub mod arch;
#[cfg(not(any(target_arch = "aarch64", target_arch = "riscv64")))]
#[path = "x86_64.rs"]
pub mod arch;

use cvm_core::{
    Backend, BackendInfo, Confidentiality, EntropyPolicy, Error, HashAlgorithm, ManagedVm, Result,
    Vm, VmConfig,
};
use kvm_ioctls::Kvm;

pub use probe::HostCaps;
pub use vm::KvmVm;

/// The plain-KVM backend: an open `/dev/kvm` and what it offers.
pub struct KvmBackend {
    kvm: Kvm,
    caps: HostCaps,
}

impl std::fmt::Debug for KvmBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvmBackend")
            .field("caps", &self.caps)
            .finish()
    }
}

impl KvmBackend {
    /// Opens `/dev/kvm` (`open(2)`, `KVM_GET_API_VERSION`) and probes its capabilities
    /// (`KVM_CHECK_EXTENSION`, x86: `KVM_GET_SUPPORTED_CPUID`).
    ///
    /// Fails with [`Error::Unavailable`] when `/dev/kvm` cannot be opened or speaks another
    /// API version.
    pub fn open() -> Result<Self> {
        let kvm = Kvm::new().map_err(|e| Error::Unavailable {
            backend: probe::NAME.into(),
            reason: format!("cannot open /dev/kvm: {}", std::io::Error::from(e)),
        })?;
        let api = kvm.get_api_version();
        if api != 12 {
            return Err(Error::Unavailable {
                backend: probe::NAME.into(),
                reason: format!("KVM_GET_API_VERSION is {api}, expected 12"),
            });
        }
        let caps = HostCaps::read(&kvm);
        Ok(Self { kvm, caps })
    }

    /// What plain KVM offers here. Never fails or panics: without a usable `/dev/kvm` the
    /// info says `available: false` with `"unavailable: <reason>"`.
    pub fn probe() -> BackendInfo {
        match Self::open() {
            Ok(b) => b.info(),
            Err(Error::Unavailable { reason, .. }) => probe::unavailable(reason),
            Err(e) => probe::unavailable(e.to_string()),
        }
    }

    /// The probed capabilities.
    pub fn caps(&self) -> &HostCaps {
        &self.caps
    }

    /// Creates a VM and returns it with its concrete type, for callers that want the
    /// backend-specific accessors of [`KvmVm`]. Same checks as [`Backend::create_vm`].
    pub fn create_kvm_vm(&self, config: &VmConfig) -> Result<ManagedVm<KvmVm>> {
        if config.confidentiality != Confidentiality::None {
            return Err(Error::Unsupported(format!(
                "plain KVM cannot create a {:?} VM; refusing rather than creating an unprotected one",
                config.confidentiality
            )));
        }
        if let Some(alg) = config.measurement {
            if alg != HashAlgorithm::Sha256 {
                return Err(Error::Unsupported(format!(
                    "plain KVM's launch digest is SHA-256, not {}",
                    alg.name()
                )));
            }
        }
        if config.entropy == EntropyPolicy::ForwardToVmm && cfg!(not(target_arch = "riscv64")) {
            return Err(Error::Unsupported(
                "entropy instructions (RDRAND/RNDR) execute natively under KVM and cannot be \
                 forwarded to the VMM"
                    .into(),
            ));
        }
        if config.vcpus > self.caps.max_vcpus {
            return Err(Error::InvalidArgument(format!(
                "{} vCPUs requested, KVM allows {}",
                config.vcpus, self.caps.max_vcpus
            )));
        }
        let addr_bits = if config.addr_bits == 0 {
            arch::default_addr_bits(&self.caps)
        } else {
            arch::check_addr_bits(&self.caps, config.addr_bits)?;
            config.addr_bits
        };
        ManagedVm::new(
            config,
            addr_bits,
            arch::feature_defs(&self.kvm, &self.caps),
            |shared| KvmVm::new(&self.kvm, &self.caps, shared, config),
        )
    }
}

impl Backend for KvmBackend {
    fn info(&self) -> BackendInfo {
        self.caps.info()
    }

    fn create_vm(&self, config: &VmConfig) -> Result<Box<dyn Vm>> {
        Ok(Box::new(self.create_kvm_vm(config)?))
    }
}
