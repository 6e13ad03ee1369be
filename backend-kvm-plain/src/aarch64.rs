//! aarch64: vCPU setup and the arm64 side of exits.
//!
//! A VM is created with the IPA size it asks for (`KVM_CREATE_VM` with
//! `KVM_VM_TYPE_ARM_IPA_SIZE`, capped by `KVM_CAP_ARM_VM_IPA_SIZE`). Each vCPU is initialised
//! with `KVM_ARM_VCPU_INIT` on the preferred target (`KVM_ARM_PREFERRED_TARGET`) with PSCI 0.2
//! (secondaries that are not runnable also get `KVM_ARM_VCPU_POWER_OFF`, so the guest starts
//! them with PSCI `CPU_ON`), then `KVM_SET_ONE_REG` sets PC = entry and x0..x7 = arguments.
//! KVM's reset state is EL1h with DAIF masked and the MMU off, so no tables are needed and
//! there is no hidden window.
//!
//! Host calls are `HVC #0` with x0 in the SMCCC OEM range [`AARCH64_HOST_CALL_BASE`] +
//! nr: the VM installs a `KVM_ARM_VM_SMCCC_FILTER` forwarding that range to user space
//! (`KVM_EXIT_HYPERCALL`), the backend reads x1..x6 with `KVM_GET_ONE_REG` and answers in x0/x1
//! with `KVM_SET_ONE_REG`. PSCI `SYSTEM_OFF`/`SYSTEM_RESET` arrive as `KVM_EXIT_SYSTEM_EVENT`.

use cvm_core::{Error, FeatureDef, FeatureRegisters, Result, VcpuInit, VmExit};
use kvm_bindings::{
    kvm_device_attr, kvm_smccc_filter, kvm_smccc_filter_action_KVM_SMCCC_FILTER_FWD_TO_USER,
    kvm_vcpu_init, KVM_ARM_VCPU_POWER_OFF, KVM_ARM_VCPU_PSCI_0_2, KVM_ARM_VM_SMCCC_CTRL,
    KVM_ARM_VM_SMCCC_FILTER, KVM_REG_ARM64, KVM_REG_ARM_CORE, KVM_REG_SIZE_U64,
};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};

use crate::exit::{ArchExit, HaltMeaning};
use crate::memory::Memory;
use crate::platform::{AARCH64_HOST_CALL_BASE, AARCH64_HOST_CALL_COUNT};
use crate::probe::HostCaps;

/// The default guest-physical address width (capped by the host's IPA limit).
pub const DEFAULT_ADDR_BITS: u8 = 40;

/// `KVM_REG_ARM_CORE` register id of the 64-bit field at byte `offset` of `struct kvm_regs`.
const fn core_reg(offset: u64) -> u64 {
    KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE as u64 | (offset / 4)
}

/// x`n` (`kvm_regs.regs.regs[n]`).
const fn xreg(n: u64) -> u64 {
    core_reg(n * 8)
}

/// PC (`kvm_regs.regs.pc`: after regs\[31\] and sp).
const PC: u64 = core_reg(32 * 8);

/// Reads the host's IPA limit (`KVM_CAP_ARM_VM_IPA_SIZE`).
pub(crate) fn probe_host(kvm: &Kvm, caps: &mut HostCaps) {
    let limit = kvm.get_host_ipa_limit();
    caps.phys_bits = if limit > 0 { limit as u8 } else { 40 };
}

/// The widest IPA space here.
pub(crate) fn max_addr_bits(caps: &HostCaps) -> u8 {
    caps.phys_bits
}

/// The default width.
pub(crate) fn default_addr_bits(caps: &HostCaps) -> u8 {
    DEFAULT_ADDR_BITS.min(max_addr_bits(caps))
}

/// Checks a requested IPA width (32..=host limit).
pub(crate) fn check_addr_bits(caps: &HostCaps, bits: u8) -> Result<()> {
    let max = max_addr_bits(caps);
    if bits < 32 || bits > max {
        return Err(Error::Unsupported(format!(
            "{bits}-bit IPA space: KVM here supports 32..={max} bits"
        )));
    }
    Ok(())
}

/// The ioctls `setup_vcpu` issues, for the VM's call counters.
pub(crate) const VCPU_SETUP_IOCTLS: &[&str] = &["KVM_ARM_VCPU_INIT", "KVM_SET_ONE_REG"];

/// No VM-wide feature registers are offered on this architecture yet (ID registers / ISA
/// extensions through ONE_REG are future work).
pub(crate) fn feature_defs(_kvm: &Kvm, _caps: &HostCaps) -> Vec<FeatureDef> {
    Vec::new()
}

/// `KVM_CREATE_VM` with the IPA size.
pub(crate) fn create_vm_fd(kvm: &Kvm, addr_bits: u8) -> Result<VmFd> {
    if kvm.get_host_ipa_limit() > 0 {
        kvm.create_vm_with_ipa_size(u32::from(addr_bits))
    } else {
        kvm.create_vm()
    }
    .map_err(|e| Error::os("KVM_CREATE_VM", e))
}

/// No backend-owned window on aarch64.
pub(crate) fn reserved_window() -> Option<(u64, u64)> {
    None
}

/// Per-VM arm64 state: the preferred vCPU target.
pub(crate) struct VmArch {
    kvi: kvm_vcpu_init,
}

impl VmArch {
    /// No VM-wide feature registers are offered on this architecture yet: nothing to apply.
    pub(crate) fn apply_features(
        &self,
        _vcpu: &VcpuFd,
        _id: u32,
        _features: &FeatureRegisters,
    ) -> Result<()> {
        Ok(())
    }

    /// `KVM_ARM_PREFERRED_TARGET` and the host-call `KVM_ARM_VM_SMCCC_FILTER`
    /// (`KVM_SET_DEVICE_ATTR`; a kernel without it leaves host calls unanswered by the VMM).
    pub(crate) fn new(
        _kvm: &Kvm,
        vm: &VmFd,
        _caps: &HostCaps,
        _mem: &mut Memory,
        _vcpus: u32,
        _addr_bits: u8,
    ) -> Result<Self> {
        let mut kvi = kvm_vcpu_init::default();
        vm.get_preferred_target(&mut kvi)
            .map_err(|e| Error::os("KVM_ARM_PREFERRED_TARGET", e))?;
        let filter = kvm_smccc_filter {
            base: AARCH64_HOST_CALL_BASE,
            nr_functions: AARCH64_HOST_CALL_COUNT,
            action: kvm_smccc_filter_action_KVM_SMCCC_FILTER_FWD_TO_USER as u8,
            pad: [0; 15],
        };
        let attr = kvm_device_attr {
            flags: 0,
            group: KVM_ARM_VM_SMCCC_CTRL,
            attr: u64::from(KVM_ARM_VM_SMCCC_FILTER),
            addr: &filter as *const kvm_smccc_filter as u64,
        };
        if let Err(e) = vm.set_device_attr(&attr) {
            tracing::warn!(error = %e, "KVM_ARM_VM_SMCCC_FILTER refused: host calls stay in KVM");
        }
        Ok(Self { kvi })
    }

    /// `KVM_ARM_VCPU_INIT` (PSCI 0.2, powered off unless runnable), then PC and x0..x7 through
    /// `KVM_SET_ONE_REG`.
    pub(crate) fn setup_vcpu(
        &self,
        vcpu: &VcpuFd,
        _id: u32,
        init: &VcpuInit,
        _mem: &Memory,
        _features: &FeatureRegisters,
    ) -> Result<()> {
        let mut kvi = self.kvi;
        kvi.features[0] |= 1 << KVM_ARM_VCPU_PSCI_0_2;
        if !init.runnable {
            kvi.features[0] |= 1 << KVM_ARM_VCPU_POWER_OFF;
        }
        vcpu.vcpu_init(&kvi)
            .map_err(|e| Error::os("KVM_ARM_VCPU_INIT", e))?;
        set_reg(vcpu, PC, init.entry)?;
        for (i, a) in init.args.iter().enumerate() {
            set_reg(vcpu, xreg(i as u64), *a)?;
        }
        Ok(())
    }
}

fn set_reg(vcpu: &VcpuFd, id: u64, v: u64) -> Result<()> {
    vcpu.set_one_reg(id, &v.to_le_bytes())
        .map(|_| ())
        .map_err(|e| Error::os("KVM_SET_ONE_REG", e))
}

fn get_reg(vcpu: &VcpuFd, id: u64) -> Result<u64> {
    let mut b = [0u8; 8];
    vcpu.get_one_reg(id, &mut b)
        .map_err(|e| Error::os("KVM_GET_ONE_REG", e))?;
    Ok(u64::from_le_bytes(b))
}

/// arm64 `HLT` exits are plain halts.
pub(crate) fn classify_halt(_vcpu: &VcpuFd, _core: &crate::vm::VmCore) -> Result<HaltMeaning> {
    Ok(HaltMeaning::Halt)
}

/// Not reachable on arm64.
pub(crate) fn answer_halt_host_call(_vcpu: &VcpuFd, _ret: [u64; 2]) -> Result<()> {
    Err(Error::InvalidArgument(
        "no HLT host call is pending on arm64".into(),
    ))
}

/// A forwarded SMCCC call: nr = function id − [`AARCH64_HOST_CALL_BASE`] for the host-call
/// range (the raw function id otherwise), args = x1..x6 (`KVM_GET_ONE_REG`).
pub(crate) fn hypercall_exit(vcpu: &VcpuFd, nr: u64, _args: [u64; 6]) -> Result<VmExit> {
    let base = u64::from(AARCH64_HOST_CALL_BASE);
    let nr = if (base..base + u64::from(AARCH64_HOST_CALL_COUNT)).contains(&nr) {
        nr - base
    } else {
        nr
    };
    let mut args = [0u64; 6];
    for (i, a) in args.iter_mut().enumerate() {
        *a = get_reg(vcpu, xreg(i as u64 + 1))?;
    }
    Ok(VmExit::HostCall { nr, args })
}

/// Answers a forwarded SMCCC call: x0 = ret\[0\], x1 = ret\[1\] (`KVM_SET_ONE_REG`).
pub(crate) fn answer_hypercall(vcpu: &mut VcpuFd, ret: [u64; 2]) -> Result<()> {
    set_reg(vcpu, xreg(0), ret[0])?;
    set_reg(vcpu, xreg(1), ret[1])
}

/// Not reachable on arm64.
pub(crate) fn answer_sbi(_vcpu: &mut VcpuFd, _ret: [u64; 2]) -> Result<()> {
    Err(Error::InvalidArgument(
        "no SBI call is pending on arm64".into(),
    ))
}

/// Not reachable on arm64.
pub(crate) fn answer_csr(_vcpu: &mut VcpuFd, _value: u64) -> Result<()> {
    Err(Error::InvalidArgument(
        "no CSR access is pending on arm64".into(),
    ))
}

/// The guest PC (`KVM_GET_ONE_REG`); 0 if it cannot be read.
pub(crate) fn guest_pc(vcpu: &VcpuFd) -> u64 {
    get_reg(vcpu, PC).unwrap_or(0)
}

/// `Resume::InjectAbort`: `KVM_SET_VCPU_EVENTS` with `ext_dabt_pending = 1`; KVM injects a
/// synchronous external abort instead of completing the access.
pub(crate) fn inject_abort(vcpu: &VcpuFd) -> Result<()> {
    let mut ev = vcpu
        .get_vcpu_events()
        .map_err(|e| Error::os("KVM_GET_VCPU_EVENTS", e))?;
    ev.exception.ext_dabt_pending = 1;
    vcpu.set_vcpu_events(&ev)
        .map_err(|e| Error::os("KVM_SET_VCPU_EVENTS", e))
}

/// No undecoded exits are handled on arm64.
pub(crate) fn arch_exit(_vcpu: &mut VcpuFd, _reason: u32) -> Option<ArchExit> {
    None
}
