//! The EL1 system registers the CPU holds and C5 "The A64 System Instruction Class":
//! MSR (immediate), hints, barriers, SYS/SYSL, MSR/MRS (register).

use super::decode::{bit, bits};
use super::{esr, Aarch64Cpu, Exit, Flow};

/// SCTLR_EL1 reset value: the Armv8.0 RES1 bits (29, 28, 23, 22, 20, 11); M, C, I, A, SA = 0.
pub(crate) const SCTLR_EL1_RESET: u64 = 0x30D0_0800;
/// SCTLR_EL1.M (stage-1 MMU enable).
const SCTLR_M: u64 = 1 << 0;
/// SCTLR_EL1.SA (SP alignment check enable for EL1).
pub(crate) const SCTLR_SA: u64 = 1 << 3;

/// The EL1 (and EL0-accessible) system registers the CPU holds. Accesses to any other register
/// exit with [`Exit::SysReg`].
///
/// All are plain storage: the CPU implements no stage-1 translation (writing SCTLR_EL1 with M=1
/// exits as UNDEFINED), no timers, no caches. `SpEl1` is not accessible to the guest through
/// MRS/MSR at EL1 (architecturally EL2-only); it is here for the RMM's REC state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum SysReg {
    /// SCTLR_EL1 (3,0,1,0,0).
    SctlrEl1,
    /// CPACR_EL1 (3,0,1,0,2).
    CpacrEl1,
    /// TTBR0_EL1 (3,0,2,0,0).
    Ttbr0El1,
    /// TTBR1_EL1 (3,0,2,0,1).
    Ttbr1El1,
    /// TCR_EL1 (3,0,2,0,2).
    TcrEl1,
    /// SPSR_EL1 (3,0,4,0,0).
    SpsrEl1,
    /// ELR_EL1 (3,0,4,0,1).
    ElrEl1,
    /// AFSR0_EL1 (3,0,5,1,0).
    Afsr0El1,
    /// AFSR1_EL1 (3,0,5,1,1).
    Afsr1El1,
    /// ESR_EL1 (3,0,5,2,0).
    EsrEl1,
    /// FAR_EL1 (3,0,6,0,0).
    FarEl1,
    /// PAR_EL1 (3,0,7,4,0).
    ParEl1,
    /// MAIR_EL1 (3,0,10,2,0).
    MairEl1,
    /// AMAIR_EL1 (3,0,10,3,0).
    AmairEl1,
    /// VBAR_EL1 (3,0,12,0,0); bits \[10:0\] are RES0 and ignored when vectoring.
    VbarEl1,
    /// CONTEXTIDR_EL1 (3,0,13,0,1).
    ContextidrEl1,
    /// TPIDR_EL1 (3,0,13,0,4).
    TpidrEl1,
    /// TPIDR_EL0 (3,3,13,0,2).
    TpidrEl0,
    /// TPIDRRO_EL0 (3,3,13,0,3).
    TpidrroEl0,
    /// SP_EL0 (3,0,4,1,0); the current SP when PSTATE.SP = 0.
    SpEl0,
    /// SP_EL1; the current SP when PSTATE.SP = 1 (EL1h).
    SpEl1,
}

impl SysReg {
    /// Number of registers (array size for the storage).
    pub(crate) const COUNT: usize = SysReg::SpEl1 as usize + 1;

    /// The guest-accessible register with encoding (op0, op1, CRn, CRm, op2), packed as
    /// `op0<<14 | op1<<11 | CRn<<7 | CRm<<3 | op2`.
    fn from_encoding(key: u32) -> Option<SysReg> {
        Some(match key {
            k if k == enc(3, 0, 1, 0, 0) => SysReg::SctlrEl1,
            k if k == enc(3, 0, 1, 0, 2) => SysReg::CpacrEl1,
            k if k == enc(3, 0, 2, 0, 0) => SysReg::Ttbr0El1,
            k if k == enc(3, 0, 2, 0, 1) => SysReg::Ttbr1El1,
            k if k == enc(3, 0, 2, 0, 2) => SysReg::TcrEl1,
            k if k == enc(3, 0, 4, 0, 0) => SysReg::SpsrEl1,
            k if k == enc(3, 0, 4, 0, 1) => SysReg::ElrEl1,
            k if k == enc(3, 0, 5, 1, 0) => SysReg::Afsr0El1,
            k if k == enc(3, 0, 5, 1, 1) => SysReg::Afsr1El1,
            k if k == enc(3, 0, 5, 2, 0) => SysReg::EsrEl1,
            k if k == enc(3, 0, 6, 0, 0) => SysReg::FarEl1,
            k if k == enc(3, 0, 7, 4, 0) => SysReg::ParEl1,
            k if k == enc(3, 0, 10, 2, 0) => SysReg::MairEl1,
            k if k == enc(3, 0, 10, 3, 0) => SysReg::AmairEl1,
            k if k == enc(3, 0, 12, 0, 0) => SysReg::VbarEl1,
            k if k == enc(3, 0, 13, 0, 1) => SysReg::ContextidrEl1,
            k if k == enc(3, 0, 13, 0, 4) => SysReg::TpidrEl1,
            k if k == enc(3, 3, 13, 0, 2) => SysReg::TpidrEl0,
            k if k == enc(3, 3, 13, 0, 3) => SysReg::TpidrroEl0,
            k if k == enc(3, 0, 4, 1, 0) => SysReg::SpEl0,
            _ => return None,
        })
    }
}

/// Packs a system-register encoding as `op0<<14 | op1<<11 | CRn<<7 | CRm<<3 | op2`
/// (the layout of instruction bits \[20:5\]).
const fn enc(op0: u32, op1: u32, crn: u32, crm: u32, op2: u32) -> u32 {
    (op0 << 14) | (op1 << 11) | (crn << 7) | (crm << 3) | op2
}

/// NZCV (3,3,4,2,0).
const NZCV: u32 = enc(3, 3, 4, 2, 0);
/// DAIF (3,3,4,2,1).
const DAIF: u32 = enc(3, 3, 4, 2, 1);
/// CurrentEL (3,0,4,2,2), read-only.
const CURRENT_EL: u32 = enc(3, 0, 4, 2, 2);
/// SPSel (3,0,4,2,0).
const SPSEL: u32 = enc(3, 0, 4, 2, 0);
/// CNTVCT_EL0 (3,3,14,0,2), read-only; reads the retired-instruction count.
const CNTVCT_EL0: u32 = enc(3, 3, 14, 0, 2);

impl Aarch64Cpu {
    /// System instructions: `1101010100 L op0 op1 CRn CRm op2 Rt` (C5.1 "System instruction
    /// class encoding overview").
    pub(crate) fn system(&mut self, insn: u32) -> Flow {
        let l = bit(insn, 21);
        let op0 = bits(insn, 20, 19);
        let op1 = bits(insn, 18, 16);
        let crn = bits(insn, 15, 12);
        let crm = bits(insn, 11, 8);
        let op2 = bits(insn, 7, 5);
        let rt = bits(insn, 4, 0);
        match (l, op0) {
            (false, 0) => match crn {
                0b0100 => self.msr_imm(op1, crm, op2, rt),
                0b0010 => Self::hint(op1, crm, op2, rt),
                0b0011 => Self::barrier(op1, op2, rt),
                _ => Flow::Undefined,
            },
            (true, 0) => Flow::Undefined,
            (_, 1) => self.sys(l, op1, crn, crm, op2, rt),
            _ => self.msr_mrs(l, op0, op1, crn, crm, op2, rt),
        }
    }

    /// C6.2.229 MSR (immediate): PSTATE field access. Supported fields: SPSel, DAIFSet, DAIFClr;
    /// the others belong to features this CPU does not implement.
    fn msr_imm(&mut self, op1: u32, crm: u32, op2: u32, rt: u32) -> Flow {
        if rt != 31 {
            return Flow::Undefined;
        }
        match (op1, op2) {
            (0b000, 0b101) => self.set_spsel(crm & 1 != 0),
            (0b011, 0b110) => self.set_daif(self.daif() | crm as u8),
            (0b011, 0b111) => self.set_daif(self.daif() & !(crm as u8)),
            _ => return Flow::Undefined,
        }
        Flow::Next
    }

    /// C6.2.135 HINT: `1101010100 0 00 011 0010 CRm op2 11111`. NOP, YIELD, SEV, SEVL and every
    /// hint of an unimplemented feature (BTI, PAC*SP, ESB, CSDB, ...) execute as NOP; WFE/WFI
    /// trap to EL2 (HCR_EL2.TWE/TWI set by the RMM).
    fn hint(op1: u32, crm: u32, op2: u32, rt: u32) -> Flow {
        if op1 != 0b011 || rt != 31 {
            return Flow::Undefined;
        }
        match (crm, op2) {
            (0, 0b010) => Flow::Exit(Exit::Wfx { wfe: true }),
            (0, 0b011) => Flow::Exit(Exit::Wfx { wfe: false }),
            _ => Flow::Next,
        }
    }

    /// Barriers: `1101010100 0 00 011 0011 CRm op2 11111` -- CLREX, DSB, DMB, ISB as NOPs (one
    /// in-order CPU, no caches, no exclusive monitor). SB, DSB nXS, TCOMMIT: UNDEFINED.
    fn barrier(op1: u32, op2: u32, rt: u32) -> Flow {
        if op1 != 0b011 || rt != 31 {
            return Flow::Undefined;
        }
        match op2 {
            // CLREX, DSB (CRm 0b0000 / 0b0100 are SSBB / PSSBB), DMB, ISB.
            0b010 | 0b100 | 0b101 | 0b110 => Flow::Next,
            _ => Flow::Undefined,
        }
    }

    /// SYS/SYSL (op0 = 1). Cache maintenance by VA/set-way and EL1 TLB invalidation execute as
    /// NOPs (no caches, no TLBs); everything else (AT, DC ZVA, ...) traps to EL2 with EC 0x18.
    fn sys(&mut self, l: bool, op1: u32, crn: u32, crm: u32, op2: u32, rt: u32) -> Flow {
        if !l {
            let nop = match (op1, crn, crm, op2) {
                // IC IALLUIS, IC IALLU, IC IVAU.
                (0, 7, 1, 0) | (0, 7, 5, 0) | (3, 7, 5, 1) => true,
                // DC IVAC, DC ISW, DC CSW, DC CISW, DC CVAC, DC CVAU, DC CIVAC.
                (0, 7, 6, 1) | (0, 7, 6, 2) | (0, 7, 10, 2) | (0, 7, 14, 2) => true,
                (3, 7, 10, 1) | (3, 7, 11, 1) | (3, 7, 14, 1) => true,
                // TLBI VMALLE1(IS), VAE1(IS), ASIDE1(IS), VAAE1(IS), VALE1(IS), VAALE1(IS).
                (0, 8, 3 | 7, 0 | 1 | 2 | 3 | 5 | 7) => true,
                _ => false,
            };
            if nop {
                return Flow::Next;
            }
        }
        self.trap_sysreg(1, op1, crn, crm, op2, rt, l)
    }

    /// EC 0x18 exit for an access the CPU does not handle itself.
    #[allow(clippy::too_many_arguments)]
    fn trap_sysreg(
        &self,
        op0: u32,
        op1: u32,
        crn: u32,
        crm: u32,
        op2: u32,
        rt: u32,
        read: bool,
    ) -> Flow {
        let iss = esr::sysreg_iss(
            op0 as u8, op1 as u8, crn as u8, crm as u8, op2 as u8, rt as u8, read,
        );
        Flow::Exit(Exit::SysReg {
            esr: esr::build(esr::EC_SYSREG, true, iss),
        })
    }

    /// C6.2.227 MRS / C6.2.230 MSR (register), op0 = 2 or 3.
    #[allow(clippy::too_many_arguments)]
    fn msr_mrs(
        &mut self,
        read: bool,
        op0: u32,
        op1: u32,
        crn: u32,
        crm: u32,
        op2: u32,
        rt: u32,
    ) -> Flow {
        let key = enc(op0, op1, crn, crm, op2);
        if read {
            let v = match key {
                NZCV => u64::from(self.nzcv()) << 28,
                DAIF => u64::from(self.daif()) << 6,
                CURRENT_EL => 1 << 2,
                SPSEL => u64::from(self.spsel()),
                CNTVCT_EL0 => self.instructions_retired(),
                _ => match SysReg::from_encoding(key) {
                    // SP_EL0 is UNDEFINED through MRS/MSR while it is the current SP.
                    Some(SysReg::SpEl0) if !self.spsel() => return Flow::Undefined,
                    Some(r) => self.sysreg(r),
                    None => return self.trap_sysreg(op0, op1, crn, crm, op2, rt, true),
                },
            };
            self.xw(rt, v);
            return Flow::Next;
        }
        let v = self.xr(rt);
        match key {
            NZCV => self.set_nzcv(((v >> 28) & 0xF) as u8),
            DAIF => self.set_daif(((v >> 6) & 0xF) as u8),
            SPSEL => self.set_spsel(v & 1 != 0),
            CURRENT_EL | CNTVCT_EL0 => return Flow::Undefined,
            _ => match SysReg::from_encoding(key) {
                Some(SysReg::SpEl0) if !self.spsel() => return Flow::Undefined,
                // No stage-1 translation: refuse to turn the MMU on rather than run untranslated.
                Some(SysReg::SctlrEl1) if v & SCTLR_M != 0 => return Flow::Undefined,
                Some(r) => self.set_sysreg(r, v),
                None => return self.trap_sysreg(op0, op1, crn, crm, op2, rt, false),
            },
        }
        Flow::Next
    }
}
