//! Expansion of 16-bit instructions to their 32-bit equivalents.
//!
//! Unprivileged ISA, chapter "C" Extension for Compressed Instructions ("Compressed
//! Instruction Formats", "Load and Store Instructions", "Control Transfer Instructions",
//! "Integer Computational Instructions", "RVC Instruction Set Listings"), for RV64C.
//! Every compressed instruction has a 32-bit equivalent; executing that equivalent with an
//! instruction length of 2 is exactly the compressed semantics, and it is also step 1 of the
//! `htinst` transformation for compressed instructions. HINT encodings expand to 32-bit
//! instructions with no architectural effect (writes to x0, shifts by 0, `addi rd, rd, 0`).
//! Reserved encodings and F/D forms (no F/D here) return `None` (illegal instruction).

/// `rd'`/`rs1'`/`rs2'` 3-bit register fields map to x8..x15.
fn creg(bits: u16) -> u32 {
    u32::from(bits & 7) + 8
}

fn bit(v: u16, n: u32) -> u32 {
    u32::from((v >> n) & 1)
}

fn bits(v: u16, hi: u32, lo: u32) -> u32 {
    u32::from(v >> lo) & ((1 << (hi - lo + 1)) - 1)
}

/// Sign-extends the low `width` bits of `v` to an i32.
fn sext(v: u32, width: u32) -> i32 {
    let shift = 32 - width;
    ((v << shift) as i32) >> shift
}

fn i_type(imm: i32, rs1: u32, funct3: u32, rd: u32, opcode: u32) -> u32 {
    ((imm as u32 & 0xFFF) << 20) | (rs1 << 15) | (funct3 << 12) | (rd << 7) | opcode
}

fn s_type(imm: i32, rs2: u32, rs1: u32, funct3: u32, opcode: u32) -> u32 {
    let imm = imm as u32;
    (((imm >> 5) & 0x7F) << 25)
        | (rs2 << 20)
        | (rs1 << 15)
        | (funct3 << 12)
        | ((imm & 0x1F) << 7)
        | opcode
}

fn r_type(funct7: u32, rs2: u32, rs1: u32, funct3: u32, rd: u32, opcode: u32) -> u32 {
    (funct7 << 25) | (rs2 << 20) | (rs1 << 15) | (funct3 << 12) | (rd << 7) | opcode
}

fn b_type(imm: i32, rs2: u32, rs1: u32, funct3: u32) -> u32 {
    let imm = imm as u32;
    (((imm >> 12) & 1) << 31)
        | (((imm >> 5) & 0x3F) << 25)
        | (rs2 << 20)
        | (rs1 << 15)
        | (funct3 << 12)
        | (((imm >> 1) & 0xF) << 8)
        | (((imm >> 11) & 1) << 7)
        | OP_BRANCH
}

fn j_type(imm: i32, rd: u32) -> u32 {
    let imm = imm as u32;
    (((imm >> 20) & 1) << 31)
        | (((imm >> 1) & 0x3FF) << 21)
        | (((imm >> 11) & 1) << 20)
        | (((imm >> 12) & 0xFF) << 12)
        | (rd << 7)
        | OP_JAL
}

const OP_LOAD: u32 = 0x03;
const OP_IMM: u32 = 0x13;
const OP_IMM_32: u32 = 0x1B;
const OP_STORE: u32 = 0x23;
const OP_OP: u32 = 0x33;
const OP_LUI: u32 = 0x37;
const OP_OP_32: u32 = 0x3B;
const OP_BRANCH: u32 = 0x63;
const OP_JALR: u32 = 0x67;
const OP_JAL: u32 = 0x6F;
const EBREAK: u32 = 0x0010_0073;

/// Expands a 16-bit instruction (`c & 3 != 3`) to its 32-bit equivalent, or `None` if the
/// encoding is reserved or belongs to an extension not implemented here.
pub fn expand(c: u16) -> Option<u32> {
    let funct3 = bits(c, 15, 13);
    let rd = bits(c, 11, 7); // also rs1 in quadrants 1/2 full-register forms
    let rs2 = bits(c, 6, 2);
    match (c & 3, funct3) {
        // ---- Quadrant 0 ----
        (0, 0b000) => {
            // C.ADDI4SPN: nzuimm[5:4|9:6|2|3]; nzuimm == 0 is reserved (this includes the
            // all-zero parcel, defined illegal).
            let imm = (bits(c, 12, 11) << 4)
                | (bits(c, 10, 7) << 6)
                | (bit(c, 6) << 2)
                | (bit(c, 5) << 3);
            if imm == 0 {
                return None;
            }
            Some(i_type(imm as i32, 2, 0, creg(c >> 2), OP_IMM))
        }
        (0, 0b010) => {
            // C.LW: uimm[5:3] = c[12:10], uimm[2] = c[6], uimm[6] = c[5].
            let imm = (bits(c, 12, 10) << 3) | (bit(c, 6) << 2) | (bit(c, 5) << 6);
            Some(i_type(
                imm as i32,
                creg(c >> 7),
                0b010,
                creg(c >> 2),
                OP_LOAD,
            ))
        }
        (0, 0b011) => {
            // C.LD (RV64): uimm[5:3] = c[12:10], uimm[7:6] = c[6:5].
            let imm = (bits(c, 12, 10) << 3) | (bits(c, 6, 5) << 6);
            Some(i_type(
                imm as i32,
                creg(c >> 7),
                0b011,
                creg(c >> 2),
                OP_LOAD,
            ))
        }
        (0, 0b110) => {
            // C.SW
            let imm = (bits(c, 12, 10) << 3) | (bit(c, 6) << 2) | (bit(c, 5) << 6);
            Some(s_type(
                imm as i32,
                creg(c >> 2),
                creg(c >> 7),
                0b010,
                OP_STORE,
            ))
        }
        (0, 0b111) => {
            // C.SD (RV64)
            let imm = (bits(c, 12, 10) << 3) | (bits(c, 6, 5) << 6);
            Some(s_type(
                imm as i32,
                creg(c >> 2),
                creg(c >> 7),
                0b011,
                OP_STORE,
            ))
        }
        // 001 C.FLD, 101 C.FSD (D not implemented), 100 reserved (Zcb not implemented).
        (0, _) => None,

        // ---- Quadrant 1 ----
        (1, 0b000) => {
            // C.ADDI (rd = 0: C.NOP / HINT; imm = 0 with rd != 0: HINT).
            let imm = sext((bit(c, 12) << 5) | rs2, 6);
            Some(i_type(imm, rd, 0, rd, OP_IMM))
        }
        (1, 0b001) => {
            // C.ADDIW (RV64); rd = 0 is reserved.
            if rd == 0 {
                return None;
            }
            let imm = sext((bit(c, 12) << 5) | rs2, 6);
            Some(i_type(imm, rd, 0, rd, OP_IMM_32))
        }
        (1, 0b010) => {
            // C.LI (rd = 0: HINT).
            let imm = sext((bit(c, 12) << 5) | rs2, 6);
            Some(i_type(imm, 0, 0, rd, OP_IMM))
        }
        (1, 0b011) => {
            if rd == 2 {
                // C.ADDI16SP: nzimm[9] = c[12], nzimm[4|6|8:7|5] = c[6:2]; 0 reserved.
                let imm = (bit(c, 12) << 9)
                    | (bit(c, 6) << 4)
                    | (bit(c, 5) << 6)
                    | (bits(c, 4, 3) << 7)
                    | (bit(c, 2) << 5);
                if imm == 0 {
                    return None;
                }
                Some(i_type(sext(imm, 10), 2, 0, 2, OP_IMM))
            } else {
                // C.LUI: nzimm[17] = c[12], nzimm[16:12] = c[6:2]; nzimm = 0 reserved;
                // rd = 0 is a HINT.
                let imm = (bit(c, 12) << 5) | rs2;
                if imm == 0 {
                    return None;
                }
                let upper = (sext(imm, 6) as u32) << 12;
                Some(upper | (rd << 7) | OP_LUI)
            }
        }
        (1, 0b100) => {
            let r = creg(c >> 7);
            let shamt = (bit(c, 12) << 5) | rs2;
            match bits(c, 11, 10) {
                // C.SRLI / C.SRAI (RV64: 6-bit shamt; shamt = 0 is a HINT).
                0b00 => Some(i_type(shamt as i32, r, 0b101, r, OP_IMM)),
                0b01 => Some(i_type((0x400 | shamt) as i32, r, 0b101, r, OP_IMM)),
                // C.ANDI
                0b10 => Some(i_type(sext(shamt, 6), r, 0b111, r, OP_IMM)),
                _ => {
                    let r2 = creg(c >> 2);
                    match (bit(c, 12), bits(c, 6, 5)) {
                        (0, 0b00) => Some(r_type(0x20, r2, r, 0b000, r, OP_OP)), // C.SUB
                        (0, 0b01) => Some(r_type(0, r2, r, 0b100, r, OP_OP)),    // C.XOR
                        (0, 0b10) => Some(r_type(0, r2, r, 0b110, r, OP_OP)),    // C.OR
                        (0, _) => Some(r_type(0, r2, r, 0b111, r, OP_OP)),       // C.AND
                        (_, 0b00) => Some(r_type(0x20, r2, r, 0b000, r, OP_OP_32)), // C.SUBW
                        (_, 0b01) => Some(r_type(0, r2, r, 0b000, r, OP_OP_32)), // C.ADDW
                        _ => None, // reserved (Zcb not implemented)
                    }
                }
            }
        }
        (1, 0b101) => {
            // C.J: offset[11|4|9:8|10|6|7|3:1|5] = c[12:2].
            let imm = (bit(c, 12) << 11)
                | (bit(c, 11) << 4)
                | (bits(c, 10, 9) << 8)
                | (bit(c, 8) << 10)
                | (bit(c, 7) << 6)
                | (bit(c, 6) << 7)
                | (bits(c, 5, 3) << 1)
                | (bit(c, 2) << 5);
            Some(j_type(sext(imm, 12), 0))
        }
        (1, _) => {
            // C.BEQZ (110) / C.BNEZ (111): offset[8|4:3] = c[12:10], offset[7:6|2:1|5] = c[6:2].
            let imm = (bit(c, 12) << 8)
                | (bits(c, 11, 10) << 3)
                | (bits(c, 6, 5) << 6)
                | (bits(c, 4, 3) << 1)
                | (bit(c, 2) << 5);
            let f3 = if funct3 == 0b110 { 0b000 } else { 0b001 };
            Some(b_type(sext(imm, 9), 0, creg(c >> 7), f3))
        }

        // ---- Quadrant 2 ----
        (2, 0b000) => {
            // C.SLLI (rd = 0 or shamt = 0: HINT).
            let shamt = (bit(c, 12) << 5) | rs2;
            Some(i_type(shamt as i32, rd, 0b001, rd, OP_IMM))
        }
        (2, 0b010) => {
            // C.LWSP: uimm[5] = c[12], uimm[4:2|7:6] = c[6:2]; rd = 0 reserved.
            if rd == 0 {
                return None;
            }
            let imm = (bit(c, 12) << 5) | (bits(c, 6, 4) << 2) | (bits(c, 3, 2) << 6);
            Some(i_type(imm as i32, 2, 0b010, rd, OP_LOAD))
        }
        (2, 0b011) => {
            // C.LDSP (RV64): uimm[5] = c[12], uimm[4:3|8:6] = c[6:2]; rd = 0 reserved.
            if rd == 0 {
                return None;
            }
            let imm = (bit(c, 12) << 5) | (bits(c, 6, 5) << 3) | (bits(c, 4, 2) << 6);
            Some(i_type(imm as i32, 2, 0b011, rd, OP_LOAD))
        }
        (2, 0b100) => match (bit(c, 12), rd, rs2) {
            (0, 0, 0) => None,                                   // C.JR rs1 = 0: reserved
            (0, _, 0) => Some(i_type(0, rd, 0, 0, OP_JALR)),     // C.JR
            (0, _, _) => Some(r_type(0, rs2, 0, 0, rd, OP_OP)),  // C.MV (rd = 0: HINT)
            (_, 0, 0) => Some(EBREAK),                           // C.EBREAK
            (_, _, 0) => Some(i_type(0, rd, 0, 1, OP_JALR)),     // C.JALR
            (_, _, _) => Some(r_type(0, rs2, rd, 0, rd, OP_OP)), // C.ADD (rd = 0: HINT)
        },
        (2, 0b110) => {
            // C.SWSP: uimm[5:2|7:6] = c[12:7].
            let imm = (bits(c, 12, 9) << 2) | (bits(c, 8, 7) << 6);
            Some(s_type(imm as i32, rs2, 2, 0b010, OP_STORE))
        }
        (2, 0b111) => {
            // C.SDSP (RV64): uimm[5:3|8:6] = c[12:7].
            let imm = (bits(c, 12, 10) << 3) | (bits(c, 9, 7) << 6);
            Some(s_type(imm as i32, rs2, 2, 0b011, OP_STORE))
        }
        // 001 C.FLDSP, 101 C.FSDSP (D not implemented).
        _ => None,
    }
}
