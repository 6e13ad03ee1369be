//! 32-bit instruction decoding, and the public decoding helpers the TSM uses.
//!
//! Unprivileged ISA chapters "RV32I Base Integer Instruction Set" and "RV64I Base Integer
//! Instruction Set" (incl. "Instruction Formats", "Immediate Encoding Variants"),
//! "M" Extension for Integer Multiplication and Division, "Zicsr", "Zifencei" and the
//! "RV32/64G Instruction Set Listings"; Privileged spec "Supervisor Instructions" and
//! "Hypervisor Instructions". Anything not matched exactly is `None` (illegal instruction):
//! no reserved encoding is guessed at.

use super::compressed;

/// Integer ALU operations (register-register and register-immediate forms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AluOp {
    Add,
    Sub,
    Sll,
    Slt,
    Sltu,
    Xor,
    Srl,
    Sra,
    Or,
    And,
    Mul,
    Mulh,
    Mulhsu,
    Mulhu,
    Div,
    Divu,
    Rem,
    Remu,
}

/// Conditional branch comparisons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BranchOp {
    Eq,
    Ne,
    Lt,
    Ge,
    Ltu,
    Geu,
}

/// A decoded instruction. Immediates are sign-extended to 64 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Insn {
    Lui {
        rd: u8,
        imm: u64,
    },
    Auipc {
        rd: u8,
        imm: u64,
    },
    Jal {
        rd: u8,
        off: u64,
    },
    Jalr {
        rd: u8,
        rs1: u8,
        off: u64,
    },
    Branch {
        op: BranchOp,
        rs1: u8,
        rs2: u8,
        off: u64,
    },
    Load {
        rd: u8,
        rs1: u8,
        off: u64,
        size: u8,
        signed: bool,
    },
    Store {
        rs1: u8,
        rs2: u8,
        off: u64,
        size: u8,
    },
    OpImm {
        op: AluOp,
        rd: u8,
        rs1: u8,
        imm: u64,
    },
    OpImm32 {
        op: AluOp,
        rd: u8,
        rs1: u8,
        imm: u64,
    },
    Op {
        op: AluOp,
        rd: u8,
        rs1: u8,
        rs2: u8,
    },
    Op32 {
        op: AluOp,
        rd: u8,
        rs1: u8,
        rs2: u8,
    },
    Fence,
    FenceI,
    Ecall,
    Ebreak,
    Sret,
    Wfi,
    SfenceVma,
    /// HFENCE.VVMA/GVMA, HLV/HLVX/HSV: virtual instruction when V=1.
    Hypervisor,
    Csr(CsrAccess),
}

/// The CSR read-modify-write operation of a Zicsr instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsrOp {
    /// CSRRW / CSRRWI.
    Rw,
    /// CSRRS / CSRRSI.
    Rs,
    /// CSRRC / CSRRCI.
    Rc,
}

/// The source operand of a Zicsr instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsrSrc {
    /// CSRRW/CSRRS/CSRRC: the value of register `rs1`.
    Reg(u8),
    /// CSRRWI/CSRRSI/CSRRCI: the 5-bit zero-extended immediate `uimm`.
    Imm(u8),
}

/// A decoded Zicsr instruction (Unprivileged ISA, "Zicsr", "CSR Instructions").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsrAccess {
    /// The 12-bit CSR number.
    pub csr: u16,
    /// Destination register.
    pub rd: u8,
    /// Read-modify-write operation.
    pub op: CsrOp,
    /// Source operand.
    pub src: CsrSrc,
    /// The rs1/uimm field (bits 19:15) is zero: CSRRS/CSRRC/CSRRSI/CSRRCI then do not write
    /// the CSR.
    pub rs1_is_zero: bool,
}

impl CsrAccess {
    /// Whether the instruction writes the CSR ("CSR Instructions" table "Conditions
    /// determining whether a CSR instruction reads or writes the specified CSR").
    pub fn writes(&self) -> bool {
        self.op == CsrOp::Rw || !self.rs1_is_zero
    }

    /// Whether the instruction reads the CSR (CSRRW/CSRRWI with rd = x0 do not).
    pub fn reads(&self) -> bool {
        self.op != CsrOp::Rw || self.rd != 0
    }
}

/// A decoded load or store, for MMIO emulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioAccess {
    /// Store (true) or load (false).
    pub is_store: bool,
    /// Access width in bytes: 1, 2, 4 or 8.
    pub size: u8,
    /// Loads: sign-extend the value to 64 bits (LB/LH/LW/LD; LD needs no extension);
    /// false for LBU/LHU/LWU and for stores.
    pub signed: bool,
    /// rd for loads, rs2 for stores (compressed `rd'`/`rs2'` already expanded to x8..x15).
    pub reg: u8,
    /// Instruction length in bytes: 2 (compressed) or 4.
    pub len: u8,
}

fn rd(i: u32) -> u8 {
    ((i >> 7) & 31) as u8
}
fn rs1(i: u32) -> u8 {
    ((i >> 15) & 31) as u8
}
fn rs2(i: u32) -> u8 {
    ((i >> 20) & 31) as u8
}
fn funct3(i: u32) -> u32 {
    (i >> 12) & 7
}
fn funct7(i: u32) -> u32 {
    i >> 25
}
fn imm_i(i: u32) -> u64 {
    ((i as i32) >> 20) as i64 as u64
}
fn imm_s(i: u32) -> u64 {
    ((((i as i32) >> 25) << 5) as i64 as u64) | u64::from((i >> 7) & 0x1F)
}
fn imm_b(i: u32) -> u64 {
    let v = (((i >> 31) & 1) << 12)
        | (((i >> 7) & 1) << 11)
        | (((i >> 25) & 0x3F) << 5)
        | (((i >> 8) & 0xF) << 1);
    (((v << 19) as i32) >> 19) as i64 as u64
}
fn imm_j(i: u32) -> u64 {
    let v = (((i >> 31) & 1) << 20)
        | (((i >> 12) & 0xFF) << 12)
        | (((i >> 20) & 1) << 11)
        | (((i >> 21) & 0x3FF) << 1);
    (((v << 11) as i32) >> 11) as i64 as u64
}
fn imm_u(i: u32) -> u64 {
    (i & 0xFFFF_F000) as i32 as i64 as u64
}

/// Decodes a 32-bit instruction (bits 1:0 = 11, bits 4:2 != 111).
pub(crate) fn decode32(i: u32) -> Option<Insn> {
    if i & 3 != 3 || (i >> 2) & 7 == 7 {
        return None;
    }
    let (rd, rs1, rs2, f3, f7) = (rd(i), rs1(i), rs2(i), funct3(i), funct7(i));
    let insn = match i & 0x7F {
        0x37 => Insn::Lui { rd, imm: imm_u(i) },
        0x17 => Insn::Auipc { rd, imm: imm_u(i) },
        0x6F => Insn::Jal { rd, off: imm_j(i) },
        0x67 if f3 == 0 => Insn::Jalr {
            rd,
            rs1,
            off: imm_i(i),
        },
        0x63 => {
            let op = match f3 {
                0 => BranchOp::Eq,
                1 => BranchOp::Ne,
                4 => BranchOp::Lt,
                5 => BranchOp::Ge,
                6 => BranchOp::Ltu,
                7 => BranchOp::Geu,
                _ => return None,
            };
            Insn::Branch {
                op,
                rs1,
                rs2,
                off: imm_b(i),
            }
        }
        0x03 => {
            let (size, signed) = match f3 {
                0 => (1, true),
                1 => (2, true),
                2 => (4, true),
                3 => (8, true),
                4 => (1, false),
                5 => (2, false),
                6 => (4, false),
                _ => return None,
            };
            Insn::Load {
                rd,
                rs1,
                off: imm_i(i),
                size,
                signed,
            }
        }
        0x23 => {
            if f3 > 3 {
                return None;
            }
            Insn::Store {
                rs1,
                rs2,
                off: imm_s(i),
                size: 1 << f3,
            }
        }
        0x13 => {
            let imm = imm_i(i);
            let op = match f3 {
                0 => AluOp::Add,
                2 => AluOp::Slt,
                3 => AluOp::Sltu,
                4 => AluOp::Xor,
                6 => AluOp::Or,
                7 => AluOp::And,
                // RV64I: shamt is imm[5:0], imm[11:6] selects the shift.
                1 if i >> 26 == 0 => AluOp::Sll,
                5 if i >> 26 == 0 => AluOp::Srl,
                5 if i >> 26 == 0b01_0000 => AluOp::Sra,
                _ => return None,
            };
            let imm = if matches!(op, AluOp::Sll | AluOp::Srl | AluOp::Sra) {
                imm & 0x3F
            } else {
                imm
            };
            Insn::OpImm { op, rd, rs1, imm }
        }
        0x1B => {
            let op = match (f3, f7) {
                (0, _) => AluOp::Add,
                (1, 0) => AluOp::Sll,
                (5, 0) => AluOp::Srl,
                (5, 0x20) => AluOp::Sra,
                _ => return None,
            };
            let imm = if op == AluOp::Add {
                imm_i(i)
            } else {
                u64::from(rs2)
            };
            Insn::OpImm32 { op, rd, rs1, imm }
        }
        0x33 => {
            let op = match (f7, f3) {
                (0, 0) => AluOp::Add,
                (0, 1) => AluOp::Sll,
                (0, 2) => AluOp::Slt,
                (0, 3) => AluOp::Sltu,
                (0, 4) => AluOp::Xor,
                (0, 5) => AluOp::Srl,
                (0, 6) => AluOp::Or,
                (0, 7) => AluOp::And,
                (0x20, 0) => AluOp::Sub,
                (0x20, 5) => AluOp::Sra,
                (1, 0) => AluOp::Mul,
                (1, 1) => AluOp::Mulh,
                (1, 2) => AluOp::Mulhsu,
                (1, 3) => AluOp::Mulhu,
                (1, 4) => AluOp::Div,
                (1, 5) => AluOp::Divu,
                (1, 6) => AluOp::Rem,
                (1, 7) => AluOp::Remu,
                _ => return None,
            };
            Insn::Op { op, rd, rs1, rs2 }
        }
        0x3B => {
            let op = match (f7, f3) {
                (0, 0) => AluOp::Add,
                (0, 1) => AluOp::Sll,
                (0, 5) => AluOp::Srl,
                (0x20, 0) => AluOp::Sub,
                (0x20, 5) => AluOp::Sra,
                (1, 0) => AluOp::Mul,
                (1, 4) => AluOp::Div,
                (1, 5) => AluOp::Divu,
                (1, 6) => AluOp::Rem,
                (1, 7) => AluOp::Remu,
                _ => return None,
            };
            Insn::Op32 { op, rd, rs1, rs2 }
        }
        // MISC-MEM. FENCE: unused fields (fm values other than 0000/1000, rs1, rd) are
        // ignored for forward compatibility ("Memory Ordering Instructions"); FENCE.I:
        // imm, rs1 and rd are ignored likewise ("Zifencei").
        0x0F => match f3 {
            0 => Insn::Fence,
            1 => Insn::FenceI,
            _ => return None,
        },
        0x73 => match f3 {
            0 => match i {
                0x0000_0073 => Insn::Ecall,
                0x0010_0073 => Insn::Ebreak,
                0x1020_0073 => Insn::Sret,
                0x1050_0073 => Insn::Wfi,
                _ if rd == 0 && f7 == 0b000_1001 => Insn::SfenceVma,
                // HFENCE.VVMA / HFENCE.GVMA
                _ if rd == 0 && (f7 == 0b001_0001 || f7 == 0b011_0001) => Insn::Hypervisor,
                _ => return None,
            },
            4 => {
                // Hypervisor virtual-machine loads and stores ("Hypervisor Virtual-Machine
                // Load and Store Instructions").
                let ok = match f7 {
                    0b011_0000 => rs2 <= 1,                                       // HLV.B, HLV.BU
                    0b011_0010 => matches!(rs2, 0 | 1 | 3), // HLV.H, HLV.HU, HLVX.HU
                    0b011_0100 => matches!(rs2, 0 | 1 | 3), // HLV.W, HLV.WU, HLVX.WU
                    0b011_0110 => rs2 == 0,                 // HLV.D
                    0b011_0001 | 0b011_0011 | 0b011_0101 | 0b011_0111 => rd == 0, // HSV.*
                    _ => false,
                };
                if !ok {
                    return None;
                }
                Insn::Hypervisor
            }
            _ => Insn::Csr(csr_fields(i)),
        },
        _ => return None,
    };
    Some(insn)
}

fn csr_fields(i: u32) -> CsrAccess {
    let f3 = funct3(i);
    let op = match f3 & 3 {
        1 => CsrOp::Rw,
        2 => CsrOp::Rs,
        _ => CsrOp::Rc,
    };
    let field = rs1(i);
    let src = if f3 & 4 != 0 {
        CsrSrc::Imm(field)
    } else {
        CsrSrc::Reg(field)
    };
    CsrAccess {
        csr: (i >> 20) as u16,
        rd: rd(i),
        op,
        src,
        rs1_is_zero: field == 0,
    }
}

/// Decodes a Zicsr instruction (CSRRW, CSRRS, CSRRC, CSRRWI, CSRRSI, CSRRCI); `None` for
/// anything else.
pub fn decode_csr(insn: u32) -> Option<CsrAccess> {
    match decode32(insn)? {
        Insn::Csr(access) => Some(access),
        _ => None,
    }
}

fn mmio_of(insn32: u32, len: u8) -> Option<MmioAccess> {
    match decode32(insn32)? {
        Insn::Load {
            rd, size, signed, ..
        } => Some(MmioAccess {
            is_store: false,
            size,
            signed,
            reg: rd,
            len,
        }),
        Insn::Store { rs2, size, .. } => Some(MmioAccess {
            is_store: true,
            size,
            signed: false,
            reg: rs2,
            len,
        }),
        _ => None,
    }
}

/// Decodes the raw bits of a trapping instruction as a standard load or store
/// (LB/LH/LW/LD/LBU/LHU/LWU/SB/SH/SW/SD and their compressed forms C.LW/C.LD/C.SW/C.SD/
/// C.LWSP/C.LDSP/C.SWSP/C.SDSP); `None` for anything else.
///
/// `insn` is the instruction as fetched: a 16-bit instruction zero-extended (bits 1:0 !=
/// 11, upper half ignored), else a 32-bit one. For an `htinst` value use
/// [`decode_htinst`], since a transformed compressed instruction has bit 1 cleared.
pub fn decode_mmio(insn: u32) -> Option<MmioAccess> {
    if insn & 3 == 3 {
        mmio_of(insn, 4)
    } else {
        mmio_of(compressed::expand(insn as u16)?, 2)
    }
}

/// Decodes a transformed load/store as written to `htinst` (Privileged spec, "Transformed
/// instruction or pseudoinstruction for mtinst or htinst"): bit 0 = 1, bit 1 = 0 when the
/// trapping instruction was compressed (the `len` reported is then 2). `None` for 0,
/// pseudoinstructions and anything that is not a load or store.
pub fn decode_htinst(htinst: u64) -> Option<MmioAccess> {
    let v = u32::try_from(htinst).ok()?;
    if v & 1 == 0 {
        return None;
    }
    let len = if v & 2 == 0 { 2 } else { 4 };
    mmio_of(v | 2, len)
}
