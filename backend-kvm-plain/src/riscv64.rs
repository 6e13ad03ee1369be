//! riscv64: vCPU setup and the RISC-V side of exits.
//!
//! A vCPU starts in VS-mode with the MMU off (KVM's reset state); `KVM_SET_ONE_REG` sets
//! `core.regs.pc` = entry and a0..a7 = arguments. No tables are needed and there is no hidden
//! window.
//!
//! kvm-ioctls reports `KVM_EXIT_RISCV_SBI` (35) and `KVM_EXIT_RISCV_CSR` (36) as
//! `Unsupported(n)`; this module reads `kvm_run`'s union itself:
//! * SBI → `VmExit::HostCall { nr: extension_id << 32 | function_id, args }`; the answer goes
//!   to `riscv_sbi.ret[0..2]` (a0 = error, a1 = value). KVM forwards the SBI experimental
//!   (0x0800_0000–0x08FF_FFFF) and vendor (0x0900_0000–0x09FF_FFFF) extensions, which is where
//!   portable host calls live.
//! * CSR → `VmExit::SysReg { reg: csr_num, write, write_mask }`; the answer goes to
//!   `riscv_csr.ret_value`.
//!
//! SBI SRST `system_reset` arrives as `KVM_EXIT_SYSTEM_EVENT` (`SHUTDOWN` / `RESET`).

use cvm_core::{Error, FeatureDef, FeatureRegisters, Result, VcpuInit, VmExit};
use kvm_bindings::{
    KVM_EXIT_RISCV_CSR, KVM_EXIT_RISCV_SBI, KVM_REG_RISCV, KVM_REG_RISCV_CORE, KVM_REG_SIZE_U64,
};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};

use crate::exit::{ArchExit, HaltMeaning, Native};
use crate::memory::Memory;
use crate::probe::HostCaps;

/// The default guest-physical address width.
pub const DEFAULT_ADDR_BITS: u8 = 40;
/// The narrowest G-stage KVM uses (Sv39x4) covers 41 bits.
const MIN_GSTAGE_BITS: u8 = 41;

/// `KVM_REG_RISCV_CORE` register id of word `index` of `struct kvm_riscv_core`
/// (0 = pc, 1 = ra, …, 10 = a0).
const fn core_reg(index: u64) -> u64 {
    (KVM_REG_RISCV as u64) | KVM_REG_SIZE_U64 | KVM_REG_RISCV_CORE as u64 | index
}

const PC: u64 = core_reg(0);
const A0: u64 = 10;

/// The G-stage width is not queryable; assume Sv39x4.
pub(crate) fn probe_host(_kvm: &Kvm, caps: &mut HostCaps) {
    caps.phys_bits = MIN_GSTAGE_BITS;
}

/// The widest guest-physical space (Sv39x4).
pub(crate) fn max_addr_bits(caps: &HostCaps) -> u8 {
    caps.phys_bits
}

/// The default width.
pub(crate) fn default_addr_bits(caps: &HostCaps) -> u8 {
    DEFAULT_ADDR_BITS.min(max_addr_bits(caps))
}

/// Checks a requested width (32..=41).
pub(crate) fn check_addr_bits(caps: &HostCaps, bits: u8) -> Result<()> {
    let max = max_addr_bits(caps);
    if bits < 32 || bits > max {
        return Err(Error::Unsupported(format!(
            "{bits}-bit guest-physical space: KVM here supports 32..={max} bits"
        )));
    }
    Ok(())
}

/// The ioctls `setup_vcpu` issues, for the VM's call counters.
pub(crate) const VCPU_SETUP_IOCTLS: &[&str] = &["KVM_SET_ONE_REG"];

/// No VM-wide feature registers are offered on this architecture yet (ID registers / ISA
/// extensions through ONE_REG are future work).
pub(crate) fn feature_defs(_kvm: &Kvm, _caps: &HostCaps) -> Vec<FeatureDef> {
    Vec::new()
}

/// `KVM_CREATE_VM`.
pub(crate) fn create_vm_fd(kvm: &Kvm, _addr_bits: u8) -> Result<VmFd> {
    kvm.create_vm().map_err(|e| Error::os("KVM_CREATE_VM", e))
}

/// No backend-owned window on riscv64.
pub(crate) fn reserved_window() -> Option<(u64, u64)> {
    None
}

/// Per-VM riscv64 state (none).
pub(crate) struct VmArch;

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

    /// Nothing to set up VM-wide.
    pub(crate) fn new(
        _kvm: &Kvm,
        _vm: &VmFd,
        _caps: &HostCaps,
        _mem: &mut Memory,
        _vcpus: u32,
        _addr_bits: u8,
    ) -> Result<Self> {
        Ok(Self)
    }

    /// PC and a0..a7 through `KVM_SET_ONE_REG`.
    pub(crate) fn setup_vcpu(
        &self,
        vcpu: &VcpuFd,
        _id: u32,
        init: &VcpuInit,
        _mem: &Memory,
        _features: &FeatureRegisters,
    ) -> Result<()> {
        set_reg(vcpu, PC, init.entry)?;
        for (i, a) in init.args.iter().enumerate() {
            set_reg(vcpu, core_reg(A0 + i as u64), *a)?;
        }
        Ok(())
    }
}

fn set_reg(vcpu: &VcpuFd, id: u64, v: u64) -> Result<()> {
    vcpu.set_one_reg(id, &v.to_le_bytes())
        .map(|_| ())
        .map_err(|e| Error::os("KVM_SET_ONE_REG", e))
}

/// riscv64 `HLT` exits are plain halts.
pub(crate) fn classify_halt(_vcpu: &VcpuFd, _core: &crate::vm::VmCore) -> Result<HaltMeaning> {
    Ok(HaltMeaning::Halt)
}

/// Not reachable on riscv64.
pub(crate) fn answer_halt_host_call(_vcpu: &VcpuFd, _ret: [u64; 2]) -> Result<()> {
    Err(Error::InvalidArgument(
        "no HLT host call is pending on riscv64".into(),
    ))
}

/// A `KVM_EXIT_HYPERCALL` as KVM reports it.
pub(crate) fn hypercall_exit(_vcpu: &VcpuFd, nr: u64, args: [u64; 6]) -> Result<VmExit> {
    Ok(VmExit::HostCall { nr, args })
}

/// Answers a `KVM_EXIT_HYPERCALL`: ret\[0\] → `kvm_run.hypercall.ret`.
pub(crate) fn answer_hypercall(vcpu: &mut VcpuFd, ret: [u64; 2]) -> Result<()> {
    // The pending exit is KVM_EXIT_HYPERCALL (the caller checked its record). Writing a union
    // field is safe; KVM reads `hypercall.ret` on the next KVM_RUN.
    vcpu.get_kvm_run().__bindgen_anon_1.hypercall.ret = ret[0];
    Ok(())
}

/// Answers `KVM_EXIT_RISCV_SBI`: `riscv_sbi.ret = [a0, a1]`.
pub(crate) fn answer_sbi(vcpu: &mut VcpuFd, ret: [u64; 2]) -> Result<()> {
    // The pending exit is KVM_EXIT_RISCV_SBI (recorded when it was returned); KVM copies
    // `riscv_sbi.ret` to a0/a1 on the next KVM_RUN.
    vcpu.get_kvm_run().__bindgen_anon_1.riscv_sbi.ret = ret;
    Ok(())
}

/// Answers `KVM_EXIT_RISCV_CSR`: `riscv_csr.ret_value = value`.
pub(crate) fn answer_csr(vcpu: &mut VcpuFd, value: u64) -> Result<()> {
    // The pending exit is KVM_EXIT_RISCV_CSR (recorded when it was returned); KVM writes
    // `ret_value` to the CSR instruction's rd on the next KVM_RUN.
    vcpu.get_kvm_run().__bindgen_anon_1.riscv_csr.ret_value = value;
    Ok(())
}

/// The guest PC (`KVM_GET_ONE_REG`); 0 if it cannot be read.
pub(crate) fn guest_pc(vcpu: &VcpuFd) -> u64 {
    let mut b = [0u8; 8];
    match vcpu.get_one_reg(PC, &mut b) {
        Ok(_) => u64::from_le_bytes(b),
        Err(_) => 0,
    }
}

/// `Resume::InjectAbort` on riscv64: refused; KVM has no user-space access-fault injection.
pub(crate) fn inject_abort(_vcpu: &VcpuFd) -> Result<()> {
    Err(Error::Unsupported(
        "Resume::InjectAbort: riscv64 KVM cannot inject an access fault from user space".into(),
    ))
}

/// `KVM_EXIT_RISCV_SBI` and `KVM_EXIT_RISCV_CSR`, read from `kvm_run`'s union.
pub(crate) fn arch_exit(vcpu: &mut VcpuFd, reason: u32) -> Option<ArchExit> {
    let run = vcpu.get_kvm_run();
    match reason {
        KVM_EXIT_RISCV_SBI => {
            // SAFETY: exit_reason is KVM_EXIT_RISCV_SBI, so `riscv_sbi` is the active member.
            let sbi = unsafe { run.__bindgen_anon_1.riscv_sbi };
            Some(ArchExit {
                exit: VmExit::HostCall {
                    nr: (sbi.extension_id << 32) | (sbi.function_id & 0xffff_ffff),
                    args: sbi.args,
                },
                native: Native::RiscvSbi,
            })
        }
        KVM_EXIT_RISCV_CSR => {
            // SAFETY: exit_reason is KVM_EXIT_RISCV_CSR, so `riscv_csr` is the active member.
            let csr = unsafe { run.__bindgen_anon_1.riscv_csr };
            Some(ArchExit {
                exit: VmExit::SysReg {
                    reg: csr.csr_num,
                    write: (csr.write_mask != 0).then_some(csr.new_value),
                    write_mask: csr.write_mask,
                },
                native: Native::RiscvCsr,
            })
        }
        _ => None,
    }
}
