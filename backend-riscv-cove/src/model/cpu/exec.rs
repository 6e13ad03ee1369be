//! Instruction execution.
//!
//! Unprivileged ISA: "RV32I Base Integer Instruction Set" / "RV64I Base Integer Instruction
//! Set" ("Integer Computational Instructions", "Control Transfer Instructions", "Load and
//! Store Instructions", "Memory Ordering Instructions", "Environment Call and Breakpoints"),
//! "M" Extension ("Multiplication Operations", "Division Operations", table "Semantics for
//! division by zero and division overflow"), "Zifencei". Privileged spec: "Supervisor
//! Instructions" (SRET, WFI, SFENCE.VMA) and the H-extension "Traps" (virtual instruction).
//! All arithmetic wraps; nothing here can panic.

use super::decode::{AluOp, BranchOp, Insn};
use super::trap::{self, Cur};
use super::{Bus, BusFault, Mode, Rv64Cpu, Trap};

/// RV64 register-register / register-immediate ALU.
pub(crate) fn alu(op: AluOp, a: u64, b: u64) -> u64 {
    let (sa, sb) = (a as i64, b as i64);
    match op {
        AluOp::Add => a.wrapping_add(b),
        AluOp::Sub => a.wrapping_sub(b),
        // RV64: shift amount is the low 6 bits.
        AluOp::Sll => a << (b & 63),
        AluOp::Srl => a >> (b & 63),
        AluOp::Sra => (sa >> (b & 63)) as u64,
        AluOp::Slt => u64::from(sa < sb),
        AluOp::Sltu => u64::from(a < b),
        AluOp::Xor => a ^ b,
        AluOp::Or => a | b,
        AluOp::And => a & b,
        AluOp::Mul => a.wrapping_mul(b),
        AluOp::Mulh => ((i128::from(sa) * i128::from(sb)) >> 64) as u64,
        AluOp::Mulhsu => ((i128::from(sa).wrapping_mul(i128::from(b))) >> 64) as u64,
        AluOp::Mulhu => ((u128::from(a) * u128::from(b)) >> 64) as u64,
        // Division by zero: quotient all ones, remainder the dividend; overflow
        // (MIN / -1): quotient the dividend, remainder 0.
        AluOp::Div => {
            if b == 0 {
                u64::MAX
            } else {
                sa.wrapping_div(sb) as u64
            }
        }
        AluOp::Divu => a.checked_div(b).unwrap_or(u64::MAX),
        AluOp::Rem => {
            if b == 0 {
                a
            } else {
                sa.wrapping_rem(sb) as u64
            }
        }
        AluOp::Remu => a.checked_rem(b).unwrap_or(a),
    }
}

/// RV64 `*W` ALU: operates on the low 32 bits, sign-extends the 32-bit result.
pub(crate) fn alu32(op: AluOp, a: u64, b: u64) -> u64 {
    let (a32, b32) = (a as u32, b as u32);
    let (sa, sb) = (a32 as i32, b32 as i32);
    let r: u32 = match op {
        AluOp::Add => a32.wrapping_add(b32),
        AluOp::Sub => a32.wrapping_sub(b32),
        AluOp::Sll => a32 << (b32 & 31),
        AluOp::Srl => a32 >> (b32 & 31),
        AluOp::Sra => (sa >> (b32 & 31)) as u32,
        AluOp::Mul => a32.wrapping_mul(b32),
        AluOp::Div => {
            if b32 == 0 {
                u32::MAX
            } else {
                sa.wrapping_div(sb) as u32
            }
        }
        AluOp::Divu => a32.checked_div(b32).unwrap_or(u32::MAX),
        AluOp::Rem => {
            if b32 == 0 {
                a32
            } else {
                sa.wrapping_rem(sb) as u32
            }
        }
        AluOp::Remu => a32.checked_rem(b32).unwrap_or(a32),
        // Not encodable as *W instructions (the decoder never produces them).
        _ => alu(op, a, b) as u32,
    };
    r as i32 as i64 as u64
}

fn branch_taken(op: BranchOp, a: u64, b: u64) -> bool {
    match op {
        BranchOp::Eq => a == b,
        BranchOp::Ne => a != b,
        BranchOp::Lt => (a as i64) < (b as i64),
        BranchOp::Ge => (a as i64) >= (b as i64),
        BranchOp::Ltu => a < b,
        BranchOp::Geu => a >= b,
    }
}

fn size_mask(size: u8) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (u32::from(size) * 8)) - 1
    }
}

fn sign_extend(v: u64, size: u8) -> u64 {
    let shift = 64 - u32::from(size) * 8;
    (((v << shift) as i64) >> shift) as u64
}

impl Rv64Cpu {
    /// Explicit data load (pointer masking applied, alignment checked).
    fn load<B: Bus>(&mut self, bus: &mut B, cur: &Cur, ea: u64, size: u8) -> Result<u64, Trap> {
        let addr = self.mask_data_address(ea);
        if addr & (u64::from(size) - 1) != 0 {
            return Err(cur.trap(trap::CAUSE_LOAD_MISALIGNED, addr, 0, 0));
        }
        match bus.read(addr, size) {
            Ok(v) => Ok(v & size_mask(size)),
            Err(BusFault::GuestPageFault) => Err(cur.trap(
                trap::CAUSE_LOAD_GUEST_PAGE_FAULT,
                addr,
                addr >> 2,
                trap::transformed_htinst(cur, false),
            )),
            Err(BusFault::AccessFault) => Err(cur.trap(trap::CAUSE_LOAD_ACCESS, addr, 0, 0)),
        }
    }

    /// Explicit data store (pointer masking applied, alignment checked).
    fn store<B: Bus>(
        &mut self,
        bus: &mut B,
        cur: &Cur,
        ea: u64,
        size: u8,
        value: u64,
    ) -> Result<(), Trap> {
        let addr = self.mask_data_address(ea);
        if addr & (u64::from(size) - 1) != 0 {
            return Err(cur.trap(trap::CAUSE_STORE_MISALIGNED, addr, 0, 0));
        }
        match bus.write(addr, size, value & size_mask(size)) {
            Ok(()) => Ok(()),
            Err(BusFault::GuestPageFault) => Err(cur.trap(
                trap::CAUSE_STORE_GUEST_PAGE_FAULT,
                addr,
                addr >> 2,
                trap::transformed_htinst(cur, true),
            )),
            Err(BusFault::AccessFault) => Err(cur.trap(trap::CAUSE_STORE_ACCESS, addr, 0, 0)),
        }
    }

    /// Executes one decoded instruction. On success the pc has been advanced; on a trap no
    /// architectural state has changed (every instruction here writes at most one register,
    /// the CSR or memory, and only after its last possible fault).
    pub(crate) fn execute<B: Bus>(
        &mut self,
        bus: &mut B,
        cur: &Cur,
        insn: Insn,
    ) -> Result<(), Trap> {
        let next = cur.pc.wrapping_add(u64::from(cur.len));
        let mut new_pc = next;
        match insn {
            Insn::Lui { rd, imm } => self.set_x(rd, imm),
            Insn::Auipc { rd, imm } => self.set_x(rd, cur.pc.wrapping_add(imm)),
            Insn::Jal { rd, off } => {
                new_pc = cur.pc.wrapping_add(off);
                self.set_x(rd, next);
            }
            Insn::Jalr { rd, rs1, off } => {
                // Target computed before rd is written (rd may equal rs1); bit 0 cleared.
                new_pc = self.x(rs1).wrapping_add(off) & !1;
                self.set_x(rd, next);
            }
            Insn::Branch { op, rs1, rs2, off } => {
                if branch_taken(op, self.x(rs1), self.x(rs2)) {
                    new_pc = cur.pc.wrapping_add(off);
                }
            }
            Insn::Load {
                rd,
                rs1,
                off,
                size,
                signed,
            } => {
                let v = self.load(bus, cur, self.x(rs1).wrapping_add(off), size)?;
                self.set_x(rd, if signed { sign_extend(v, size) } else { v });
            }
            Insn::Store {
                rs1,
                rs2,
                off,
                size,
            } => {
                self.store(bus, cur, self.x(rs1).wrapping_add(off), size, self.x(rs2))?;
            }
            Insn::OpImm { op, rd, rs1, imm } => self.set_x(rd, alu(op, self.x(rs1), imm)),
            Insn::OpImm32 { op, rd, rs1, imm } => self.set_x(rd, alu32(op, self.x(rs1), imm)),
            Insn::Op { op, rd, rs1, rs2 } => self.set_x(rd, alu(op, self.x(rs1), self.x(rs2))),
            Insn::Op32 { op, rd, rs1, rs2 } => {
                self.set_x(rd, alu32(op, self.x(rs1), self.x(rs2)));
            }
            // Single hart, sequentially consistent bus, no instruction cache: fences are
            // no-ops (FENCE.I: every fetch reads memory).
            Insn::Fence | Insn::FenceI => {}
            Insn::Ecall => {
                let cause = match self.mode {
                    Mode::Supervisor => trap::CAUSE_ECALL_VS,
                    Mode::User => trap::CAUSE_ECALL_VU,
                };
                return Err(cur.trap(cause, 0, 0, 0));
            }
            // stval = the breakpoint's address (Privileged spec allows it or 0).
            Insn::Ebreak => return Err(cur.trap(trap::CAUSE_BREAKPOINT, cur.pc, 0, 0)),
            // WFI from VS-mode with hstatus.VTW = 1, or from VU-mode: virtual instruction.
            Insn::Wfi => return Err(cur.virtual_insn()),
            Insn::Sret => {
                if self.mode == Mode::User {
                    return Err(cur.virtual_insn());
                }
                self.sret();
                new_pc = self.sepc;
            }
            // Bare translation only: nothing cached, so a no-op in VS-mode (hstatus.VTVM = 0).
            Insn::SfenceVma => {
                if self.mode == Mode::User {
                    return Err(cur.virtual_insn());
                }
            }
            Insn::Hypervisor => return Err(cur.virtual_insn()),
            Insn::Csr(access) => self.exec_csr(cur, access)?,
        }
        self.pc = new_pc;
        Ok(())
    }
}
