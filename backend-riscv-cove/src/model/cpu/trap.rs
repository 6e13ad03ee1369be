//! Trap causes and the `htinst` transformation.
//!
//! Cause numbers: Privileged spec, "Supervisor Cause (scause) Register" table
//! ("Supervisor cause register (scause) values after trap") and, for the hypervisor
//! causes 20..23, "Hypervisor Trap Delegation" (`hedeleg` bits table).

use super::Trap;

/// Instruction access fault.
pub const CAUSE_FETCH_ACCESS: u64 = 1;
/// Illegal instruction.
pub const CAUSE_ILLEGAL_INSTRUCTION: u64 = 2;
/// Breakpoint (EBREAK / C.EBREAK).
pub const CAUSE_BREAKPOINT: u64 = 3;
/// Load address misaligned.
pub const CAUSE_LOAD_MISALIGNED: u64 = 4;
/// Load access fault.
pub const CAUSE_LOAD_ACCESS: u64 = 5;
/// Store/AMO address misaligned.
pub const CAUSE_STORE_MISALIGNED: u64 = 6;
/// Store/AMO access fault.
pub const CAUSE_STORE_ACCESS: u64 = 7;
/// Environment call from U-mode or VU-mode.
pub const CAUSE_ECALL_VU: u64 = 8;
/// Environment call from VS-mode.
pub const CAUSE_ECALL_VS: u64 = 10;
/// Instruction guest-page fault.
pub const CAUSE_FETCH_GUEST_PAGE_FAULT: u64 = 20;
/// Load guest-page fault.
pub const CAUSE_LOAD_GUEST_PAGE_FAULT: u64 = 21;
/// Virtual instruction.
pub const CAUSE_VIRTUAL_INSTRUCTION: u64 = 22;
/// Store/AMO guest-page fault.
pub const CAUSE_STORE_GUEST_PAGE_FAULT: u64 = 23;
/// The interrupt bit of `scause` (bit XLEN-1).
pub const CAUSE_INTERRUPT: u64 = 1 << 63;

/// The instruction being executed, as far as traps need it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cur {
    /// Address of the instruction (becomes `sepc`).
    pub pc: u64,
    /// Raw bits (a 16-bit instruction zero-extended).
    pub raw: u32,
    /// The 32-bit (expanded, if compressed) instruction.
    pub insn: u32,
    /// 2 or 4.
    pub len: u8,
}

impl Cur {
    /// Whether the instruction was a 16-bit (C extension) one.
    pub fn compressed(&self) -> bool {
        self.len == 2
    }

    /// A trap on this instruction.
    pub fn trap(&self, scause: u64, stval: u64, htval: u64, htinst: u64) -> Trap {
        Trap {
            scause,
            stval,
            htval,
            htinst,
            pc: self.pc,
            insn: self.raw,
            insn_len: self.len,
        }
    }

    /// Illegal instruction: `stval` holds the instruction bits (Privileged spec, "Supervisor
    /// Trap Value (stval) Register": on an illegal-instruction trap stval may be written with
    /// the faulting instruction bits; we always do, as the TSM needs them).
    pub fn illegal(&self) -> Trap {
        self.trap(CAUSE_ILLEGAL_INSTRUCTION, u64::from(self.raw), 0, 0)
    }

    /// Virtual instruction (Privileged spec "H" extension, "Traps": virtual-instruction
    /// exception); `stval` holds the instruction bits like an illegal instruction.
    pub fn virtual_insn(&self) -> Trap {
        self.trap(CAUSE_VIRTUAL_INSTRUCTION, u64::from(self.raw), 0, 0)
    }
}

/// `htinst` for a load/store guest-page fault on `cur`.
///
/// Privileged spec, "Transformed instruction or pseudoinstruction for mtinst or htinst":
/// a transformed standard load keeps funct3, rd and opcode (bits 14:0) and replaces
/// imm[11:0] with zero and rs1 (bits 19:15) with the "Addr. Offset" (the faulting address
/// minus the original address, non-zero only for misaligned accesses — always 0 here since
/// misaligned accesses trap before reaching the bus); a transformed store keeps rs2,
/// funct3 and opcode and zeroes both immediate halves and rs1. For a compressed
/// instruction the 32-bit equivalent is transformed and then bit 1 is cleared, so that
/// bit 1 tells the trap handler the original instruction length.
pub(crate) fn transformed_htinst(cur: &Cur, is_store: bool) -> u64 {
    let keep = if is_store { 0x01F0_707F } else { 0x0000_7FFF };
    let mut t = cur.insn & keep;
    if cur.compressed() {
        t &= !0b10;
    }
    u64::from(t)
}
