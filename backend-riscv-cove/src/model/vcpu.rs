//! TVM vCPUs and TVM_VCPU_RUN: complete the pending operation, run the guest CPU, handle what
//! the TSM handles itself, and report the exit exactly as spec/cove.md §4.1–4.2 (Salus
//! `src/vm_cpu.rs ActiveVmCpu::exit`, `src/vm.rs run_vcpu`, sbi-rs `TvmCpuRun` doc).
//!
//! | guest event | TSM action | exit to host (scause / stval / htval / htinst / scratch) |
//! |---|---|---|
//! | ECALL of BASE, COVG (except SHARE/UNSHARE), ATST, FWFT, HSM status | answered, sepc += 4 | none |
//! | ECALL COVG SHARE/UNSHARE, HSM HART_START, unknown EIDs | forwarded | 10 / 0 / 0 / 0 / a0..a7 (HART_START: a1, a2 masked) |
//! | ECALL SRST | fatal (vCPU off, VCPU_RUN returns 1) | 10 / 0 / 0 / 0 / a0..a7 |
//! | load/store fault in an MMIO region, decodable | MMIO | 21/23 / gpa & 3 / gpa >> 2 / Salus htinst with a0 / store: a0 = value |
//! | load/store fault in an MMIO region, other instruction | illegal instruction injected | none |
//! | fault in a confidential or shared region | host must map | 20/21/23 / gpa & 3 / gpa >> 2 / 0 |
//! | fault anywhere else, unhandled traps | fatal | original scause / 0 / 0 / 0 |
//! | WFI | sepc += 4 | 22 / instruction / 0 / 0 |
//! | SEED, TVM without Zkr | illegal instruction injected | none |
//! | SEED, Zkr, firmware policy | answered from the TSM DRBG (OPST = ES16) | none |
//! | SEED, Zkr, forward policy (model) | forwarded | 22 / instruction / 0 / 0 / a0 = new value, a1 = write mask |
//! | instruction budget used up | host timer interrupt | `1 << 63 | 5` |
//!
//! Traps the hardware would delegate to VS-mode (`hedeleg`: misaligned, access faults, illegal
//! instruction, breakpoint, ECALL from VU) are injected into the guest.

use std::collections::{BTreeMap, BTreeSet};

use super::atst;
use super::covg;
use super::cpu::{self, trap, Bus, BusFault, Exit, Rv64Cpu, Trap};
use super::pages::PhysMem;
use super::tvm::{Mapping, RegionKind, Tvm, ISA_SMNPM, ISA_ZKR};
use crate::abi::{
    self, base, fwft, hsm, htinst, reg, srst, SbiError, CSR_SEED, PAGE_SIZE, SEED_OPST_ES16,
};

/// Instructions one TVM_VCPU_RUN may retire before the TSM returns with a host timer
/// interrupt (the model's stand-in for the host's timer); the default of
/// [`ModelConfig::run_budget`](super::ModelConfig::run_budget).
pub const RUN_BUDGET: u64 = 2_000_000;
/// The WFI encoding.
const WFI: u32 = 0x1050_0073;
/// scause of a supervisor timer interrupt.
pub const HOST_TIMER_INTERRUPT: u64 = trap::CAUSE_INTERRUPT | 5;

/// vCPU power state (Salus `VmCpuStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VcpuStatus {
    /// Not started (or terminated).
    PoweredOff,
    /// May run.
    Runnable,
}

/// What the vCPU waits for from the host (completed on the next TVM_VCPU_RUN, Salus
/// `try_complete_pending_op` / `complete_pending_ecall`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    /// Nothing.
    None,
    /// MMIO load into `reg`: value from scratch a0, sign/zero-extended.
    MmioLoad {
        /// Destination register.
        reg: u8,
        /// Width.
        size: u8,
        /// Sign-extend.
        signed: bool,
        /// Instruction length.
        len: u8,
        /// Faulting address (for an injected access fault).
        gpa: u64,
    },
    /// MMIO store.
    MmioStore {
        /// Instruction length.
        len: u8,
        /// Faulting address.
        gpa: u64,
    },
    /// A forwarded ECALL: the host's scratch a0/a1 become the guest's a0/a1.
    Forwarded,
    /// COVG SHARE (`share`) / UNSHARE of `[gpa, gpa + len)`: scratch a0 = 0 accepts.
    Share {
        /// Start.
        gpa: u64,
        /// Length.
        len: u64,
        /// Share (true) or unshare.
        share: bool,
    },
    /// HSM HART_START of `target` at `pc` with `opaque`, forwarded with pc/opaque masked.
    HartStart {
        /// Target vCPU.
        target: u64,
        /// Start address.
        pc: u64,
        /// Opaque (a1 of the started hart).
        opaque: u64,
    },
    /// A forwarded SEED access: scratch a0 is the value read into `rd`.
    Seed {
        /// Destination register.
        rd: u8,
        /// Instruction length.
        len: u8,
        /// The instruction (for an injected illegal-instruction exception).
        insn: u32,
    },
}

/// One vCPU of a TVM.
#[derive(Debug, Clone)]
pub struct VcpuState {
    /// vCPU id.
    pub id: u64,
    /// Its state pages.
    pub state_pa: u64,
    /// The hart.
    pub cpu: Rv64Cpu,
    /// Power state.
    pub status: VcpuStatus,
    /// Pending host answer.
    pub pending: Pending,
    /// IMSIC guest-physical address (COVI SET_IMSIC_ADDR).
    pub imsic_gpa: Option<u64>,
    /// Bound to an IMSIC guest file (COVI BIND_IMSIC).
    pub bound: bool,
    /// External interrupt ids injected and not yet delivered.
    pub ext_pending: BTreeSet<u64>,
    /// External interrupts delivered into the guest.
    pub ext_delivered: u64,
}

impl VcpuState {
    /// A powered-off vCPU.
    pub fn new(id: u64, state_pa: u64) -> Self {
        Self {
            id,
            state_pa,
            cpu: Rv64Cpu::new(),
            status: VcpuStatus::PoweredOff,
            pending: Pending::None,
            imsic_gpa: None,
            bound: false,
            ext_pending: BTreeSet::new(),
            ext_delivered: 0,
        }
    }

    /// Powers on at `pc` with a0 = vCPU id, a1 = `arg`, scounteren = CY|TM|IR (Salus
    /// `VmCpuArchState::new`; SBI HSM HART_START: a0 = hartid, a1 = opaque).
    pub fn power_on(&mut self, pc: u64, arg: u64) {
        let mut c = Rv64Cpu::new();
        c.set_pc(pc);
        c.set_x(reg::A0, self.id);
        c.set_x(reg::A1, arg);
        c.set_csr(cpu::csr::SCOUNTEREN, 0b111);
        self.cpu = c;
        self.status = VcpuStatus::Runnable;
        self.pending = Pending::None;
    }
}

/// What the TSM reports to the host for one TVM_VCPU_RUN (spec/cove.md §4.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExitReport {
    /// Host scause.
    pub scause: u64,
    /// Host stval.
    pub stval: u64,
    /// NACL htval.
    pub htval: u64,
    /// NACL htinst.
    pub htinst: u64,
    /// NACL scratch GPRs written: (register, value).
    pub gprs: Vec<(u8, u64)>,
    /// The vCPU terminated (VCPU_RUN returns non-zero).
    pub terminated: bool,
}

/// The host's answers, read from the NACL scratch area before running.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostAnswer {
    /// Scratch a0.
    pub a0: u64,
    /// Scratch a1.
    pub a1: u64,
    /// Model extension: inject a fault instead of completing (abi
    /// `NACL_MODEL_INJECT_FAULT_OFFSET`).
    pub inject_fault: bool,
}

/// What a guest ECALL handler decided.
pub(crate) enum Ecall {
    /// Answer the guest now (a0 = error, a1 = value), sepc += 4, keep running.
    Ret(Result<u64, SbiError>),
    /// Forward to the host with the guest's a0..a7, waiting for `Pending`.
    Forward(Pending),
    /// Forward with these a0..a7 (masked values).
    ForwardRegs(Pending, [u64; 8]),
    /// Forward and terminate the vCPU (SRST).
    Fatal,
    /// HSM HART_STOP: power this vCPU off and tell the host (resumable for the VM).
    Stop,
    /// A guest buffer page is not mapped: report a guest page fault for it and re-execute the
    /// ECALL once the host mapped it.
    PageFault {
        /// The page.
        gpa: u64,
        /// Whether the TSM was going to write it.
        store: bool,
    },
}

struct TvmBus<'a> {
    map: &'a BTreeMap<u64, Mapping>,
    mem: &'a mut PhysMem,
}

impl TvmBus<'_> {
    fn pa(&self, addr: u64) -> Result<u64, BusFault> {
        let page = addr & !(PAGE_SIZE - 1);
        self.map
            .get(&page)
            .filter(|m| m.blocked_at.is_none())
            .map(|m| m.pa + (addr - page))
            .ok_or(BusFault::GuestPageFault)
    }
}

impl Bus for TvmBus<'_> {
    fn read(&mut self, addr: u64, size: u8) -> Result<u64, BusFault> {
        let pa = self.pa(addr)?;
        let mut b = [0u8; 8];
        let n = usize::from(size).min(8);
        self.mem
            .read(pa, &mut b[..n])
            .map_err(|_| BusFault::AccessFault)?;
        Ok(u64::from_le_bytes(b))
    }

    fn write(&mut self, addr: u64, size: u8, value: u64) -> Result<(), BusFault> {
        let pa = self.pa(addr)?;
        let n = usize::from(size).min(8);
        self.mem
            .write(pa, &value.to_le_bytes()[..n])
            .map_err(|_| BusFault::AccessFault)
    }

    fn fetch(&mut self, addr: u64) -> Result<u16, BusFault> {
        Ok(self.read(addr, 2)? as u16)
    }
}

fn advance(cpu: &mut Rv64Cpu, len: u8) {
    cpu.set_pc(cpu.pc().wrapping_add(u64::from(len)));
}

fn set_ret(cpu: &mut Rv64Cpu, r: Result<u64, SbiError>) {
    match r {
        Ok(v) => {
            cpu.set_x(reg::A0, 0);
            cpu.set_x(reg::A1, v);
        }
        Err(e) => {
            cpu.set_x(reg::A0, e.code() as u64);
            cpu.set_x(reg::A1, 0);
        }
    }
}

/// Completes the pending operation with the host's answer.
fn complete(tvm: &mut Tvm, v: &mut VcpuState, ans: HostAnswer) {
    let pending = std::mem::replace(&mut v.pending, Pending::None);
    let cpu = &mut v.cpu;
    match pending {
        Pending::None => {}
        Pending::MmioLoad {
            reg,
            size,
            signed,
            len,
            gpa,
        } => {
            if ans.inject_fault {
                cpu.inject_exception(trap::CAUSE_LOAD_ACCESS, gpa);
            } else {
                // Salus `try_complete_pending_op`: extend per opcode, write rd, advance sepc.
                let val = if signed {
                    cvm_core::sign_extend(ans.a0, size)
                } else {
                    cvm_core::mask_to_size(ans.a0, size)
                };
                cpu.set_x(reg, val);
                advance(cpu, len);
            }
        }
        Pending::MmioStore { len, gpa } => {
            if ans.inject_fault {
                cpu.inject_exception(trap::CAUSE_STORE_ACCESS, gpa);
            } else {
                advance(cpu, len);
            }
        }
        Pending::Forwarded => {
            // RFC 21/48: the host writes a0 = error, a1 = value; the TSM advances sepc.
            cpu.set_x(reg::A0, ans.a0);
            cpu.set_x(reg::A1, ans.a1);
            advance(cpu, 4);
        }
        Pending::Share { gpa, len, share } => {
            // Salus `complete_pending_ecall`: A0 = 0 accepts, anything else rejects.
            if ans.a0 == 0 {
                set_ret(cpu, covg::apply_share(tvm, gpa, len, share).map(|_| 0));
            } else {
                cpu.set_x(reg::A0, ans.a0);
                cpu.set_x(reg::A1, 0);
            }
            advance(cpu, 4);
        }
        Pending::HartStart { target, pc, opaque } => {
            if ans.a0 == 0 {
                match tvm.vcpus.get_mut(&target) {
                    Some(t) if t.status == VcpuStatus::PoweredOff => {
                        t.power_on(pc, opaque);
                        set_ret(cpu, Ok(0));
                    }
                    _ => set_ret(cpu, Err(SbiError::AlreadyAvailable)),
                }
            } else {
                cpu.set_x(reg::A0, ans.a0);
                cpu.set_x(reg::A1, 0);
            }
            advance(cpu, 4);
        }
        Pending::Seed { rd, len, insn } => {
            if ans.inject_fault {
                cpu.inject_exception(trap::CAUSE_ILLEGAL_INSTRUCTION, u64::from(insn));
            } else {
                // seed is a 32-bit CSR; RV64 reads zero-extend (Crypto Vol. I §4.1).
                cpu.set_x(rd, ans.a0 & 0xffff_ffff);
                advance(cpu, len);
            }
        }
    }
}

fn args(cpu: &Rv64Cpu) -> [u64; 6] {
    [10u8, 11, 12, 13, 14, 15].map(|r| cpu.x(r))
}

/// BASE, HSM, SRST, FWFT and dispatch to COVG/ATST; unknown extensions are forwarded.
fn ecall(tvm: &mut Tvm, mem: &mut PhysMem, v: &mut VcpuState) -> Ecall {
    let eid = v.cpu.x(reg::A7);
    let fid = v.cpu.x(reg::A6);
    let a = args(&v.cpu);
    let (Ok(eid), Ok(fid)) = (u32::try_from(eid), u32::try_from(fid)) else {
        return Ecall::Ret(Err(SbiError::NotSupported));
    };
    match eid {
        abi::EID_BASE => Ecall::Ret(match fid {
            base::GET_SPEC_VERSION => Ok(2 << 24),
            base::GET_IMPL_ID | base::GET_IMPL_VERSION => Ok(0),
            // Salus `handle_base_msg`: COVG (and the other TSM-handled extensions) probe as
            // present for TVM vCPUs; forwarded extensions are the host's business.
            base::PROBE_EXTENSION => Ok(u64::from(matches!(
                u32::try_from(a[0]).unwrap_or(0),
                abi::EID_BASE
                    | abi::EID_COVG
                    | abi::EID_ATST
                    | abi::EID_HSM
                    | abi::EID_SRST
                    | abi::EID_FWFT
            ))),
            4..=6 => Ok(0),
            _ => Err(SbiError::NotSupported),
        }),
        abi::EID_COVG => covg::handle(tvm, v, fid, a),
        abi::EID_ATST => atst::handle(tvm, mem, fid, a),
        abi::EID_FWFT => Ecall::Ret(fwft_call(tvm, v, fid, a)),
        abi::EID_HSM => hsm_call(tvm, v, fid, a),
        abi::EID_SRST => {
            if fid == srst::SYSTEM_RESET && a[0] <= srst::TYPE_WARM_REBOOT {
                // Salus: SRST is a FatalEcall — forwarded, the vCPU terminates.
                Ecall::Fatal
            } else if fid == srst::SYSTEM_RESET {
                Ecall::Ret(Err(SbiError::InvalidParam))
            } else {
                Ecall::Ret(Err(SbiError::NotSupported))
            }
        }
        // Host-only extensions are not callable from a TVM (Salus: COVH/COVI/NACL from a TVM
        // are NOT_SUPPORTED).
        abi::EID_COVH | abi::EID_COVI | abi::EID_NACL | abi::EID_CVM_MODEL => {
            Ecall::Ret(Err(SbiError::NotSupported))
        }
        _ => Ecall::Forward(Pending::Forwarded),
    }
}

/// SBI FWFT for POINTER_MASKING_PMLEN (riscv-sbi-doc `src/ext-firmware-features.adoc`): the
/// implementation picks the smallest supported PMLEN ≥ the request (7 or 16 on RV64,
/// Privileged spec `PMM`), INVALID_PARAM if none; NOT_SUPPORTED when the TVM lacks Smnpm
/// (KVM: guest Smnpm is enabled through FWFT, spec/cove.md §7.2).
fn fwft_call(tvm: &Tvm, v: &mut VcpuState, fid: u32, a: [u64; 6]) -> Result<u64, SbiError> {
    if a[0] != fwft::POINTER_MASKING_PMLEN {
        return Err(SbiError::NotSupported);
    }
    if !tvm.isa.has(ISA_SMNPM) {
        return Err(SbiError::NotSupported);
    }
    match fid {
        fwft::SET => {
            if a[2] & !1 != 0 {
                return Err(SbiError::InvalidParam);
            }
            let pmlen = match a[1] {
                0 => 0,
                1..=7 => 7,
                8..=16 => 16,
                _ => return Err(SbiError::InvalidParam),
            };
            v.cpu.set_pmlen(pmlen);
            Ok(0)
        }
        fwft::GET => Ok(u64::from(v.cpu.pmlen())),
        _ => Err(SbiError::NotSupported),
    }
}

/// HSM (SBI spec "Hart State Management"): HART_START is checked and forwarded with the start
/// address and opaque masked (Salus forwards the HSM call to the host with PC/A1 masked);
/// HART_STOP powers the calling vCPU off and is forwarded so the host stops running it;
/// GET_STATUS is answered by the TSM.
fn hsm_call(tvm: &Tvm, v: &VcpuState, fid: u32, a: [u64; 6]) -> Ecall {
    match fid {
        hsm::HART_START => match tvm.vcpus.get(&a[0]) {
            None if a[0] == v.id => Ecall::Ret(Err(SbiError::AlreadyAvailable)),
            None => Ecall::Ret(Err(SbiError::InvalidParam)),
            Some(t) if t.status != VcpuStatus::PoweredOff => {
                Ecall::Ret(Err(SbiError::AlreadyAvailable))
            }
            Some(_) => Ecall::ForwardRegs(
                Pending::HartStart {
                    target: a[0],
                    pc: a[1],
                    opaque: a[2],
                },
                [a[0], 0, 0, 0, 0, 0, u64::from(fid), u64::from(abi::EID_HSM)],
            ),
        },
        hsm::HART_STOP => Ecall::Stop,
        hsm::HART_GET_STATUS => Ecall::Ret(if a[0] == v.id {
            Ok(hsm::STATUS_STARTED)
        } else {
            match tvm.vcpus.get(&a[0]) {
                Some(t) if t.status == VcpuStatus::Runnable => Ok(hsm::STATUS_STARTED),
                Some(_) => Ok(hsm::STATUS_STOPPED),
                None => Err(SbiError::InvalidParam),
            }
        }),
        _ => Ecall::Ret(Err(SbiError::NotSupported)),
    }
}

fn guest_regs(cpu: &Rv64Cpu) -> Vec<(u8, u64)> {
    (10u8..=17).map(|r| (r, cpu.x(r))).collect()
}

fn fatal(v: &mut VcpuState, scause: u64, gprs: Vec<(u8, u64)>) -> ExitReport {
    v.status = VcpuStatus::PoweredOff;
    v.pending = Pending::None;
    ExitReport {
        scause,
        terminated: true,
        gprs,
        ..ExitReport::default()
    }
}

fn fault_report(scause: u64, gpa: u64) -> ExitReport {
    ExitReport {
        scause,
        stval: gpa & 3,
        htval: gpa >> 2,
        ..ExitReport::default()
    }
}

/// Handles one trap; `None` = keep running.
fn handle_trap(tvm: &mut Tvm, mem: &mut PhysMem, v: &mut VcpuState, t: Trap) -> Option<ExitReport> {
    match t.scause {
        trap::CAUSE_ECALL_VS => match ecall(tvm, mem, v) {
            Ecall::Ret(r) => {
                set_ret(&mut v.cpu, r);
                advance(&mut v.cpu, 4);
                None
            }
            Ecall::Forward(p) => {
                v.pending = p;
                Some(ExitReport {
                    scause: t.scause,
                    gprs: guest_regs(&v.cpu),
                    ..ExitReport::default()
                })
            }
            Ecall::ForwardRegs(p, regs) => {
                v.pending = p;
                Some(ExitReport {
                    scause: t.scause,
                    gprs: (10u8..=17).zip(regs).collect(),
                    ..ExitReport::default()
                })
            }
            Ecall::Fatal => {
                let gprs = guest_regs(&v.cpu);
                Some(fatal(v, t.scause, gprs))
            }
            Ecall::Stop => {
                // SBI HSM HART_STOP never returns to the caller: the hart is powered off and
                // the host (which handles HSM, RFC 21/48) is told, like HART_START, so it stops
                // scheduling the vCPU. A later HART_START powers it on again.
                let gprs = guest_regs(&v.cpu);
                v.status = VcpuStatus::PoweredOff;
                v.pending = Pending::None;
                Some(ExitReport {
                    scause: t.scause,
                    gprs,
                    ..ExitReport::default()
                })
            }
            Ecall::PageFault { gpa, store } => {
                let cause = if store {
                    trap::CAUSE_STORE_GUEST_PAGE_FAULT
                } else {
                    trap::CAUSE_LOAD_GUEST_PAGE_FAULT
                };
                Some(fault_report(cause, gpa))
            }
        },
        trap::CAUSE_FETCH_GUEST_PAGE_FAULT
        | trap::CAUSE_LOAD_GUEST_PAGE_FAULT
        | trap::CAUSE_STORE_GUEST_PAGE_FAULT => {
            // Fault address = (htval << 2) | (stval & 3) (spec-2023 enum Exception comments).
            let gpa = (t.htval << 2) | (t.stval & 3);
            match tvm.region_of(gpa, 1).map(|r| r.kind) {
                Some(RegionKind::Mmio) if t.scause != trap::CAUSE_FETCH_GUEST_PAGE_FAULT => {
                    // Salus `MmioOperation::from_instruction`: only plain loads/stores (and
                    // their compressed forms); anything else → illegal instruction.
                    let Some(acc) = cpu::decode_mmio(t.insn) else {
                        v.cpu
                            .inject_exception(trap::CAUSE_ILLEGAL_INSTRUCTION, u64::from(t.insn));
                        return None;
                    };
                    let Some(hti) = htinst::for_access(acc.is_store, acc.size, acc.signed) else {
                        v.cpu
                            .inject_exception(trap::CAUSE_ILLEGAL_INSTRUCTION, u64::from(t.insn));
                        return None;
                    };
                    let mut r = fault_report(t.scause, gpa);
                    r.htinst = hti;
                    if acc.is_store {
                        // Store value in scratch a0, truncated to the access width.
                        r.gprs =
                            vec![(reg::A0, cvm_core::mask_to_size(v.cpu.x(acc.reg), acc.size))];
                        v.pending = Pending::MmioStore { len: acc.len, gpa };
                    } else {
                        v.pending = Pending::MmioLoad {
                            reg: acc.reg,
                            size: acc.size,
                            signed: acc.signed,
                            len: acc.len,
                            gpa,
                        };
                    }
                    Some(r)
                }
                Some(RegionKind::Confidential | RegionKind::Shared) => {
                    Some(fault_report(t.scause, gpa))
                }
                // Salus `run_vcpu`: faults in unmapped space are UnhandledTrap.
                _ => Some(fatal(v, t.scause, Vec::new())),
            }
        }
        trap::CAUSE_VIRTUAL_INSTRUCTION => {
            if t.insn == WFI {
                advance(&mut v.cpu, t.insn_len);
                return Some(ExitReport {
                    scause: t.scause,
                    stval: u64::from(t.insn),
                    ..ExitReport::default()
                });
            }
            match cpu::decode_csr(t.insn) {
                Some(acc) if acc.csr == CSR_SEED => seed(tvm, v, t, acc),
                _ => {
                    v.cpu
                        .inject_exception(trap::CAUSE_ILLEGAL_INSTRUCTION, u64::from(t.insn));
                    None
                }
            }
        }
        // hedeleg: exceptions delegated to VS-mode are the guest's own.
        trap::CAUSE_FETCH_ACCESS
        | trap::CAUSE_ILLEGAL_INSTRUCTION
        | trap::CAUSE_BREAKPOINT
        | trap::CAUSE_LOAD_MISALIGNED
        | trap::CAUSE_LOAD_ACCESS
        | trap::CAUSE_STORE_MISALIGNED
        | trap::CAUSE_STORE_ACCESS
        | trap::CAUSE_ECALL_VU
        | 0 => {
            v.cpu.inject_exception(t.scause, t.stval);
            None
        }
        other => Some(fatal(v, other, Vec::new())),
    }
}

/// SEED (Zkr, Crypto Extensions Vol. I §4.1/§4.3; KVM `seed_csr_rmw`, spec/cove.md §7.1).
fn seed(tvm: &mut Tvm, v: &mut VcpuState, t: Trap, acc: cpu::CsrAccess) -> Option<ExitReport> {
    if !tvm.isa.has(ISA_ZKR) {
        // KVM_INSN_ILLEGAL_TRAP when the vCPU ISA lacks Zkr.
        v.cpu
            .inject_exception(trap::CAUSE_ILLEGAL_INSTRUCTION, u64::from(t.insn));
        return None;
    }
    if tvm.isa.forward_seed {
        // KVM `csr_insn`: CSRRW: mask = -1, new = rs1; CSRRS: mask = rs1, new = -1;
        // CSRRC: mask = rs1, new = 0 (immediate forms with uimm).
        let src = match acc.src {
            cpu::CsrSrc::Reg(r) => v.cpu.x(r),
            cpu::CsrSrc::Imm(i) => u64::from(i),
        };
        let (new, mask) = match acc.op {
            cpu::CsrOp::Rw => (src, u64::MAX),
            cpu::CsrOp::Rs => (u64::MAX, src),
            cpu::CsrOp::Rc => (0, src),
        };
        v.pending = Pending::Seed {
            rd: acc.rd,
            len: t.insn_len,
            insn: t.insn,
        };
        return Some(ExitReport {
            scause: t.scause,
            stval: u64::from(t.insn),
            gprs: vec![(reg::A0, new), (reg::A1, mask)],
            ..ExitReport::default()
        });
    }
    // The TSM answers from its own entropy source: OPST = ES16 with 16 bits of entropy.
    let value = SEED_OPST_ES16 | u64::from(tvm.drbg.next16());
    v.cpu.set_x(acc.rd, value);
    advance(&mut v.cpu, t.insn_len);
    None
}

/// TVM_VCPU_RUN for vCPU `v` (taken out of `tvm.vcpus` by the caller), retiring at most
/// `budget` instructions (at least 1) before a host timer interrupt.
pub fn run(
    tvm: &mut Tvm,
    mem: &mut PhysMem,
    v: &mut VcpuState,
    ans: HostAnswer,
    budget: u64,
) -> ExitReport {
    let budget = budget.max(1);
    complete(tvm, v, ans);
    // External interrupts injected through COVI (only allowed ones were queued).
    if let Some(&id) = v.ext_pending.iter().next() {
        if v.cpu.inject_interrupt(9) {
            v.ext_pending.remove(&id);
            v.ext_delivered += 1;
        }
    }
    let start = v.cpu.instructions_retired();
    // Traps the TSM handles itself retire nothing; each counts as one unit of budget so a
    // guest trap loop cannot keep the TSM busy forever.
    let mut handled = 0u64;
    loop {
        let used = v
            .cpu
            .instructions_retired()
            .wrapping_sub(start)
            .saturating_add(handled);
        if used >= budget {
            return ExitReport {
                scause: HOST_TIMER_INTERRUPT,
                ..ExitReport::default()
            };
        }
        let exit = {
            let mut bus = TvmBus { map: &tvm.map, mem };
            v.cpu.run(&mut bus, budget - used)
        };
        match exit {
            Exit::Budget => {
                return ExitReport {
                    scause: HOST_TIMER_INTERRUPT,
                    ..ExitReport::default()
                }
            }
            Exit::Trap(t) => {
                if let Some(r) = handle_trap(tvm, mem, v, t) {
                    return r;
                }
                handled += 1;
            }
        }
    }
}
