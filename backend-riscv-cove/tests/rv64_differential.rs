//! Differential test of the RV64 guest CPU interpreter against real (or qemu-user) RV64
//! hardware.
//!
//! Random instruction streams from the unprivileged subset (RV64I, M, C; forward-only
//! bounded branches and jumps; loads/stores confined to a scratch buffer addressed from
//! `sp`, which the generator reserves; no ECALL/CSR) are generated from a seeded xorshift
//! PRNG. On `riscv64` each stream runs natively (mmap RW, copy, mprotect RX, `fence.i`,
//! enter through a `global_asm!` trampoline that loads x1..x31 from a context struct and
//! stores them back) and in the interpreter at the same addresses; x1..x31 and the buffer
//! must match. Elsewhere the native half is skipped and the interpreter is self-checked on
//! fixed streams with known results plus invariants on the random streams.
//!
//! Run the native comparison with
//! `cargo test -p backend-riscv-cove --target riscv64gc-unknown-linux-gnu --test rv64_differential`
//! (the runner in `.cargo/config.toml` is qemu-user).

use backend_riscv_cove::model::cpu::{Bus, BusFault, Exit, Rv64Cpu};

/// Scratch buffer size; generated accesses stay in `[sp, sp + BUF)`.
const BUF: usize = 2048;
/// Harness header just below the buffer: `[-24]` initial x31, `[-16]` stash, `[-8]` ctx.
const HDR: usize = 32;
const UNITS: usize = 64;
const STREAMS: u64 = 10_000;
const SEED: u64 = 0x5EED_C0DE_2024_0001;

// ---------------------------------------------------------------------------------------
// PRNG and encoders (independent of the crate's own decoder).
// ---------------------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    /// A register value biased towards edge cases.
    fn value(&mut self) -> u64 {
        match self.below(8) {
            0 => self.pick(&[
                0,
                1,
                u64::MAX,
                i64::MIN as u64,
                i64::MAX as u64,
                0x8000_0000,
                0x7FFF_FFFF,
                0xFFFF_FFFF,
            ]),
            1 => self.below(64),
            2 => (self.next() as i32) as i64 as u64,
            3 => self.next() >> self.below(64),
            _ => self.next(),
        }
    }
}

fn r_type(f7: u32, rs2: u32, rs1: u32, f3: u32, rd: u32, op: u32) -> u32 {
    (f7 << 25) | (rs2 << 20) | (rs1 << 15) | (f3 << 12) | (rd << 7) | op
}
fn i_type(imm: i64, rs1: u32, f3: u32, rd: u32, op: u32) -> u32 {
    ((imm as u32 & 0xFFF) << 20) | (rs1 << 15) | (f3 << 12) | (rd << 7) | op
}
fn s_type(imm: i64, rs2: u32, rs1: u32, f3: u32) -> u32 {
    let imm = imm as u32;
    (((imm >> 5) & 0x7F) << 25)
        | (rs2 << 20)
        | (rs1 << 15)
        | (f3 << 12)
        | ((imm & 0x1F) << 7)
        | 0x23
}
fn b_type(imm: i64, rs2: u32, rs1: u32, f3: u32) -> u32 {
    let imm = imm as u32;
    (((imm >> 12) & 1) << 31)
        | (((imm >> 5) & 0x3F) << 25)
        | (rs2 << 20)
        | (rs1 << 15)
        | (f3 << 12)
        | (((imm >> 1) & 0xF) << 8)
        | (((imm >> 11) & 1) << 7)
        | 0x63
}
fn j_type(imm: i64, rd: u32) -> u32 {
    let imm = imm as u32;
    (((imm >> 20) & 1) << 31)
        | (((imm >> 1) & 0x3FF) << 21)
        | (((imm >> 11) & 1) << 20)
        | (((imm >> 12) & 0xFF) << 12)
        | (rd << 7)
        | 0x6F
}
fn bit(v: u32, n: u32) -> u16 {
    ((v >> n) & 1) as u16
}
fn field(v: u32, hi: u32, lo: u32) -> u16 {
    ((v >> lo) & ((1 << (hi - lo + 1)) - 1)) as u16
}
/// CI format with a 6-bit immediate split imm[5] -> bit 12, imm[4:0] -> bits 6:2.
fn c_ci(f3: u16, imm6: i64, rd: u32, op: u16) -> u16 {
    let v = imm6 as u32;
    (f3 << 13) | (bit(v, 5) << 12) | ((rd as u16) << 7) | (field(v, 4, 0) << 2) | op
}
fn c_addi4spn(rdp: u32, nzuimm: u32) -> u16 {
    (field(nzuimm, 5, 4) << 11)
        | (field(nzuimm, 9, 6) << 7)
        | (bit(nzuimm, 2) << 6)
        | (bit(nzuimm, 3) << 5)
        | (((rdp - 8) as u16) << 2)
}
/// c.lw (f3 = 010) / c.sw (110): uimm[5:3] -> 12:10, uimm[2] -> 6, uimm[6] -> 5.
fn c_lsw(f3: u16, rs1p: u32, rp: u32, uimm: u32) -> u16 {
    (f3 << 13)
        | (field(uimm, 5, 3) << 10)
        | (((rs1p - 8) as u16) << 7)
        | (bit(uimm, 2) << 6)
        | (bit(uimm, 6) << 5)
        | (((rp - 8) as u16) << 2)
}
/// c.ld (011) / c.sd (111): uimm[5:3] -> 12:10, uimm[7:6] -> 6:5.
fn c_lsd(f3: u16, rs1p: u32, rp: u32, uimm: u32) -> u16 {
    (f3 << 13)
        | (field(uimm, 5, 3) << 10)
        | (((rs1p - 8) as u16) << 7)
        | (field(uimm, 7, 6) << 5)
        | (((rp - 8) as u16) << 2)
}
fn c_lwsp(rd: u32, uimm: u32) -> u16 {
    (0b010 << 13)
        | (bit(uimm, 5) << 12)
        | ((rd as u16) << 7)
        | (field(uimm, 4, 2) << 4)
        | (field(uimm, 7, 6) << 2)
        | 2
}
fn c_ldsp(rd: u32, uimm: u32) -> u16 {
    (0b011 << 13)
        | (bit(uimm, 5) << 12)
        | ((rd as u16) << 7)
        | (field(uimm, 4, 3) << 5)
        | (field(uimm, 8, 6) << 2)
        | 2
}
fn c_swsp(rs2: u32, uimm: u32) -> u16 {
    (0b110 << 13) | (field(uimm, 5, 2) << 9) | (field(uimm, 7, 6) << 7) | ((rs2 as u16) << 2) | 2
}
fn c_sdsp(rs2: u32, uimm: u32) -> u16 {
    (0b111 << 13) | (field(uimm, 5, 3) << 10) | (field(uimm, 8, 6) << 7) | ((rs2 as u16) << 2) | 2
}
fn c_addi16sp(nzimm: i64) -> u16 {
    let v = nzimm as u32;
    (0b011 << 13)
        | (bit(v, 9) << 12)
        | (2 << 7)
        | (bit(v, 4) << 6)
        | (bit(v, 6) << 5)
        | (field(v, 8, 7) << 3)
        | (bit(v, 5) << 2)
        | 1
}
fn c_j(off: i64) -> u16 {
    let v = off as u32;
    (0b101 << 13)
        | (bit(v, 11) << 12)
        | (bit(v, 4) << 11)
        | (field(v, 9, 8) << 9)
        | (bit(v, 10) << 8)
        | (bit(v, 6) << 7)
        | (bit(v, 7) << 6)
        | (field(v, 3, 1) << 3)
        | (bit(v, 5) << 2)
        | 1
}
fn c_bz(bnez: bool, rs1p: u32, off: i64) -> u16 {
    let v = off as u32;
    let f3 = if bnez { 0b111 } else { 0b110 };
    (f3 << 13)
        | (bit(v, 8) << 12)
        | (field(v, 4, 3) << 10)
        | (((rs1p - 8) as u16) << 7)
        | (field(v, 7, 6) << 5)
        | (field(v, 2, 1) << 3)
        | (bit(v, 5) << 2)
        | 1
}
/// c.srli (00) / c.srai (01) / c.andi (10): rd' with a 6-bit immediate.
fn c_alu_imm(funct2: u16, rdp: u32, imm6: i64) -> u16 {
    let v = imm6 as u32;
    (0b100 << 13)
        | (bit(v, 5) << 12)
        | (funct2 << 10)
        | (((rdp - 8) as u16) << 7)
        | (field(v, 4, 0) << 2)
        | 1
}
/// c.sub/xor/or/and (w = false, f2 0..3), c.subw/addw (w = true, f2 0..1).
fn c_alu_reg(w: bool, f2: u16, rdp: u32, rs2p: u32) -> u16 {
    (0b100 << 13)
        | (u16::from(w) << 12)
        | (0b11 << 10)
        | (((rdp - 8) as u16) << 7)
        | (f2 << 5)
        | (((rs2p - 8) as u16) << 2)
        | 1
}
/// c.mv (bit12 = 0) / c.add (1); c.jr / c.jalr with rs2 = 0.
fn c_cr(bit12: u16, rd: u32, rs2: u32) -> u16 {
    (0b100 << 13) | (bit12 << 12) | ((rd as u16) << 7) | ((rs2 as u16) << 2) | 2
}

// ---------------------------------------------------------------------------------------
// Stream generator.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Item {
    W(u32),
    H(u16),
    /// Conditional branch to the start of unit `t`.
    Br {
        f3: u32,
        rs1: u32,
        rs2: u32,
        t: usize,
    },
    CBz {
        bnez: bool,
        rs1p: u32,
        t: usize,
    },
    Jal {
        rd: u32,
        t: usize,
    },
    CJ {
        t: usize,
    },
    /// `jalr rd, off(rt)` where `rt` holds the address `back` bytes before this item.
    Jalr {
        rd: u32,
        rt: u32,
        t: usize,
        back: u64,
        odd: bool,
    },
    /// `addi rt, rt, off` where `rt` holds the address `back` bytes before this item.
    AddiTo {
        rt: u32,
        t: usize,
        back: u64,
        odd: bool,
    },
}

impl Item {
    fn len(&self) -> u64 {
        match self {
            Item::H(_) | Item::CBz { .. } | Item::CJ { .. } => 2,
            _ => 4,
        }
    }
}

/// Registers the random code may write (everything but x0 and the buffer base sp).
const WRITABLE: [u32; 30] = [
    1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27,
    28, 29, 30, 31,
];

fn wreg(rng: &mut Rng) -> u32 {
    rng.pick(&WRITABLE)
}
fn rd_any(rng: &mut Rng) -> u32 {
    if rng.chance(3) {
        0
    } else {
        wreg(rng)
    }
}
fn creg(rng: &mut Rng) -> u32 {
    8 + rng.below(8) as u32
}
fn anyreg(rng: &mut Rng) -> u32 {
    rng.below(32) as u32
}

fn gen_unit(rng: &mut Rng, idx: usize, n: usize, out: &mut Vec<Item>) {
    let fwd = |rng: &mut Rng| (idx + 1 + rng.below(4) as usize).min(n);
    match rng.below(100) {
        // R-type I/M, 64- and 32-bit.
        0..=19 => {
            let ops64: [(u32, u32); 18] = [
                (0, 0),
                (0x20, 0),
                (0, 1),
                (0, 2),
                (0, 3),
                (0, 4),
                (0, 5),
                (0x20, 5),
                (0, 6),
                (0, 7),
                (1, 0),
                (1, 1),
                (1, 2),
                (1, 3),
                (1, 4),
                (1, 5),
                (1, 6),
                (1, 7),
            ];
            let ops32: [(u32, u32); 10] = [
                (0, 0),
                (0x20, 0),
                (0, 1),
                (0, 5),
                (0x20, 5),
                (1, 0),
                (1, 4),
                (1, 5),
                (1, 6),
                (1, 7),
            ];
            let (op, (f7, f3)) = if rng.chance(60) {
                (0x33, rng.pick(&ops64))
            } else {
                (0x3B, rng.pick(&ops32))
            };
            out.push(Item::W(r_type(
                f7,
                anyreg(rng),
                anyreg(rng),
                f3,
                rd_any(rng),
                op,
            )));
        }
        // I-type ALU.
        20..=31 => {
            let rd = rd_any(rng);
            let rs1 = anyreg(rng);
            let imm = rng.range(-2048, 2047);
            let w = match rng.below(13) {
                0 => i_type(imm, rs1, 0, rd, 0x13),
                1 => i_type(imm, rs1, 2, rd, 0x13),
                2 => i_type(imm, rs1, 3, rd, 0x13),
                3 => i_type(imm, rs1, 4, rd, 0x13),
                4 => i_type(imm, rs1, 6, rd, 0x13),
                5 => i_type(imm, rs1, 7, rd, 0x13),
                6 => i_type(rng.range(0, 63), rs1, 1, rd, 0x13),
                7 => i_type(rng.range(0, 63), rs1, 5, rd, 0x13),
                8 => i_type(0x400 | rng.range(0, 63), rs1, 5, rd, 0x13),
                9 => i_type(imm, rs1, 0, rd, 0x1B),
                10 => i_type(rng.range(0, 31), rs1, 1, rd, 0x1B),
                11 => i_type(rng.range(0, 31), rs1, 5, rd, 0x1B),
                _ => i_type(0x400 | rng.range(0, 31), rs1, 5, rd, 0x1B),
            };
            out.push(Item::W(w));
        }
        // LUI / AUIPC.
        32..=35 => {
            let op = if rng.chance(50) { 0x37 } else { 0x17 };
            out.push(Item::W(
                ((rng.next() as u32) & 0xFFFF_F000) | (rd_any(rng) << 7) | op,
            ));
        }
        // Compressed ALU.
        36..=51 => {
            let h = match rng.below(15) {
                0 => 0x0001, // c.nop
                1 => {
                    let rd = wreg(rng); // c.addi
                    c_ci(0b000, rng.range(-32, 31), rd, 1)
                }
                2 => c_ci(0b001, rng.range(-32, 31), wreg(rng), 1), // c.addiw
                3 => c_ci(0b010, rng.range(-32, 31), wreg(rng), 1), // c.li
                4 => {
                    // c.lui, rd not in {0, 2}, nzimm != 0
                    let mut imm = rng.range(-32, 31);
                    if imm == 0 {
                        imm = 1;
                    }
                    c_ci(0b011, imm, wreg(rng), 1)
                }
                5 => c_alu_imm(0b00, creg(rng), rng.range(1, 63)), // c.srli
                6 => c_alu_imm(0b01, creg(rng), rng.range(1, 63)), // c.srai
                7 => c_alu_imm(0b10, creg(rng), rng.range(-32, 31)), // c.andi
                8 => c_alu_reg(false, rng.below(4) as u16, creg(rng), creg(rng)),
                9 => c_alu_reg(true, rng.below(2) as u16, creg(rng), creg(rng)),
                10 => c_ci(0b000, rng.range(1, 63), wreg(rng), 2), // c.slli
                11 | 12 => c_cr(0, wreg(rng), 1 + rng.below(31) as u32), // c.mv
                _ => c_cr(1, wreg(rng), 1 + rng.below(31) as u32), // c.add
            };
            out.push(Item::H(h));
        }
        // 32-bit load/store through a computed base.
        52..=63 => {
            let f3 = rng.below(7) as u32; // for stores only 0..=3 is used
            let store = rng.chance(40);
            let size: i64 = 1 << (f3 & 3);
            let a = rng.range(0, (BUF as i64 - size) / size) * size;
            let mut imm = rng.range(-256, 255) / size * size;
            let mut k = a - imm;
            if !(-2048..=2047).contains(&k) {
                imm = 0;
                k = a;
            }
            let base = wreg(rng);
            out.push(Item::W(i_type(k, 2, 0, base, 0x13))); // addi base, sp, k
            if store {
                out.push(Item::W(s_type(imm, anyreg(rng), base, f3 & 3)));
            } else {
                out.push(Item::W(i_type(imm, base, f3, rd_any(rng), 0x03)));
            }
        }
        // Compressed load/store via c.addi4spn.
        64..=71 => {
            let base = creg(rng);
            let r = creg(rng);
            let dbl = rng.chance(50);
            let step = if dbl { 8 } else { 4 };
            let nz = (rng.range(1, 1016 / step) * step) as u32;
            let uimm = if dbl {
                rng.below(32) as u32 * 8
            } else {
                rng.below(32) as u32 * 4
            };
            out.push(Item::H(c_addi4spn(base, nz)));
            let store = rng.chance(50);
            out.push(Item::H(match (dbl, store) {
                (false, false) => c_lsw(0b010, base, r, uimm),
                (false, true) => c_lsw(0b110, base, r, uimm),
                (true, false) => c_lsd(0b011, base, r, uimm),
                (true, true) => c_lsd(0b111, base, r, uimm),
            }));
        }
        // sp-relative compressed load/store, sometimes inside a c.addi16sp pair.
        72..=79 => {
            let shift = if rng.chance(30) {
                16 * rng.range(1, 31)
            } else {
                0
            };
            if shift != 0 {
                out.push(Item::H(c_addi16sp(shift)));
            }
            out.push(Item::H(match rng.below(4) {
                0 => c_lwsp(wreg(rng), rng.below(64) as u32 * 4),
                1 => c_ldsp(wreg(rng), rng.below(64) as u32 * 8),
                2 => c_swsp(anyreg(rng), rng.below(64) as u32 * 4),
                _ => c_sdsp(anyreg(rng), rng.below(64) as u32 * 8),
            }));
            if shift != 0 {
                out.push(Item::H(c_addi16sp(-shift)));
            }
        }
        // Forward conditional branches.
        80..=87 => {
            let f3 = rng.pick(&[0, 1, 4, 5, 6, 7]);
            out.push(Item::Br {
                f3,
                rs1: anyreg(rng),
                rs2: anyreg(rng),
                t: fwd(rng),
            });
        }
        88..=91 => out.push(Item::CBz {
            bnez: rng.chance(50),
            rs1p: creg(rng),
            t: fwd(rng),
        }),
        92..=93 => {
            let t = fwd(rng);
            out.push(if rng.chance(50) {
                Item::Jal { rd: rd_any(rng), t }
            } else {
                Item::CJ { t }
            });
        }
        94..=96 => {
            let rt = wreg(rng);
            let t = fwd(rng);
            out.push(Item::W((rt << 7) | 0x17)); // auipc rt, 0
            out.push(Item::Jalr {
                rd: rd_any(rng),
                rt,
                t,
                back: 4,
                odd: rng.chance(30),
            });
        }
        97..=98 => {
            let rt = wreg(rng);
            let t = fwd(rng);
            out.push(Item::W((rt << 7) | 0x17)); // auipc rt, 0
            out.push(Item::AddiTo {
                rt,
                t,
                back: 4,
                odd: rng.chance(30),
            });
            out.push(Item::H(c_cr(rng.below(2) as u16, rt, 0))); // c.jr / c.jalr rt
        }
        // fence rw,rw / fence.i
        _ => out.push(Item::W(if rng.chance(50) {
            0x0330_000F
        } else {
            0x0000_100F
        })),
    }
}

/// The code image: entry stub + generated code; returns (bytes, offset of the exit).
fn assemble(rng: &mut Rng) -> (Vec<u8>, u64) {
    let mut units: Vec<Vec<Item>> = Vec::with_capacity(UNITS);
    for idx in 0..UNITS {
        let mut u = Vec::new();
        gen_unit(rng, idx, UNITS, &mut u);
        units.push(u);
    }
    // Entry stub: ld x31, -24(sp) (restores the initial x31 the trampoline used to jump).
    let mut code = Vec::new();
    code.extend_from_slice(&i_type(-24, 2, 3, 31, 0x03).to_le_bytes());
    let mut starts = Vec::with_capacity(UNITS + 1);
    let mut off = code.len() as u64;
    for u in &units {
        starts.push(off);
        off += u.iter().map(Item::len).sum::<u64>();
    }
    starts.push(off);
    let mut pc = starts[0];
    for u in &units {
        for item in u {
            let rel = |t: usize| starts[t] as i64 - pc as i64;
            match *item {
                Item::W(w) => code.extend_from_slice(&w.to_le_bytes()),
                Item::H(h) => code.extend_from_slice(&h.to_le_bytes()),
                Item::Br { f3, rs1, rs2, t } => {
                    code.extend_from_slice(&b_type(rel(t), rs2, rs1, f3).to_le_bytes())
                }
                Item::CBz { bnez, rs1p, t } => {
                    code.extend_from_slice(&c_bz(bnez, rs1p, rel(t)).to_le_bytes())
                }
                Item::Jal { rd, t } => code.extend_from_slice(&j_type(rel(t), rd).to_le_bytes()),
                Item::CJ { t } => code.extend_from_slice(&c_j(rel(t)).to_le_bytes()),
                Item::Jalr {
                    rd,
                    rt,
                    t,
                    back,
                    odd,
                } => {
                    let imm = rel(t) + back as i64 + i64::from(odd);
                    code.extend_from_slice(&i_type(imm, rt, 0, rd, 0x67).to_le_bytes());
                }
                Item::AddiTo { rt, t, back, odd } => {
                    let imm = rel(t) + back as i64 + i64::from(odd);
                    code.extend_from_slice(&i_type(imm, rt, 0, rt, 0x13).to_le_bytes());
                }
            }
            pc += item.len();
        }
    }
    assert_eq!(code.len() as u64, off);
    (code, off)
}

// ---------------------------------------------------------------------------------------
// Interpreter side.
// ---------------------------------------------------------------------------------------

struct Mem {
    code_base: u64,
    code: Vec<u8>,
    data_base: u64,
    data: Vec<u8>,
}

impl Mem {
    fn slice(&mut self, addr: u64, size: u64) -> Result<&mut [u8], BusFault> {
        for (base, bytes) in [
            (self.code_base, &mut self.code),
            (self.data_base, &mut self.data),
        ] {
            if addr >= base && addr.wrapping_add(size) <= base + bytes.len() as u64 {
                let o = (addr - base) as usize;
                return Ok(&mut bytes[o..o + size as usize]);
            }
        }
        Err(BusFault::AccessFault)
    }
}

impl Bus for Mem {
    fn read(&mut self, addr: u64, size: u8) -> Result<u64, BusFault> {
        let s = self.slice(addr, u64::from(size))?;
        let mut b = [0u8; 8];
        b[..s.len()].copy_from_slice(s);
        Ok(u64::from_le_bytes(b))
    }
    fn write(&mut self, addr: u64, size: u8, value: u64) -> Result<(), BusFault> {
        let s = self.slice(addr, u64::from(size))?;
        let n = s.len();
        s.copy_from_slice(&value.to_le_bytes()[..n]);
        Ok(())
    }
    fn fetch(&mut self, addr: u64) -> Result<u16, BusFault> {
        let s = self.slice(addr, 2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
}

/// State of one run: registers and the buffer (header excluded).
#[derive(Debug, PartialEq, Eq, Clone)]
struct Outcome {
    regs: [u64; 32],
    buf: Vec<u8>,
}

/// Runs `code` (entry at `code_base`) in the interpreter until pc reaches the exit offset.
fn interpret(
    code: &[u8],
    exit_off: u64,
    code_base: u64,
    data_base: u64,
    data: &[u8],
    regs: &[u64; 32],
) -> Result<Outcome, String> {
    let mut mem = Mem {
        code_base,
        code: code.to_vec(),
        data_base,
        data: data.to_vec(),
    };
    let mut cpu = Rv64Cpu::new();
    for (n, &v) in regs.iter().enumerate() {
        cpu.set_x(n as u8, v);
    }
    cpu.set_pc(code_base);
    let exit = code_base + exit_off;
    let mut steps = 0u64;
    while cpu.pc() != exit {
        if steps > 1_000_000 {
            return Err(format!("no progress: pc {:#x}", cpu.pc()));
        }
        if let Some(e) = cpu.step(&mut mem) {
            return Err(format!(
                "unexpected exit {e:?} at offset {:#x}",
                cpu.pc().wrapping_sub(code_base)
            ));
        }
        steps += 1;
    }
    if cpu.run(&mut mem, 0) != Exit::Budget {
        return Err("run(0) must return Budget".into());
    }
    let mut out = [0u64; 32];
    for (n, r) in out.iter_mut().enumerate() {
        *r = cpu.x(n as u8);
    }
    Ok(Outcome {
        regs: out,
        buf: mem.data[HDR..].to_vec(),
    })
}

/// Initial registers and buffer for a stream. `regs[2]` = buffer base, `regs[31]` = entry.
fn initial_state(
    rng: &mut Rng,
    code_base: u64,
    data_base: u64,
    ctx_addr: u64,
) -> ([u64; 32], Vec<u8>) {
    let mut regs = [0u64; 32];
    for r in regs.iter_mut().skip(1) {
        *r = rng.value();
    }
    let x31 = regs[31];
    regs[2] = data_base + HDR as u64;
    regs[31] = code_base;
    let mut data = vec![0u8; HDR + BUF];
    for chunk in data[HDR..].chunks_mut(8) {
        let v = rng.next().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    data[HDR - 24..HDR - 16].copy_from_slice(&x31.to_le_bytes());
    data[HDR - 8..HDR].copy_from_slice(&ctx_addr.to_le_bytes());
    (regs, data)
}

fn dump(code: &[u8]) -> String {
    code.chunks(2)
        .map(|c| format!("{:02x}{:02x}", c[1], c[0]))
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------------
// Native side (riscv64 only).
// ---------------------------------------------------------------------------------------

#[cfg(target_arch = "riscv64")]
mod native {
    use super::{Outcome, BUF, HDR};

    /// Trampoline context. Offsets are used by the assembly below.
    #[repr(C)]
    pub struct Ctx {
        pub regs: [u64; 32], // 0
        pub host_sp: u64,    // 256
        pub entry: u64,      // 264
        pub cont: u64,       // 272
    }

    core::arch::global_asm!(
        ".section .text.cvm_rv_enter,\"ax\",@progbits",
        ".globl cvm_rv_enter",
        ".type cvm_rv_enter,@function",
        ".p2align 2",
        "cvm_rv_enter:",
        "addi sp, sp, -128",
        "sd ra, 0(sp)",
        "sd gp, 8(sp)",
        "sd tp, 16(sp)",
        "sd s0, 24(sp)",
        "sd s1, 32(sp)",
        "sd s2, 40(sp)",
        "sd s3, 48(sp)",
        "sd s4, 56(sp)",
        "sd s5, 64(sp)",
        "sd s6, 72(sp)",
        "sd s7, 80(sp)",
        "sd s8, 88(sp)",
        "sd s9, 96(sp)",
        "sd s10, 104(sp)",
        "sd s11, 112(sp)",
        "sd sp, 256(a0)",
        "lla t0, 1f",
        "sd t0, 272(a0)",
        "mv x31, a0",
        "ld x1, 8(x31)",
        "ld x2, 16(x31)",
        "ld x3, 24(x31)",
        "ld x4, 32(x31)",
        "ld x5, 40(x31)",
        "ld x6, 48(x31)",
        "ld x7, 56(x31)",
        "ld x8, 64(x31)",
        "ld x9, 72(x31)",
        "ld x10, 80(x31)",
        "ld x11, 88(x31)",
        "ld x12, 96(x31)",
        "ld x13, 104(x31)",
        "ld x14, 112(x31)",
        "ld x15, 120(x31)",
        "ld x16, 128(x31)",
        "ld x17, 136(x31)",
        "ld x18, 144(x31)",
        "ld x19, 152(x31)",
        "ld x20, 160(x31)",
        "ld x21, 168(x31)",
        "ld x22, 176(x31)",
        "ld x23, 184(x31)",
        "ld x24, 192(x31)",
        "ld x25, 200(x31)",
        "ld x26, 208(x31)",
        "ld x27, 216(x31)",
        "ld x28, 224(x31)",
        "ld x29, 232(x31)",
        "ld x30, 240(x31)",
        "ld x31, 264(x31)",
        "jr x31",
        "1:",
        "ld ra, 0(sp)",
        "ld gp, 8(sp)",
        "ld tp, 16(sp)",
        "ld s0, 24(sp)",
        "ld s1, 32(sp)",
        "ld s2, 40(sp)",
        "ld s3, 48(sp)",
        "ld s4, 56(sp)",
        "ld s5, 64(sp)",
        "ld s6, 72(sp)",
        "ld s7, 80(sp)",
        "ld s8, 88(sp)",
        "ld s9, 96(sp)",
        "ld s10, 104(sp)",
        "ld s11, 112(sp)",
        "addi sp, sp, 128",
        "ret",
        ".size cvm_rv_enter, .-cvm_rv_enter",
        // Exit stub, copied after the generated code (position-independent): stash x5 below
        // the buffer, fetch the ctx pointer from the header, store x1..x31, restore the host
        // stack and jump back into the trampoline.
        ".section .rodata.cvm_rv_exit_stub,\"a\",@progbits",
        ".globl cvm_rv_exit_stub",
        ".globl cvm_rv_exit_stub_end",
        ".p2align 2",
        "cvm_rv_exit_stub:",
        "sd x5, -16(sp)",
        "ld x5, -8(sp)",
        "sd x1, 8(x5)",
        "sd x2, 16(x5)",
        "sd x3, 24(x5)",
        "sd x4, 32(x5)",
        "sd x6, 48(x5)",
        "sd x7, 56(x5)",
        "sd x8, 64(x5)",
        "sd x9, 72(x5)",
        "sd x10, 80(x5)",
        "sd x11, 88(x5)",
        "sd x12, 96(x5)",
        "sd x13, 104(x5)",
        "sd x14, 112(x5)",
        "sd x15, 120(x5)",
        "sd x16, 128(x5)",
        "sd x17, 136(x5)",
        "sd x18, 144(x5)",
        "sd x19, 152(x5)",
        "sd x20, 160(x5)",
        "sd x21, 168(x5)",
        "sd x22, 176(x5)",
        "sd x23, 184(x5)",
        "sd x24, 192(x5)",
        "sd x25, 200(x5)",
        "sd x26, 208(x5)",
        "sd x27, 216(x5)",
        "sd x28, 224(x5)",
        "sd x29, 232(x5)",
        "sd x30, 240(x5)",
        "sd x31, 248(x5)",
        "ld x6, -16(sp)",
        "sd x6, 40(x5)",
        "ld sp, 256(x5)",
        "ld x6, 272(x5)",
        "jr x6",
        "cvm_rv_exit_stub_end:",
        ".text",
    );

    extern "C" {
        fn cvm_rv_enter(ctx: *mut Ctx);
        static cvm_rv_exit_stub: [u8; 0];
        static cvm_rv_exit_stub_end: [u8; 0];
    }

    /// The exit stub's machine code.
    pub fn exit_stub() -> &'static [u8] {
        // SAFETY: both symbols label the same read-only data section emitted above, start
        // before end; the bytes between them are initialized and never written.
        unsafe {
            let start = core::ptr::addr_of!(cvm_rv_exit_stub) as *const u8;
            let end = core::ptr::addr_of!(cvm_rv_exit_stub_end) as *const u8;
            core::slice::from_raw_parts(start, end as usize - start as usize)
        }
    }

    /// An anonymous RW mapping.
    pub struct Map {
        pub ptr: *mut u8,
        pub len: usize,
    }

    impl Map {
        pub fn new(len: usize) -> Map {
            // SAFETY: anonymous private mapping with no address hint; the result is checked.
            let p = unsafe {
                libc::mmap(
                    core::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(p, libc::MAP_FAILED, "mmap");
            Map {
                ptr: p as *mut u8,
                len,
            }
        }
        pub fn protect(&self, prot: libc::c_int) {
            // SAFETY: (ptr, len) is exactly a mapping we own.
            let rc = unsafe { libc::mprotect(self.ptr as *mut libc::c_void, self.len, prot) };
            assert_eq!(rc, 0, "mprotect");
        }
        pub fn addr(&self) -> u64 {
            self.ptr as u64
        }
    }

    impl Drop for Map {
        fn drop(&mut self) {
            // SAFETY: unmapping our own mapping once.
            unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
        }
    }

    /// Runs the code image natively. `data` is the header + buffer image.
    pub fn run(code_map: &Map, data_map: &Map, code: &[u8], data: &[u8], ctx: &mut Ctx) -> Outcome {
        assert!(code.len() + exit_stub().len() <= code_map.len);
        assert!(data.len() <= data_map.len);
        code_map.protect(libc::PROT_READ | libc::PROT_WRITE);
        // SAFETY: the mappings are RW now and large enough (checked above); the sources are
        // distinct Rust allocations.
        unsafe {
            core::ptr::copy_nonoverlapping(code.as_ptr(), code_map.ptr, code.len());
            let stub = exit_stub();
            core::ptr::copy_nonoverlapping(stub.as_ptr(), code_map.ptr.add(code.len()), stub.len());
            core::ptr::copy_nonoverlapping(data.as_ptr(), data_map.ptr, data.len());
        }
        code_map.protect(libc::PROT_READ | libc::PROT_EXEC);
        // SAFETY: fence.i only orders instruction fetch after the stores above.
        unsafe { core::arch::asm!("fence.i") };
        ctx.entry = code_map.addr();
        // SAFETY: the code image only touches the buffer and header in `data_map` (through
        // sp, which the trampoline sets from ctx.regs[2]), only jumps forward within the
        // image, and ends in the exit stub, which stores the registers to `ctx` (whose
        // address is in the header) and returns through the trampoline, which restores all
        // callee-saved registers, gp, tp, ra and sp.
        unsafe { cvm_rv_enter(ctx) };
        let mut buf = vec![0u8; BUF];
        // SAFETY: data_map is at least HDR + BUF bytes (checked above) and still mapped.
        unsafe { core::ptr::copy_nonoverlapping(data_map.ptr.add(HDR), buf.as_mut_ptr(), BUF) };
        Outcome {
            regs: ctx.regs,
            buf,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------------------

#[test]
fn encoders_match_assembler() {
    // riscv64-linux-gnu-as -march=rv64gc + objdump -M no-aliases
    assert_eq!(c_addi4spn(8, 8), 0x0020); // c.addi4spn s0,sp,8
    assert_eq!(c_lsw(0b010, 9, 15, 64), 0x40bc); // c.lw a5,64(s1)
    assert_eq!(c_lsd(0b011, 11, 10, 128), 0x61c8); // c.ld a0,128(a1)
    assert_eq!(c_lwsp(10, 132), 0x451a); // c.lwsp a0,132(sp)
    assert_eq!(c_ldsp(9, 264), 0x64b2); // c.ldsp s1,264(sp)
    assert_eq!(c_swsp(5, 196), 0xc396); // c.swsp t0,196(sp)
    assert_eq!(c_sdsp(17, 392), 0xe746); // c.sdsp a7,392(sp)
    assert_eq!(c_addi16sp(272), 0x6151); // c.addi16sp sp,272
    assert_eq!(c_addi16sp(-512), 0x7101); // c.addi16sp sp,-512
    assert_eq!(c_ci(0b011, 3, 10, 1), 0x650d); // c.lui a0,0x3
    assert_eq!(c_ci(0b000, -7, 10, 1), 0x1565); // c.addi a0,-7
    assert_eq!(c_j(2046), 0xaffd); // c.j .+2046
    assert_eq!(c_bz(true, 9, -256), 0xf081); // c.bnez s1,.-256
    assert_eq!(c_bz(false, 10, 254), 0xcd7d); // c.beqz a0,.+254
    assert_eq!(c_alu_imm(0b00, 10, 63), 0x917d); // c.srli a0,63
    assert_eq!(c_alu_reg(true, 0, 10, 15), 0x9d1d); // c.subw a0,a5
    assert_eq!(c_cr(1, 1, 31), 0x90fe); // c.add ra,t6
    assert_eq!(c_cr(0, 11, 0), 0x8582); // c.jr a1
    assert_eq!(i_type(13, 5, 0, 1, 0x67), 0x00d2_80e7); // jalr ra,13(t0)
    assert_eq!(i_type(-100, 2, 0, 18, 0x13), 0xf9c1_0913); // addi s2,sp,-100
    assert_eq!(b_type(254, 0, 10, 0), 0x0e05_0f63); // beq a0,zero,.+254
    assert_eq!(j_type(-2048, 0), 0x801f_f06f); // jal zero,.-2048
}

/// Fixed programs with known results (run on every host).
#[test]
fn interpreter_fixed_streams() {
    let code_base = 0x1000_0000u64;
    let data_base = 0x2000_0000u64;
    // Program 1: sum 1..=10 with a backward loop in mixed 32/16-bit code, then store it.
    //   c.li a0, 0          ; c.li a1, 10
    // loop:
    //   c.add a0, a1        ; c.addi a1, -1 ; c.bnez a1, loop
    //   c.sdsp a0, 8(sp)    ; ld a2, 8(sp)  ; mulw a3, a2, a2 ; divu a4, a3, a1 (by 0)
    let mut code = Vec::new();
    for h in [
        c_ci(0b010, 0, 10, 1),
        c_ci(0b010, 10, 11, 1),
        c_cr(1, 10, 11),
        c_ci(0b000, -1, 11, 1),
        c_bz(true, 11, -4),
        c_sdsp(10, 8),
    ] {
        code.extend_from_slice(&h.to_le_bytes());
    }
    for w in [
        i_type(8, 2, 3, 12, 0x03),
        r_type(1, 12, 12, 0, 13, 0x3B),
        r_type(1, 11, 13, 5, 14, 0x33),
    ] {
        code.extend_from_slice(&w.to_le_bytes());
    }
    let exit = code.len() as u64;
    let mut regs = [0u64; 32];
    regs[2] = data_base + HDR as u64;
    let data = vec![0u8; HDR + BUF];
    let out = interpret(&code, exit, code_base, data_base, &data, &regs).unwrap();
    assert_eq!(out.regs[10], 55);
    assert_eq!(out.regs[11], 0);
    assert_eq!(out.regs[12], 55);
    assert_eq!(out.regs[13], 3025);
    assert_eq!(out.regs[14], u64::MAX, "divu by zero");
    assert_eq!(&out.buf[8..16], &55u64.to_le_bytes());

    // Program 2: jalr with an odd offset lands on the even address; link is pc + 4.
    //   auipc t0, 0 ; jalr ra, 13(t0) ; (skipped: c.li a0, 1; c.li a0, 2; c.li a0, 3) ; c.li a1, 7
    let mut code = Vec::new();
    code.extend_from_slice(&0x0000_0297u32.to_le_bytes());
    code.extend_from_slice(&i_type(13, 5, 0, 1, 0x67).to_le_bytes());
    for h in [
        c_ci(0b010, 1, 10, 1),
        c_ci(0b010, 2, 10, 1),
        c_ci(0b010, 3, 10, 1),
        c_ci(0b010, 7, 11, 1),
    ] {
        code.extend_from_slice(&h.to_le_bytes());
    }
    let out = interpret(&code, code.len() as u64, code_base, data_base, &data, &regs).unwrap();
    assert_eq!((out.regs[10], out.regs[11]), (3, 7));
    assert_eq!(out.regs[1], code_base + 8);
}

#[test]
fn differential_random_streams() {
    let mut rng = Rng(SEED);

    #[cfg(target_arch = "riscv64")]
    let (code_map, data_map) = (native::Map::new(64 * 1024), native::Map::new(16 * 1024));
    #[cfg(target_arch = "riscv64")]
    let mut ctx = native::Ctx {
        regs: [0; 32],
        host_sp: 0,
        entry: 0,
        cont: 0,
    };
    #[cfg(target_arch = "riscv64")]
    let (code_base, data_base, ctx_addr) = (
        code_map.addr(),
        data_map.addr(),
        core::ptr::addr_of!(ctx) as u64,
    );
    #[cfg(not(target_arch = "riscv64"))]
    let (code_base, data_base, ctx_addr) = (0x1000_0000u64, 0x2000_0000u64, 0u64);
    #[cfg(not(target_arch = "riscv64"))]
    {
        println!(
            "skipped: native RV64 comparison runs under qemu-user via `cargo test -p backend-riscv-cove --target riscv64gc-unknown-linux-gnu --test rv64_differential`"
        );
    }

    let mut executed = 0usize;
    for stream in 0..STREAMS {
        let (code, exit_off) = assemble(&mut rng);
        let (regs, data) = initial_state(&mut rng, code_base, data_base, ctx_addr);
        let interp = match interpret(&code, exit_off, code_base, data_base, &data, &regs) {
            Ok(o) => o,
            Err(e) => panic!("stream {stream}: interpreter: {e}\ncode: {}", dump(&code)),
        };
        // Self-checks that hold on every host.
        assert_eq!(
            interp.regs[2], regs[2],
            "stream {stream}: sp must be preserved"
        );
        assert_eq!(interp.regs[0], 0);
        executed += code.len();

        #[cfg(target_arch = "riscv64")]
        {
            ctx.regs = regs;
            let nat = native::run(&code_map, &data_map, &code, &data, &mut ctx);
            if nat != interp {
                let mut diffs = String::new();
                for n in 1..32 {
                    if nat.regs[n] != interp.regs[n] {
                        diffs += &format!(
                            "  x{n}: native {:#018x} interp {:#018x}\n",
                            nat.regs[n], interp.regs[n]
                        );
                    }
                }
                for (o, (a, b)) in nat.buf.iter().zip(&interp.buf).enumerate() {
                    if a != b {
                        diffs += &format!("  buf[{o}]: native {a:#04x} interp {b:#04x}\n");
                    }
                }
                panic!(
                    "stream {stream} differs (code at {code_base:#x}, buffer at {:#x}):\n{diffs}initial regs: {regs:#x?}\ncode: {}",
                    data_base + HDR as u64,
                    dump(&code)
                );
            }
        }
    }
    assert!(executed > STREAMS as usize * UNITS * 2);
    #[cfg(target_arch = "riscv64")]
    println!("compared {STREAMS} streams natively ({executed} bytes of code)");
}
