//! ESR_ELx syndrome encodings (Arm ARM D17.2.37 "ESR_EL1", D17.2.40 "ESR_EL2": EC \[31:26\],
//! IL \[25\], ISS \[24:0\]) and the field accessors the RMM model and host flow use.
//!
//! Data-abort ISS (D17.2.40, "ISS encoding for an exception from a Data Abort"): ISV \[24\],
//! SAS \[23:22\], SSE \[21\], SRT \[20:16\], SF \[15\], AR \[14\], VNCR \[13\], SET \[12:11\], FnV \[10\],
//! EA \[9\], CM \[8\], S1PTW \[7\], WnR \[6\], DFSC \[5:0\].
//!
//! Trapped MSR/MRS/System instruction ISS (EC 0x18, "ISS encoding for an exception from MSR,
//! MRS, or System instruction execution in AArch64 state"): Op0 \[21:20\], Op2 \[19:17\],
//! Op1 \[16:14\], CRn \[13:10\], Rt \[9:5\], CRm \[4:1\], Direction \[0\] (1 = read, MRS/SYSL).

/// Unknown reason (used for UNDEFINED instructions).
pub const EC_UNKNOWN: u8 = 0x00;
/// Trapped WFI/WFE.
pub const EC_WFX: u8 = 0x01;
/// Illegal Execution state.
pub const EC_ILLEGAL_STATE: u8 = 0x0E;
/// SVC in AArch64 state.
pub const EC_SVC64: u8 = 0x15;
/// HVC in AArch64 state.
pub const EC_HVC64: u8 = 0x16;
/// SMC in AArch64 state (trapped to EL2).
pub const EC_SMC64: u8 = 0x17;
/// Trapped MSR, MRS or System instruction in AArch64 state.
pub const EC_SYSREG: u8 = 0x18;
/// Instruction Abort from a lower Exception level.
pub const EC_IABT_LOWER: u8 = 0x20;
/// Instruction Abort taken without a change in Exception level.
pub const EC_IABT_CUR: u8 = 0x21;
/// PC alignment fault.
pub const EC_PC_ALIGN: u8 = 0x22;
/// Data Abort from a lower Exception level.
pub const EC_DABT_LOWER: u8 = 0x24;
/// Data Abort taken without a change in Exception level.
pub const EC_DABT_CUR: u8 = 0x25;
/// SP alignment fault.
pub const EC_SP_ALIGN: u8 = 0x26;
/// BRK instruction in AArch64 state.
pub const EC_BRK64: u8 = 0x3C;

/// DFSC/IFSC: translation fault, level 0 (add the level for levels 1..=3).
pub const DFSC_TRANSLATION_L0: u8 = 0x04;
/// DFSC/IFSC: Address size fault, level 0 (0b000000).
pub const DFSC_ADDR_SIZE_L0: u8 = 0x00;
/// DFSC/IFSC: permission fault, level 0 (add the level).
pub const DFSC_PERMISSION_L0: u8 = 0x0C;
/// DFSC/IFSC: synchronous external abort, not on a translation table walk.
pub const DFSC_SEA: u8 = 0x10;
/// DFSC: alignment fault.
pub const DFSC_ALIGNMENT: u8 = 0x21;

/// ESR.IL: 32-bit instruction length.
pub const IL: u64 = 1 << 25;
/// Data-abort ISS.ISV.
pub const ISV: u64 = 1 << 24;
/// Data-abort ISS.SSE.
pub const SSE: u64 = 1 << 21;
/// Data-abort ISS.SF.
pub const SF: u64 = 1 << 15;
/// Data-abort ISS.AR.
pub const AR: u64 = 1 << 14;
/// Data-abort ISS.FnV.
pub const FNV: u64 = 1 << 10;
/// Data-abort ISS.EA.
pub const EA: u64 = 1 << 9;
/// Data-abort ISS.S1PTW.
pub const S1PTW: u64 = 1 << 7;
/// Data-abort ISS.WnR.
pub const WNR: u64 = 1 << 6;

/// Builds an ESR value from EC, IL and ISS (ISS truncated to 25 bits).
pub const fn build(ec: u8, il: bool, iss: u64) -> u64 {
    ((ec as u64 & 0x3F) << 26) | if il { IL } else { 0 } | (iss & 0x1FF_FFFF)
}

/// HPFAR_EL2 for a faulting IPA: FIPA \[43:4\] = IPA\[51:12\].
pub const fn hpfar(ipa: u64) -> u64 {
    ((ipa & ((1 << 52) - 1)) >> 12) << 4
}

/// The IPA page address held in an HPFAR_EL2 value.
pub const fn hpfar_to_ipa(hpfar: u64) -> u64 {
    (hpfar & 0x0000_0FFF_FFFF_FFF0) << 8
}

/// Exception Class, ESR \[31:26\].
pub const fn ec(esr: u64) -> u8 {
    ((esr >> 26) & 0x3F) as u8
}

/// Instruction Length bit, ESR \[25\].
pub const fn il(esr: u64) -> bool {
    esr & IL != 0
}

/// ISS, ESR \[24:0\].
pub const fn iss(esr: u64) -> u64 {
    esr & 0x1FF_FFFF
}

/// The imm16 of an SVC/HVC/SMC/BRK syndrome, ISS \[15:0\].
pub const fn imm16(esr: u64) -> u16 {
    (esr & 0xFFFF) as u16
}

/// Data abort: Instruction Syndrome Valid, ISS \[24\].
pub const fn isv(esr: u64) -> bool {
    esr & ISV != 0
}

/// Data abort: Syndrome Access Size, ISS \[23:22\] (0 byte, 1 halfword, 2 word, 3 doubleword).
pub const fn sas(esr: u64) -> u8 {
    ((esr >> 22) & 3) as u8
}

/// Data abort: Syndrome Sign Extend, ISS \[21\].
pub const fn sse(esr: u64) -> bool {
    esr & SSE != 0
}

/// Data abort: Syndrome Register Transfer, ISS \[20:16\] (31 = XZR).
pub const fn srt(esr: u64) -> u8 {
    ((esr >> 16) & 0x1F) as u8
}

/// Data abort: Sixty-Four bit register, ISS \[15\].
pub const fn sf(esr: u64) -> bool {
    esr & SF != 0
}

/// Data abort: Acquire/Release, ISS \[14\].
pub const fn ar(esr: u64) -> bool {
    esr & AR != 0
}

/// Data abort: Synchronous Error Type, ISS \[12:11\].
pub const fn set(esr: u64) -> u8 {
    ((esr >> 11) & 3) as u8
}

/// Data abort: FAR not Valid, ISS \[10\].
pub const fn fnv(esr: u64) -> bool {
    esr & FNV != 0
}

/// Data abort: External abort type, ISS \[9\].
pub const fn ea(esr: u64) -> bool {
    esr & EA != 0
}

/// Data abort: Write not Read, ISS \[6\].
pub const fn wnr(esr: u64) -> bool {
    esr & WNR != 0
}

/// Data abort: Data Fault Status Code, ISS \[5:0\] (also IFSC for instruction aborts).
pub const fn dfsc(esr: u64) -> u8 {
    (esr & 0x3F) as u8
}

/// The instruction-specific part of a valid (ISV=1) data-abort syndrome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessSyndrome {
    /// Access size as log2 bytes (SAS).
    pub sas: u8,
    /// The load sign-extends (SSE).
    pub sse: bool,
    /// Transfer register (SRT; 31 = XZR).
    pub srt: u8,
    /// The transfer register is 64-bit (SF).
    pub sf: bool,
    /// Acquire/release semantics (AR).
    pub ar: bool,
}

/// Data-abort ISS builder: `access` = `Some` for ISV=1 forms (SAS/SSE/SRT/SF/AR filled in),
/// `None` for ISV=0 forms (those fields RES0); `wnr` = write; `dfsc` = fault status code.
pub const fn data_abort_iss(access: Option<AccessSyndrome>, wnr: bool, dfsc: u8) -> u64 {
    let mut iss = (dfsc as u64) & 0x3F;
    if wnr {
        iss |= WNR;
    }
    if let Some(a) = access {
        iss |= ISV | (((a.sas as u64) & 3) << 22) | (((a.srt as u64) & 0x1F) << 16);
        if a.sse {
            iss |= SSE;
        }
        if a.sf {
            iss |= SF;
        }
        if a.ar {
            iss |= AR;
        }
    }
    iss
}

/// Trapped MSR/MRS/SYS ISS builder (EC 0x18): fields as in the instruction, `read` = MRS/SYSL.
pub const fn sysreg_iss(op0: u8, op1: u8, crn: u8, crm: u8, op2: u8, rt: u8, read: bool) -> u64 {
    (((op0 as u64) & 3) << 20)
        | (((op2 as u64) & 7) << 17)
        | (((op1 as u64) & 7) << 14)
        | (((crn as u64) & 0xF) << 10)
        | (((rt as u64) & 0x1F) << 5)
        | (((crm as u64) & 0xF) << 1)
        | read as u64
}

/// EC 0x18 ISS: Op0 \[21:20\].
pub const fn sysreg_op0(esr: u64) -> u8 {
    ((esr >> 20) & 3) as u8
}

/// EC 0x18 ISS: Op2 \[19:17\].
pub const fn sysreg_op2(esr: u64) -> u8 {
    ((esr >> 17) & 7) as u8
}

/// EC 0x18 ISS: Op1 \[16:14\].
pub const fn sysreg_op1(esr: u64) -> u8 {
    ((esr >> 14) & 7) as u8
}

/// EC 0x18 ISS: CRn \[13:10\].
pub const fn sysreg_crn(esr: u64) -> u8 {
    ((esr >> 10) & 0xF) as u8
}

/// EC 0x18 ISS: Rt \[9:5\].
pub const fn sysreg_rt(esr: u64) -> u8 {
    ((esr >> 5) & 0x1F) as u8
}

/// EC 0x18 ISS: CRm \[4:1\].
pub const fn sysreg_crm(esr: u64) -> u8 {
    ((esr >> 1) & 0xF) as u8
}

/// EC 0x18 ISS: Direction \[0\] (true = read: MRS or SYSL).
pub const fn sysreg_is_read(esr: u64) -> bool {
    esr & 1 != 0
}

/// The register-identifying ISS bits of an EC 0x18 syndrome with Rt and Direction cleared,
/// for matching against [`sysreg_key`] values.
pub const fn sysreg_id(esr: u64) -> u64 {
    esr & 0x003F_FC1E
}

/// The [`sysreg_id`] key of a register given its encoding (e.g. ID_AA64PFR0_EL1 = 3,0,0,4,0).
pub const fn sysreg_key(op0: u8, op1: u8, crn: u8, crm: u8, op2: u8) -> u64 {
    sysreg_iss(op0, op1, crn, crm, op2, 0, false)
}
