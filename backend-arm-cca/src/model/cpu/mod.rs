//! AArch64 guest CPU interpreter for the in-process RMM model.
//!
//! [`Aarch64Cpu`] interprets a subset of A64 at EL1 with the stage-1 MMU off (`SCTLR_EL1.M == 0`,
//! so VA == IPA and every data access is Device-nGnRnE). Memory is reached through a [`Bus`]
//! that the RMM model implements over the realm's stage 2. Everything a realm does that needs
//! EL2 (stage-2 aborts, SMC, HVC, WFI/WFE, trapped system-register accesses) leaves the
//! interpreter as an [`Exit`]; everything that architecturally stays at EL1 (alignment faults,
//! stage-1 address size faults for addresses beyond [`PA_BITS`], SVC, BRK, PC/SP alignment
//! faults) is taken to EL1 in place.
//!
//! Anything outside the supported set, and every unallocated or reserved encoding, exits with
//! [`Exit::Undefined`]; the interpreter never guesses. Nothing a guest does can panic the host,
//! and the run loop does not allocate.
//!
//! Layout: `decode` (shared pseudocode helpers), `dp` (data processing), `branch` (branches,
//! exception generation), `ldst` (loads and stores), `sysreg` ([`SysReg`] and the system
//! instruction class) and [`syndrome`] (ESR encodings, re-exported as [`esr`]).
//!
//! Supported A64 (everything else is [`Exit::Undefined`]):
//! - Data processing (immediate): ADR, ADRP; ADD/ADDS/SUB/SUBS (CMP, CMN, MOV to/from SP);
//!   AND/ORR/EOR/ANDS (TST, MOV bitmask); MOVN/MOVZ/MOVK; SBFM/BFM/UBFM (ASR/LSL/LSR, SXT*,
//!   UXT*, SBFX/UBFX/BFI/BFXIL...); EXTR (ROR).
//! - Data processing (register): AND/BIC/ORR/ORN/EOR/EON/ANDS/BICS (shifted, incl. ROR);
//!   ADD/SUB/ADDS/SUBS (shifted and extended register); ADC/ADCS/SBC/SBCS; CCMN/CCMP (register
//!   and immediate); CSEL/CSINC/CSINV/CSNEG; UDIV/SDIV, LSLV/LSRV/ASRV/RORV; RBIT, REV16, REV32,
//!   REV, CLZ, CLS; MADD/MSUB, SMADDL/SMSUBL/UMADDL/UMSUBL, SMULH/UMULH.
//! - Branches: B, BL, B.cond, CBZ/CBNZ, TBZ/TBNZ, BR, BLR, RET, ERET (to EL1t/EL1h).
//! - Exception generation: SVC and BRK (taken to EL1), HVC ([`Exit::Hvc`]), SMC ([`Exit::Smc`]).
//! - System: hints as NOPs except WFI/WFE ([`Exit::Wfx`]); CLREX/DSB/DMB/ISB as NOPs;
//!   MSR SPSel/DAIFSet/DAIFClr; MRS/MSR of [`SysReg`], NZCV, DAIF, SPSel, CurrentEL (RO),
//!   CNTVCT_EL0 (RO, = retired instructions); IC/DC maintenance and EL1 TLBI as NOPs; every
//!   other MRS/MSR/SYS/SYSL traps as [`Exit::SysReg`].
//! - Loads/stores (X/W registers only): LDR/STR/LDRB/STRB/LDRH/STRH/LDRSB/LDRSH/LDRSW/PRFM with
//!   unsigned offset, unscaled (LDUR/STUR...), pre-index, post-index, register offset
//!   (UXTW/LSL/SXTW/SXTX, optional scale) and literal; LDP/STP/LDPSW/LDNP/STNP (signed offset,
//!   pre-index, post-index).

mod branch;
mod decode;
mod dp;
mod ldst;
pub mod syndrome;
mod sysreg;
#[cfg(test)]
mod tests;

pub use self::syndrome as esr;
pub use self::sysreg::SysReg;

/// Bits of physical address the PE implements (ID_AA64MMFR0_EL1.PARange = 0b0101, 48 bits, as
/// the backend's feature registers report). With stage 1 disabled (VA == PA), an address with a
/// bit set at or above it takes a level-0 Address size fault at stage 1, to EL1, and never
/// reaches stage 2 (Arm ARM D8 "Translation process", stage 1 disabled: pseudocode
/// `AArch64.S1DisabledOutput` checks the VA against `AArch64.PAMax()`).
pub const PA_BITS: u32 = 48;

/// Whether `addr` is inside the PA space (see [`PA_BITS`]).
#[inline]
pub(crate) const fn pa_in_range(addr: u64) -> bool {
    addr >> PA_BITS == 0
}

/// What the CPU sees of memory: the RMM model implements it over the realm's stage-2 (RTT + granules).
pub trait Bus {
    /// Little-endian load of `size` (1, 2, 4 or 8) bytes at IPA `addr`.
    fn read(&mut self, addr: u64, size: u8) -> Result<u64, BusFault>;
    /// Little-endian store of the low `size` bytes of `value` at IPA `addr`.
    fn write(&mut self, addr: u64, size: u8, value: u64) -> Result<(), BusFault>;
    /// Instruction fetch of 4 bytes at `addr`.
    fn fetch(&mut self, addr: u64) -> Result<u32, BusFault>;
}

/// A stage-2 fault reported by the [`Bus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusFault {
    /// Stage-2 translation fault; the walk stopped at `level` (DFSC/IFSC = 0x04 + level).
    Translation {
        /// Level (0..=3) of the RTT walk at which the translation failed.
        level: u8,
    },
    /// Synchronous external abort (DFSC 0x10).
    External,
}

impl BusFault {
    /// The DFSC/IFSC value for this fault (D17.2.40 "ISS encoding for an exception from a Data
    /// Abort": 0b0001LL translation fault level LL, 0b010000 synchronous external abort).
    pub fn fsc(self) -> u8 {
        match self {
            BusFault::Translation { level } => esr::DFSC_TRANSLATION_L0 | (level & 3),
            BusFault::External => esr::DFSC_SEA,
        }
    }
}

/// Why `run`/`step` stopped. PC conventions follow the architecture's preferred return address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Data abort to EL2 (EC 0x24). PC still points at the faulting instruction. `esr` is the full
    /// ESR_EL2 value (EC, IL=1, ISS with ISV/SAS/SSE/SRT/SF/AR=0/WnR/DFSC for the decoded
    /// instruction, ISV=0 for forms the architecture does not syndrome: writeback (pre/post-index),
    /// LDP/STP, etc.); `far` = faulting address (VA == IPA, MMU off); `hpfar` = (ipa >> 12) << 4
    /// (HPFAR_EL2.FIPA).
    DataAbort {
        /// ESR_EL2.
        esr: u64,
        /// FAR_EL2.
        far: u64,
        /// HPFAR_EL2.
        hpfar: u64,
    },
    /// Instruction abort to EL2 (EC 0x20), PC at the instruction.
    InstructionAbort {
        /// ESR_EL2.
        esr: u64,
        /// FAR_EL2 (the PC of the instruction).
        far: u64,
        /// HPFAR_EL2.
        hpfar: u64,
    },
    /// SMC trapped to EL2 (EC 0x17, ISS = imm16). PC still points AT the SMC (preferred return
    /// for a trapped SMC); the handler advances it.
    Smc {
        /// The SMC immediate.
        imm: u16,
    },
    /// HVC (EC 0x16, ISS = imm16). PC already points at the next instruction.
    Hvc {
        /// The HVC immediate.
        imm: u16,
    },
    /// WFI/WFE trapped (EC 0x01). PC at the instruction; the handler advances it.
    Wfx {
        /// `true` for WFE, `false` for WFI.
        wfe: bool,
    },
    /// MRS/MSR/SYS access trapped to EL2 (EC 0x18) for a register the CPU does not hold itself
    /// (notably every ID register). `esr` has the ISS (Op0, Op2, Op1, CRn, Rt, CRm, Direction:
    /// 1 = read/MRS). PC at the instruction; the handler writes Rt (use `set_x`, XZR-aware) and
    /// advances PC.
    SysReg {
        /// ESR_EL2 (EC 0x18, IL=1).
        esr: u64,
    },
    /// An instruction outside the supported set, or an unallocated/UNDEFINED encoding. PC at the
    /// instruction.
    Undefined {
        /// Address of the instruction.
        pc: u64,
        /// The instruction word.
        insn: u32,
    },
    /// `run` executed `budget` instructions without another exit.
    Budget,
}

/// Outcome of executing one instruction (internal to the interpreter).
pub(crate) enum Flow {
    /// Completed; PC advances by 4.
    Next,
    /// Completed; PC becomes the target.
    Branch(u64),
    /// An exception was taken to EL1; PC/PSTATE already updated.
    Exception,
    /// Exit to EL2 with PC left at the instruction.
    Exit(Exit),
    /// Exit to EL2 after the instruction completed (PC advances by 4), e.g. HVC.
    ExitAfter(Exit),
    /// Unsupported or UNDEFINED encoding.
    Undefined,
}

/// SPSR/PSTATE.M value for EL1 using SP_EL0 (EL1t).
pub(crate) const M_EL1T: u64 = 0b0100;
/// SPSR/PSTATE.M value for EL1 using SP_EL1 (EL1h).
pub(crate) const M_EL1H: u64 = 0b0101;

/// An AArch64 vCPU executing at EL1 with the MMU off.
///
/// Holds X0..X30, SP_EL0, SP_EL1, PC, PSTATE (NZCV, DAIF, SPSel; EL is always 1) and the EL1
/// system registers listed in [`SysReg`].
#[derive(Debug, Clone)]
pub struct Aarch64Cpu {
    x: [u64; 31],
    sp_el0: u64,
    sp_el1: u64,
    pc: u64,
    /// PSTATE.{N,Z,C,V} in bits 3..0.
    nzcv: u8,
    /// PSTATE.{D,A,I,F} in bits 3..0.
    daif: u8,
    /// PSTATE.SP (true: SP_EL1 / EL1h).
    spsel: bool,
    sysregs: [u64; SysReg::COUNT],
    retired: u64,
}

impl Default for Aarch64Cpu {
    fn default() -> Self {
        Self::new()
    }
}

impl Aarch64Cpu {
    /// A CPU in reset state: EL1h, MMU off (SCTLR_EL1.M=0), all GPRs 0, DAIF masked, PC 0.
    pub fn new() -> Self {
        let mut cpu = Self {
            x: [0; 31],
            sp_el0: 0,
            sp_el1: 0,
            pc: 0,
            nzcv: 0,
            daif: 0xF,
            spsel: true,
            sysregs: [0; SysReg::COUNT],
            retired: 0,
        };
        cpu.sysregs[SysReg::SctlrEl1 as usize] = sysreg::SCTLR_EL1_RESET;
        cpu
    }

    /// Reads X`n` (n = 0..=30); 31 (and anything larger) reads 0 (XZR).
    #[inline]
    pub fn x(&self, n: u8) -> u64 {
        self.x.get(usize::from(n)).copied().unwrap_or(0)
    }

    /// Writes X`n`; writes to 31 (XZR) are ignored.
    #[inline]
    pub fn set_x(&mut self, n: u8, v: u64) {
        if let Some(r) = self.x.get_mut(usize::from(n)) {
            *r = v;
        }
    }

    /// Program counter.
    #[inline]
    pub fn pc(&self) -> u64 {
        self.pc
    }

    /// Sets the program counter.
    #[inline]
    pub fn set_pc(&mut self, pc: u64) {
        self.pc = pc;
    }

    /// The current stack pointer (SP_EL1 in EL1h, SP_EL0 in EL1t).
    #[inline]
    pub fn sp(&self) -> u64 {
        if self.spsel {
            self.sp_el1
        } else {
            self.sp_el0
        }
    }

    /// Writes the current stack pointer.
    #[inline]
    pub fn set_sp(&mut self, v: u64) {
        if self.spsel {
            self.sp_el1 = v;
        } else {
            self.sp_el0 = v;
        }
    }

    /// PSTATE.NZCV in bits 3..0 (N=3, Z=2, C=1, V=0).
    #[inline]
    pub fn nzcv(&self) -> u8 {
        self.nzcv
    }

    /// Sets PSTATE.NZCV from bits 3..0.
    #[inline]
    pub fn set_nzcv(&mut self, v: u8) {
        self.nzcv = v & 0xF;
    }

    /// PSTATE.DAIF in bits 3..0 (D=3, A=2, I=1, F=0).
    pub fn daif(&self) -> u8 {
        self.daif
    }

    /// Sets PSTATE.DAIF from bits 3..0.
    pub fn set_daif(&mut self, v: u8) {
        self.daif = v & 0xF;
    }

    /// PSTATE in SPSR_EL1 format: NZCV \[31:28\], DAIF \[9:6\], M \[3:0\] (0b0101 EL1h / 0b0100 EL1t).
    pub fn pstate(&self) -> u64 {
        (u64::from(self.nzcv) << 28)
            | (u64::from(self.daif) << 6)
            | if self.spsel { M_EL1H } else { M_EL1T }
    }

    /// Sets PSTATE from an SPSR_EL1-format value. Only NZCV, DAIF and M\[0\] (SPSel) are used; the
    /// exception level stays EL1.
    pub fn set_pstate(&mut self, spsr: u64) {
        self.nzcv = ((spsr >> 28) & 0xF) as u8;
        self.daif = ((spsr >> 6) & 0xF) as u8;
        self.spsel = spsr & 1 != 0;
    }

    /// Reads a held EL1 system register.
    pub fn sysreg(&self, r: SysReg) -> u64 {
        match r {
            SysReg::SpEl0 => self.sp_el0,
            SysReg::SpEl1 => self.sp_el1,
            _ => self.sysregs[r as usize],
        }
    }

    /// Writes a held EL1 system register (no masking, no side effects; host/RMM view).
    pub fn set_sysreg(&mut self, r: SysReg, v: u64) {
        match r {
            SysReg::SpEl0 => self.sp_el0 = v,
            SysReg::SpEl1 => self.sp_el1 = v,
            _ => self.sysregs[r as usize] = v,
        }
    }

    /// Instructions completed so far (also what CNTVCT_EL0 reads).
    pub fn instructions_retired(&self) -> u64 {
        self.retired
    }

    /// Executes one instruction. Returns `Some(exit)` when the instruction needs EL2.
    #[inline]
    pub fn step<B: Bus>(&mut self, bus: &mut B) -> Option<Exit> {
        let pc = self.pc;
        if pc & 3 != 0 {
            // D1.3.x "PC alignment checking": misaligned PC → PC alignment fault (EC 0x22) to EL1,
            // FAR_EL1 = the misaligned PC.
            self.exception_entry(esr::build(esr::EC_PC_ALIGN, true, 0), Some(pc), pc);
            return None;
        }
        if !pa_in_range(pc) {
            // Stage 1 disabled and the PC beyond the PA size: Instruction Abort without a
            // change in EL (EC 0x21), IFSC Address size fault level 0, FAR = PC. Stage 2 never
            // sees it (its HPFAR could not even hold the address).
            let iss = u64::from(esr::DFSC_ADDR_SIZE_L0);
            self.exception_entry(esr::build(esr::EC_IABT_CUR, true, iss), Some(pc), pc);
            return None;
        }
        let insn = match bus.fetch(pc) {
            Ok(i) => i,
            Err(f) => {
                return Some(Exit::InstructionAbort {
                    esr: esr::build(esr::EC_IABT_LOWER, true, u64::from(f.fsc())),
                    far: pc,
                    hpfar: esr::hpfar(pc),
                })
            }
        };
        match self.execute(bus, insn) {
            Flow::Next => {
                self.pc = pc.wrapping_add(4);
                self.retired = self.retired.wrapping_add(1);
                None
            }
            Flow::Branch(target) => {
                self.pc = target;
                self.retired = self.retired.wrapping_add(1);
                None
            }
            Flow::Exception => {
                self.retired = self.retired.wrapping_add(1);
                None
            }
            Flow::Exit(e) => Some(e),
            Flow::ExitAfter(e) => {
                self.pc = pc.wrapping_add(4);
                self.retired = self.retired.wrapping_add(1);
                Some(e)
            }
            Flow::Undefined => Some(Exit::Undefined { pc, insn }),
        }
    }

    /// Runs until an exit, or until `budget` instructions have been stepped ([`Exit::Budget`]).
    pub fn run<B: Bus>(&mut self, bus: &mut B, budget: u64) -> Exit {
        for _ in 0..budget {
            if let Some(e) = self.step(bus) {
                return e;
            }
        }
        Exit::Budget
    }

    /// Takes a synchronous exception to EL1 (what the RMM does to inject an SEA or UNDEF into
    /// the realm): ELR_EL1 = PC, SPSR_EL1 = PSTATE, ESR_EL1 = `esr`, FAR_EL1 = `far`,
    /// PSTATE.{EL1h, DAIF masked}, PC = VBAR_EL1 + 0x200 (current EL with SP_ELx; + 0x000 when
    /// the CPU was in EL1t, per D1.10.2 "Exception vectors").
    pub fn take_exception_el1(&mut self, esr: u64, far: u64) {
        self.exception_entry(esr, Some(far), self.pc);
    }

    /// Injects an Undefined Instruction exception (EC 0x00, IL=1) at the current PC.
    /// FAR_EL1 is left unchanged (UNKNOWN architecturally).
    pub fn inject_undef(&mut self) {
        self.exception_entry(esr::build(esr::EC_UNKNOWN, true, 0), None, self.pc);
    }

    /// Injects a synchronous external abort on a data access at `far` (Data Abort taken
    /// without a change in EL, EC 0x25, IL=1, DFSC 0x10, FnV=0 since FAR is valid).
    pub fn inject_sea(&mut self, far: u64) {
        let iss = esr::data_abort_iss(None, false, esr::DFSC_SEA);
        self.exception_entry(esr::build(esr::EC_DABT_CUR, true, iss), Some(far), self.pc);
    }

    /// Exception entry to EL1 (D1.10 "Exception entry"): `preferred_return` goes to ELR_EL1.
    pub(crate) fn exception_entry(&mut self, esr: u64, far: Option<u64>, preferred_return: u64) {
        let spsr = self.pstate();
        self.sysregs[SysReg::ElrEl1 as usize] = preferred_return;
        self.sysregs[SysReg::SpsrEl1 as usize] = spsr;
        self.sysregs[SysReg::EsrEl1 as usize] = esr;
        if let Some(far) = far {
            self.sysregs[SysReg::FarEl1 as usize] = far;
        }
        // D1.10.2: "Current Exception level with SP_EL0" vectors at +0x000, "with SP_ELx" at +0x200;
        // synchronous exceptions use offset 0 within the group.
        let offset = if self.spsel { 0x200 } else { 0x000 };
        self.spsel = true;
        self.daif = 0xF;
        let vbar = self.sysregs[SysReg::VbarEl1 as usize] & !0x7FF;
        self.pc = vbar.wrapping_add(offset);
    }

    /// Top-level A64 decode (C4.1 "A64 instruction set encoding", op0 = bits \[28:25\]).
    #[inline]
    fn execute<B: Bus>(&mut self, bus: &mut B, insn: u32) -> Flow {
        match (insn >> 25) & 0xF {
            // Data Processing -- Immediate.
            0b1000 | 0b1001 => self.dp_imm(insn),
            // Branches, Exception Generating and System instructions.
            0b1010 | 0b1011 => self.branch_sys(insn),
            // Loads and Stores (x1x0).
            0b0100 | 0b0110 | 0b1100 | 0b1110 => self.ldst(bus, insn),
            // Data Processing -- Register.
            0b0101 | 0b1101 => self.dp_reg(insn),
            // Reserved, SME, SVE, SIMD & FP: not supported.
            _ => Flow::Undefined,
        }
    }

    /// Reads register `n` where 31 means XZR.
    #[inline]
    pub(crate) fn xr(&self, n: u32) -> u64 {
        self.x.get(n as usize).copied().unwrap_or(0)
    }

    /// Writes register `n` where 31 means XZR (discarded).
    #[inline]
    pub(crate) fn xw(&mut self, n: u32, v: u64) {
        if let Some(r) = self.x.get_mut(n as usize) {
            *r = v;
        }
    }

    /// Reads register `n` where 31 means SP.
    #[inline]
    pub(crate) fn xr_sp(&self, n: u32) -> u64 {
        if n == 31 {
            self.sp()
        } else {
            self.xr(n)
        }
    }

    /// Writes register `n` where 31 means SP.
    #[inline]
    pub(crate) fn xw_sp(&mut self, n: u32, v: u64) {
        if n == 31 {
            self.set_sp(v);
        } else {
            self.xw(n, v);
        }
    }

    /// PSTATE.SP select (true: EL1h).
    pub(crate) fn spsel(&self) -> bool {
        self.spsel
    }

    /// Sets PSTATE.SP.
    pub(crate) fn set_spsel(&mut self, v: bool) {
        self.spsel = v;
    }
}
