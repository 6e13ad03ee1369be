//! Unit tests. Instruction words were assembled with `riscv64-linux-gnu-as -march=rv64gc_h`
//! and checked with `riscv64-linux-gnu-objdump -d -M no-aliases`; the assembly is in the
//! comments next to each constant.

use super::csr::*;
use super::trap::*;
use super::*;

const RAM: u64 = 0x8000_0000;
const RAM_SIZE: usize = 0x1_0000;
/// Addresses in [GPF_BASE, GPF_BASE + 1 MiB) are unmapped in the G-stage.
const GPF_BASE: u64 = 0x9000_0000;

struct TestBus {
    mem: Vec<u8>,
    reads: Vec<(u64, u8)>,
    writes: Vec<(u64, u8, u64)>,
}

impl TestBus {
    fn new() -> Self {
        Self {
            mem: vec![0; RAM_SIZE],
            reads: Vec::new(),
            writes: Vec::new(),
        }
    }
    fn check(addr: u64, size: u64) -> Result<usize, BusFault> {
        if addr >= RAM && addr + size <= RAM + RAM_SIZE as u64 {
            Ok((addr - RAM) as usize)
        } else if (GPF_BASE..GPF_BASE + 0x10_0000).contains(&addr) {
            Err(BusFault::GuestPageFault)
        } else {
            Err(BusFault::AccessFault)
        }
    }
    fn load_code(&mut self, at: u64, words: &[u32]) {
        let mut off = (at - RAM) as usize;
        for w in words {
            self.mem[off..off + 4].copy_from_slice(&w.to_le_bytes());
            off += 4;
        }
    }
    fn load_half(&mut self, at: u64, halves: &[u16]) {
        let mut off = (at - RAM) as usize;
        for h in halves {
            self.mem[off..off + 2].copy_from_slice(&h.to_le_bytes());
            off += 2;
        }
    }
    fn peek(&self, addr: u64, size: usize) -> u64 {
        let off = (addr - RAM) as usize;
        let mut b = [0u8; 8];
        b[..size].copy_from_slice(&self.mem[off..off + size]);
        u64::from_le_bytes(b)
    }
    fn poke(&mut self, addr: u64, size: usize, v: u64) {
        let off = (addr - RAM) as usize;
        self.mem[off..off + size].copy_from_slice(&v.to_le_bytes()[..size]);
    }
}

impl Bus for TestBus {
    fn read(&mut self, addr: u64, size: u8) -> Result<u64, BusFault> {
        self.reads.push((addr, size));
        let off = Self::check(addr, u64::from(size))?;
        let mut b = [0u8; 8];
        b[..usize::from(size)].copy_from_slice(&self.mem[off..off + usize::from(size)]);
        // Junk above the access width must be ignored by the CPU.
        Ok(u64::from_le_bytes(b) | if size < 8 { 0xDEAD_0000_0000_0000 } else { 0 })
    }
    fn write(&mut self, addr: u64, size: u8, value: u64) -> Result<(), BusFault> {
        self.writes.push((addr, size, value));
        let off = Self::check(addr, u64::from(size))?;
        self.mem[off..off + usize::from(size)]
            .copy_from_slice(&value.to_le_bytes()[..usize::from(size)]);
        Ok(())
    }
    fn fetch(&mut self, addr: u64) -> Result<u16, BusFault> {
        let off = Self::check(addr, 2)?;
        Ok(u16::from_le_bytes([self.mem[off], self.mem[off + 1]]))
    }
}

// ---- tiny encoders (cross-checked against the assembler constants below) ----
fn r(f7: u32, rs2: u32, rs1: u32, f3: u32, rd: u32, op: u32) -> u32 {
    (f7 << 25) | (rs2 << 20) | (rs1 << 15) | (f3 << 12) | (rd << 7) | op
}
fn i(imm: i32, rs1: u32, f3: u32, rd: u32, op: u32) -> u32 {
    ((imm as u32 & 0xFFF) << 20) | (rs1 << 15) | (f3 << 12) | (rd << 7) | op
}
fn s(imm: i32, rs2: u32, rs1: u32, f3: u32) -> u32 {
    let imm = imm as u32;
    (((imm >> 5) & 0x7F) << 25)
        | (rs2 << 20)
        | (rs1 << 15)
        | (f3 << 12)
        | ((imm & 0x1F) << 7)
        | 0x23
}
fn b(imm: i32, rs2: u32, rs1: u32, f3: u32) -> u32 {
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
fn j(imm: i32, rd: u32) -> u32 {
    let imm = imm as u32;
    (((imm >> 20) & 1) << 31)
        | (((imm >> 1) & 0x3FF) << 21)
        | (((imm >> 11) & 1) << 20)
        | (((imm >> 12) & 0xFF) << 12)
        | (rd << 7)
        | 0x6F
}
fn csrw(f3: u32, csr: u16, rs1: u32, rd: u32) -> u32 {
    (u32::from(csr) << 20) | (rs1 << 15) | (f3 << 12) | (rd << 7) | 0x73
}

/// Runs `words` at RAM from a CPU with the given registers, up to `max` instructions.
fn run_words(words: &[u32], regs: &[(u8, u64)]) -> (Rv64Cpu, TestBus, Exit) {
    let mut bus = TestBus::new();
    bus.load_code(RAM, words);
    let mut cpu = Rv64Cpu::new();
    cpu.set_pc(RAM);
    for &(n, v) in regs {
        cpu.set_x(n, v);
    }
    let exit = cpu.run(&mut bus, words.len() as u64);
    (cpu, bus, exit)
}

fn trap_of(exit: Exit) -> Trap {
    match exit {
        Exit::Trap(t) => t,
        Exit::Budget => panic!("expected a trap, got Budget"),
    }
}

/// One instruction with inputs a1 = `a`, a2 = `b`; returns a0.
fn op1(word: u32, a: u64, bv: u64) -> u64 {
    let (cpu, _, exit) = run_words(&[word], &[(11, a), (12, bv)]);
    assert_eq!(exit, Exit::Budget, "insn {word:#010x} trapped");
    cpu.x(10)
}

#[test]
fn encoders_match_assembler() {
    assert_eq!(i(8, 11, 2, 15, 0x03), 0x0085_a783); // lw a5, 8(a1)
    assert_eq!(i(-1, 8, 0, 10, 0x03), 0xfff4_0503); // lb a0, -1(s0)
    assert_eq!(s(-4, 13, 10, 2), 0xfed5_2e23); // sw a3, -4(a0)
    assert_eq!(s(8, 14, 10, 3), 0x00e5_3423); // sd a4, 8(a0)
    assert_eq!(r(1, 12, 11, 1, 10, 0x33), 0x02c5_9533); // mulh a0, a1, a2
    assert_eq!(r(1, 12, 11, 5, 10, 0x3b), 0x02c5_d53b); // divuw a0, a1, a2
    assert_eq!(i(0x41f, 11, 5, 10, 0x1b), 0x41f5_d51b); // sraiw a0, a1, 31
    assert_eq!(i(0x43f, 11, 5, 10, 0x13), 0x43f5_d513); // srai a0, a1, 63
    assert_eq!(j(2046, 0), 0x7fe0_006f); // jal zero, .+2046
    assert_eq!(j(-2048, 0), 0x801f_f06f); // jal zero, .-2048
    assert_eq!(b(254, 0, 10, 0), 0x0e05_0f63); // beq a0, zero, .+254
    assert_eq!(b(-256, 0, 9, 1), 0xf004_90e3); // bne s1, zero, .-256
    assert_eq!(csrw(1, 0x015, 0, 10), 0x0150_1573); // csrrw a0, seed, zero
    assert_eq!(csrw(2, 0x100, 0, 10), 0x1000_2573); // csrr a0, sstatus
}

#[test]
fn rv64i_register_ops() {
    let m = |f7, f3| r(f7, 12, 11, f3, 10, 0x33);
    let n = |f7, f3| r(f7, 12, 11, f3, 10, 0x3b);
    assert_eq!(op1(m(0, 0), 5, u64::MAX), 4); // add
    assert_eq!(op1(m(0x20, 0), 5, 7), (-2i64) as u64); // sub
    assert_eq!(op1(m(0, 1), 1, 65), 2); // sll uses rs2[5:0]
    assert_eq!(op1(m(0, 2), u64::MAX, 0), 1); // slt -1 < 0
    assert_eq!(op1(m(0, 3), u64::MAX, 0), 0); // sltu
    assert_eq!(op1(m(0, 4), 0b1100, 0b1010), 0b0110); // xor
    assert_eq!(op1(m(0, 5), 1 << 63, 63), 1); // srl
    assert_eq!(op1(m(0x20, 5), 1 << 63, 63), u64::MAX); // sra
    assert_eq!(op1(m(0, 6), 0b1100, 0b1010), 0b1110); // or
    assert_eq!(op1(m(0, 7), 0b1100, 0b1010), 0b1000); // and
    assert_eq!(op1(n(0, 0), 0x7FFF_FFFF, 1), 0xFFFF_FFFF_8000_0000); // addw
    assert_eq!(op1(n(0x20, 0), 0, 1), u64::MAX); // subw
    assert_eq!(op1(n(0, 1), 1, 63), 0xFFFF_FFFF_8000_0000); // sllw uses rs2[4:0]
    assert_eq!(op1(n(0, 5), 0xFFFF_FFFF_8000_0000, 31), 1); // srlw
    assert_eq!(op1(n(0x20, 5), 0x8000_0000, 31), u64::MAX); // sraw
                                                            // Reserved funct7 values are illegal.
    let (_, _, e) = run_words(&[m(0x10, 0)], &[]);
    assert_eq!(trap_of(e).scause, CAUSE_ILLEGAL_INSTRUCTION);
    let (_, _, e) = run_words(&[n(0x20, 1)], &[]);
    assert_eq!(trap_of(e).scause, CAUSE_ILLEGAL_INSTRUCTION);
}

#[test]
fn rv64i_immediate_ops() {
    let f = |imm, f3| i(imm, 11, f3, 10, 0x13);
    assert_eq!(op1(f(-1, 0), 1, 0), 0); // addi
    assert_eq!(op1(f(-1, 2), (-2i64) as u64, 0), 1); // slti
    assert_eq!(op1(f(-1, 3), 5, 0), 1); // sltiu: imm sign-extended then unsigned
    assert_eq!(op1(f(-1, 4), 0, 0), u64::MAX); // xori
    assert_eq!(op1(f(0x10, 6), 1, 0), 0x11); // ori
    assert_eq!(op1(f(-16, 7), 0xFF, 0), 0xF0); // andi
    assert_eq!(op1(f(63, 1), 1, 0), 1 << 63); // slli 63
    assert_eq!(op1(f(63, 5), 1 << 63, 0), 1); // srli 63
    assert_eq!(op1(0x43f5_d513, 1 << 63, 0), u64::MAX); // srai a0, a1, 63
    let w = |imm, f3| i(imm, 11, f3, 10, 0x1b);
    assert_eq!(op1(w(1, 0), 0x7FFF_FFFF, 0), 0xFFFF_FFFF_8000_0000); // addiw
    assert_eq!(op1(w(31, 1), 1, 0), 0xFFFF_FFFF_8000_0000); // slliw
    assert_eq!(op1(w(31, 5), 0x8000_0000, 0), 1); // srliw
    assert_eq!(op1(0x41f5_d51b, 0x8000_0000, 0), u64::MAX); // sraiw a0, a1, 31
                                                            // lui a0, 0x80000 ; auipc a0, 0xfffff
    assert_eq!(op1(0x8000_0537, 0, 0), 0xFFFF_FFFF_8000_0000);
    assert_eq!(op1(0xffff_f517, 0, 0), RAM.wrapping_sub(0x1000));
    // Reserved shift encodings: slli with imm[11:6] != 0, srai with funct6 != 010000,
    // slliw with imm[5] set.
    for word in [f(0x040, 1), i(0x200, 11, 5, 10, 0x13), w(0x20, 1)] {
        let (_, _, e) = run_words(&[word], &[]);
        assert_eq!(trap_of(e).scause, CAUSE_ILLEGAL_INSTRUCTION, "{word:#x}");
    }
}

#[test]
fn m_extension_including_edge_cases() {
    let m = |f3| r(1, 12, 11, f3, 10, 0x33);
    let w = |f3| r(1, 12, 11, f3, 10, 0x3b);
    let min = i64::MIN as u64;
    let neg1 = u64::MAX;
    assert_eq!(op1(m(0), 3, neg1), (-3i64) as u64); // mul
    assert_eq!(op1(0x02c5_9533, neg1, neg1), 0); // mulh (-1*-1)
    assert_eq!(op1(0x02c5_9533, min, min), 1 << 62); // mulh
    assert_eq!(op1(0x02c5_a533, neg1, neg1), neg1); // mulhsu -1 * (2^64-1)
    assert_eq!(op1(0x02c5_b533, neg1, neg1), neg1 - 1); // mulhu
    assert_eq!(op1(m(4), 7, 0), neg1); // div by 0 = -1
    assert_eq!(op1(m(4), min, neg1), min); // div overflow = dividend
    assert_eq!(op1(m(4), (-7i64) as u64, 2), (-3i64) as u64); // div truncates
    assert_eq!(op1(m(5), 7, 0), neg1); // divu by 0
    assert_eq!(op1(m(6), 7, 0), 7); // rem by 0 = dividend
    assert_eq!(op1(m(6), min, neg1), 0); // rem overflow = 0
    assert_eq!(op1(m(6), (-7i64) as u64, 2), neg1); // rem sign of dividend
    assert_eq!(op1(m(7), 7, 0), 7); // remu by 0
    assert_eq!(op1(w(0), 0x1_0000_0002, 0x4000_0000), 0xFFFF_FFFF_8000_0000); // mulw
    assert_eq!(op1(w(4), 7, 0), neg1); // divw by 0
    assert_eq!(op1(w(4), 0x8000_0000, neg1), 0xFFFF_FFFF_8000_0000); // divw overflow
    assert_eq!(op1(0x02c5_d53b, 7, 0), neg1); // divuw by 0: sign-extended all ones
    assert_eq!(op1(0x02c5_d53b, 0xFFFF_FFFE, 1), neg1 - 1); // divuw result sign-extended
    assert_eq!(op1(0x02c5_e53b, 0x1_8000_0000, 0), 0xFFFF_FFFF_8000_0000); // remw by 0
    assert_eq!(op1(0x02c5_e53b, 0x8000_0000, neg1), 0); // remw overflow
    assert_eq!(op1(w(7), 0x1_8000_0001, 0), 0xFFFF_FFFF_8000_0001); // remuw by 0
}

#[test]
fn branches_and_jumps() {
    // Each branch: taken skips the `addi a0, a0, 1` that follows.
    let cases = [
        (0, 5u64, 5u64, true),
        (0, 5, 6, false),
        (1, 5, 6, true),
        (4, u64::MAX, 0, true), // blt -1 < 0
        (5, u64::MAX, 0, false),
        (6, u64::MAX, 0, false), // bltu
        (7, u64::MAX, 0, true),  // bgeu
    ];
    for (f3, a, bv, taken) in cases {
        let prog = [
            b(8, 12, 11, f3),
            i(1, 10, 0, 10, 0x13),
            i(2, 10, 0, 10, 0x13),
        ];
        let (cpu, _, _) = run_words(&prog, &[(11, a), (12, bv)]);
        let expect = if taken { 2 } else { 3 };
        assert_eq!(cpu.x(10), expect, "f3={f3}");
    }
    // Reserved branch funct3.
    let (_, _, e) = run_words(&[b(8, 0, 0, 2)], &[]);
    assert_eq!(trap_of(e).scause, CAUSE_ILLEGAL_INSTRUCTION);
    // jal ra, 8
    let (cpu, _, _) = run_words(&[j(8, 1)], &[]);
    assert_eq!((cpu.pc(), cpu.x(1)), (RAM + 8, RAM + 4));
    // jalr a1, 3(a1): target from the old a1, bit 0 cleared; link written after.
    let (cpu, _, _) = run_words(&[i(3, 11, 0, 11, 0x67)], &[(11, RAM + 0x100)]);
    assert_eq!((cpu.pc(), cpu.x(11)), (RAM + 0x102, RAM + 4));
    // jalr with funct3 != 0 is reserved.
    let (_, _, e) = run_words(&[i(0, 11, 1, 0, 0x67)], &[]);
    assert_eq!(trap_of(e).scause, CAUSE_ILLEGAL_INSTRUCTION);
    // Backward branch loop: a0 = 5 + 4 + 3 + 2 + 1.
    let prog = [
        i(5, 0, 0, 11, 0x13),      // li a1, 5
        r(0, 11, 10, 0, 10, 0x33), // add a0, a0, a1
        i(-1, 11, 0, 11, 0x13),    // addi a1, a1, -1
        b(-8, 0, 11, 1),           // bnez a1, .-8
    ];
    let mut bus = TestBus::new();
    bus.load_code(RAM, &prog);
    let mut cpu = Rv64Cpu::new();
    cpu.set_pc(RAM);
    assert_eq!(cpu.run(&mut bus, 1 + 3 * 5), Exit::Budget);
    assert_eq!((cpu.x(10), cpu.pc()), (15, RAM + 16));
    assert_eq!(cpu.instructions_retired(), 16);
}

#[test]
fn loads_and_stores_all_widths() {
    let data = RAM + 0x800;
    let base = [(11u8, data)];
    let mut bus = TestBus::new();
    bus.poke(data, 8, 0x8899_AABB_CCDD_EEFF);
    let cases: [(u32, u64); 7] = [
        (0, 0xFFFF_FFFF_FFFF_FFFF), // lb
        (1, 0xFFFF_FFFF_FFFF_EEFF), // lh
        (2, 0xFFFF_FFFF_CCDD_EEFF), // lw
        (3, 0x8899_AABB_CCDD_EEFF), // ld
        (4, 0xFF),                  // lbu
        (5, 0xEEFF),                // lhu
        (6, 0xCCDD_EEFF),           // lwu
    ];
    for (f3, expect) in cases {
        bus.load_code(RAM, &[i(0, 11, f3, 10, 0x03)]);
        let mut cpu = Rv64Cpu::new();
        cpu.set_pc(RAM);
        cpu.set_x(11, data);
        assert_eq!(cpu.step(&mut bus), None);
        assert_eq!(cpu.x(10), expect, "f3={f3}");
    }
    // ld with funct3 = 7 is reserved (LDU is RV128).
    let (_, _, e) = run_words(&[i(0, 11, 7, 10, 0x03)], &base);
    assert_eq!(trap_of(e).scause, CAUSE_ILLEGAL_INSTRUCTION);
    for (f3, size) in [(0u32, 1usize), (1, 2), (2, 4), (3, 8)] {
        let (_, bus, e) = run_words(
            &[s(-8, 12, 11, f3)],
            &[(11, data + 8), (12, 0x1122_3344_5566_7788)],
        );
        assert_eq!(e, Exit::Budget);
        let mask = if size == 8 {
            u64::MAX
        } else {
            (1 << (size * 8)) - 1
        };
        assert_eq!(bus.peek(data, 8), 0x1122_3344_5566_7788 & mask);
        assert_eq!(
            bus.writes,
            vec![(data, size as u8, 0x1122_3344_5566_7788 & mask)]
        );
    }
    let (_, _, e) = run_words(&[s(0, 12, 11, 4)], &base);
    assert_eq!(trap_of(e).scause, CAUSE_ILLEGAL_INSTRUCTION);
}

#[test]
fn misaligned_and_access_faults() {
    // lw a5, 8(a1) with a1 = RAM+0x802: misaligned, no bus access.
    let (cpu, bus, e) = run_words(&[0x0085_a783], &[(11, RAM + 0x802)]);
    let t = trap_of(e);
    assert_eq!(
        (t.scause, t.stval, t.htval, t.htinst),
        (CAUSE_LOAD_MISALIGNED, RAM + 0x80A, 0, 0)
    );
    assert!(bus.reads.is_empty());
    assert_eq!(cpu.pc(), RAM);
    // sw a3, -4(a0) misaligned
    let (_, _, e) = run_words(&[0xfed5_2e23], &[(10, RAM + 0x801)]);
    assert_eq!(trap_of(e).scause, CAUSE_STORE_MISALIGNED);
    // Access faults: stval = address, no htval/htinst.
    let (cpu, _, e) = run_words(&[0x0085_a783], &[(11, 0x10), (15, 77)]);
    let t = trap_of(e);
    assert_eq!(
        (t.scause, t.stval, t.htval, t.htinst),
        (CAUSE_LOAD_ACCESS, 0x18, 0, 0)
    );
    assert_eq!(cpu.x(15), 77, "rd must not be written on a fault");
    let (_, _, e) = run_words(&[0xfed5_2e23], &[(10, 0x14)]);
    let t = trap_of(e);
    assert_eq!((t.scause, t.stval), (CAUSE_STORE_ACCESS, 0x10));
}

#[test]
fn guest_page_fault_htinst_32bit() {
    // (word, assembly, is_store, expected htinst)
    let cases: [(u32, &str, u64, bool); 11] = [
        (0x0085_a783, "lw a5, 8(a1)", 0x0000_2783, false),
        (0xfff4_0503, "lb a0, -1(s0)", 0x0000_0503, false),
        (0x0024_1503, "lh a0, 2(s0)", 0x0000_1503, false),
        (0x0101_3503, "ld a0, 16(sp)", 0x0000_3503, false),
        (0x0036_4283, "lbu t0, 3(a2)", 0x0000_4283, false),
        (0x0046_d303, "lhu t1, 4(a3)", 0x0000_5303, false),
        (0x0087_6383, "lwu t2, 8(a4)", 0x0000_6383, false),
        (0x00b5_02a3, "sb a1, 5(a0)", 0x00b0_0023, true),
        (0x00c5_1323, "sh a2, 6(a0)", 0x00c0_1023, true),
        (0xfed5_2e23, "sw a3, -4(a0)", 0x00d0_2023, true),
        (0x00e5_3423, "sd a4, 8(a0)", 0x00e0_3023, true),
    ];
    for (word, asm, htinst, is_store) in cases {
        let insn = decode::decode32(word);
        let (rs1, off) = match insn {
            Some(decode::Insn::Load { rs1, off, .. })
            | Some(decode::Insn::Store { rs1, off, .. }) => (rs1, off),
            other => panic!("{asm}: {other:?}"),
        };
        // Point the access at GPF_BASE + 0x40.
        let target = GPF_BASE + 0x40;
        let (cpu, _, e) = run_words(&[word], &[(rs1, target.wrapping_sub(off))]);
        let t = trap_of(e);
        let cause = if is_store {
            CAUSE_STORE_GUEST_PAGE_FAULT
        } else {
            CAUSE_LOAD_GUEST_PAGE_FAULT
        };
        assert_eq!(t.scause, cause, "{asm}");
        assert_eq!(t.stval, target, "{asm}");
        assert_eq!(t.htval, target >> 2, "{asm}");
        assert_eq!(t.htinst, htinst, "{asm}");
        assert_eq!((t.pc, t.insn, t.insn_len), (RAM, word, 4), "{asm}");
        assert_eq!(cpu.pc(), RAM, "{asm}: pc stays at the faulting instruction");
        // The TSM-side decoders agree.
        let m = decode_mmio(word).unwrap();
        assert_eq!(decode_htinst(t.htinst), Some(m), "{asm}");
    }
}

#[test]
fn guest_page_fault_htinst_compressed() {
    // (parcel, assembly, base reg, offset, is_store, htinst = transform(expanded) & !2)
    let cases: [(u16, &str, u8, u64, bool, u64); 8] = [
        (0x41c8, "c.lw a0, 4(a1)", 11, 4, false, 0x2501),
        (0x7cfc, "c.ld a5, 248(s1)", 9, 248, false, 0x3781),
        (0xde78, "c.sw a4, 124(a2)", 12, 124, true, 0x00e0_2021),
        (0xe780, "c.sd s0, 8(a5)", 15, 8, true, 0x0080_3021),
        (0x50fe, "c.lwsp ra, 252(sp)", 2, 252, false, 0x2081),
        (0x7ffe, "c.ldsp t6, 504(sp)", 2, 504, false, 0x3f81),
        (0xc66e, "c.swsp s11, 12(sp)", 2, 12, true, 0x01b0_2021),
        (0xe802, "c.sdsp zero, 16(sp)", 2, 16, true, 0x0000_3021),
    ];
    for (parcel, asm, base, off, is_store, htinst) in cases {
        let mut bus = TestBus::new();
        bus.load_half(RAM, &[parcel]);
        let mut cpu = Rv64Cpu::new();
        cpu.set_pc(RAM);
        let target = GPF_BASE + 0x1000;
        cpu.set_x(base, target - off);
        let t = trap_of(cpu.step(&mut bus).unwrap());
        let cause = if is_store {
            CAUSE_STORE_GUEST_PAGE_FAULT
        } else {
            CAUSE_LOAD_GUEST_PAGE_FAULT
        };
        assert_eq!(t.scause, cause, "{asm}");
        assert_eq!((t.stval, t.htval), (target, target >> 2), "{asm}");
        assert_eq!(t.htinst, htinst, "{asm}");
        assert_eq!(t.htinst & 2, 0, "{asm}: bit 1 clear for compressed");
        assert_eq!(
            (t.insn, t.insn_len, t.pc),
            (u32::from(parcel), 2, RAM),
            "{asm}"
        );
        let m = decode_mmio(u32::from(parcel)).unwrap();
        assert_eq!(m.len, 2);
        assert_eq!(decode_htinst(t.htinst), Some(m), "{asm}");
    }
}

#[test]
fn fetch_faults() {
    // First parcel unmapped.
    let mut bus = TestBus::new();
    let mut cpu = Rv64Cpu::new();
    cpu.set_pc(GPF_BASE + 0x10);
    let t = trap_of(cpu.step(&mut bus).unwrap());
    assert_eq!(
        (t.scause, t.stval, t.htval, t.htinst, t.pc),
        (
            CAUSE_FETCH_GUEST_PAGE_FAULT,
            GPF_BASE + 0x10,
            (GPF_BASE + 0x10) >> 2,
            0,
            GPF_BASE + 0x10
        )
    );
    // A 32-bit instruction straddling the end of RAM into unbacked space: stval = the
    // faulting half, sepc = the instruction.
    let last = RAM + RAM_SIZE as u64 - 2;
    bus.load_half(last, &[0x0513]); // low half of `addi a0, ...`
    cpu.set_pc(last);
    let t = trap_of(cpu.step(&mut bus).unwrap());
    assert_eq!(
        (t.scause, t.stval, t.pc, t.htval),
        (CAUSE_FETCH_ACCESS, last + 2, last, 0)
    );
    // Fetch is never pointer-masked.
    cpu.set_pmlen(16);
    cpu.set_pc(0x00FF_0000_8000_0000);
    let t = trap_of(cpu.step(&mut bus).unwrap());
    assert_eq!(
        (t.scause, t.stval),
        (CAUSE_FETCH_ACCESS, 0x00FF_0000_8000_0000)
    );
}

#[test]
fn compressed_expansion_matches_assembler() {
    // (parcel, assembly, 32-bit equivalent assembled from the listed expansion)
    let table: [(u16, &str, u32); 36] = [
        (0x41c8, "c.lw a0,4(a1) / lw a0,4(a1)", 0x0045_a503),
        (0x7cfc, "c.ld a5,248(s1) / ld a5,248(s1)", 0x0f84_b783),
        (0xde78, "c.sw a4,124(a2) / sw a4,124(a2)", 0x06e6_2e23),
        (0xe780, "c.sd s0,8(a5) / sd s0,8(a5)", 0x0087_b423),
        (0x50fe, "c.lwsp ra,252(sp) / lw ra,252(sp)", 0x0fc1_2083),
        (0x7ffe, "c.ldsp t6,504(sp) / ld t6,504(sp)", 0x1f81_3f83),
        (0xc66e, "c.swsp s11,12(sp) / sw s11,12(sp)", 0x01b1_2623),
        (0xe802, "c.sdsp zero,16(sp) / sd zero,16(sp)", 0x0001_3823),
        (
            0x1fe8,
            "c.addi4spn a0,sp,1020 / addi a0,sp,1020",
            0x3fc1_0513,
        ),
        (0x7101, "c.addi16sp sp,-512 / addi sp,sp,-512", 0xe001_0113),
        (0x617d, "c.addi16sp sp,496 / addi sp,sp,496", 0x1f01_0113),
        (0x1281, "c.addi t0,-32 / addi t0,t0,-32", 0xfe02_8293),
        (0x257d, "c.addiw a0,31 / addiw a0,a0,31", 0x01f5_051b),
        (0x55fd, "c.li a1,-1 / addi a1,zero,-1", 0xfff0_0593),
        (0x7901, "c.lui s2,0xfffe0 / lui s2,0xfffe0", 0xfffe_0937),
        (0x637d, "c.lui t1,0x1f / lui t1,0x1f", 0x0001_f337),
        (0x917d, "c.srli a0,63 / srli a0,a0,63", 0x03f5_5513),
        (0x8485, "c.srai s1,1 / srai s1,s1,1", 0x4014_d493),
        (0x9bbd, "c.andi a5,-17 / andi a5,a5,-17", 0xfef7_f793),
        (0x8d0d, "c.sub a0,a1 / sub a0,a0,a1", 0x40b5_0533),
        (0x8c25, "c.xor s0,s1 / xor s0,s0,s1", 0x0094_4433),
        (0x8e55, "c.or a2,a3 / or a2,a2,a3", 0x00d6_6633),
        (0x8f7d, "c.and a4,a5 / and a4,a4,a5", 0x00f7_7733),
        (0x9d1d, "c.subw a0,a5 / subw a0,a0,a5", 0x40f5_053b),
        (0x9cb1, "c.addw s1,a2 / addw s1,s1,a2", 0x00c4_84bb),
        (0x1386, "c.slli t2,33 / slli t2,t2,33", 0x0213_9393),
        (0x856e, "c.mv a0,s11 / add a0,zero,s11", 0x01b0_0533),
        (0x90fe, "c.add ra,t6 / add ra,ra,t6", 0x01f0_80b3),
        (0x8582, "c.jr a1 / jalr zero,0(a1)", 0x0005_8067),
        (0x9282, "c.jalr t0 / jalr ra,0(t0)", 0x0002_80e7),
        (0x9002, "c.ebreak / ebreak", 0x0010_0073),
        (0x0001, "c.nop / addi zero,zero,0", 0x0000_0013),
        (0xaffd, "c.j .+2046 / jal zero,.+2046", 0x7fe0_006f),
        (0xb001, "c.j .-2048 / jal zero,.-2048", 0x801f_f06f),
        (0xcd7d, "c.beqz a0,.+254 / beq a0,zero,.+254", 0x0e05_0f63),
        (0xf081, "c.bnez s1,.-256 / bne s1,zero,.-256", 0xf004_90e3),
    ];
    for (parcel, asm, word) in table {
        assert_eq!(compressed::expand(parcel), Some(word), "{asm}");
    }
}

#[test]
fn compressed_reserved_and_unimplemented_are_illegal() {
    let reserved: [(u16, &str); 12] = [
        (0x0000, "all-zero parcel (c.addi4spn nzuimm=0)"),
        (0x2000, "c.fld"),
        (0x8000, "quadrant 0 funct3=100 (reserved / Zcb)"),
        (0xa000, "c.fsd"),
        (0x2001, "c.addiw x0"),
        (0x6101, "c.addi16sp 0"),
        (0x6501, "c.lui a0, 0"),
        (0x9c41, "funct 100-1-11-10 (reserved)"),
        (0x4002, "c.lwsp x0"),
        (0x6002, "c.ldsp x0"),
        (0x8002, "c.jr x0"),
        (0x2002, "c.fldsp"),
    ];
    for (parcel, what) in reserved {
        assert_eq!(compressed::expand(parcel), None, "{what}");
        let mut bus = TestBus::new();
        bus.load_half(RAM, &[parcel]);
        let mut cpu = Rv64Cpu::new();
        cpu.set_pc(RAM);
        let t = trap_of(cpu.step(&mut bus).unwrap());
        assert_eq!(
            (t.scause, t.stval, t.insn_len),
            (CAUSE_ILLEGAL_INSTRUCTION, u64::from(parcel), 2),
            "{what}"
        );
    }
}

#[test]
fn compressed_execution() {
    let run16 = |parcels: &[u16], regs: &[(u8, u64)]| {
        let mut bus = TestBus::new();
        bus.load_half(RAM, parcels);
        let mut cpu = Rv64Cpu::new();
        cpu.set_pc(RAM);
        for &(n, v) in regs {
            cpu.set_x(n, v);
        }
        let e = cpu.run(&mut bus, parcels.len() as u64);
        (cpu, bus, e)
    };
    // c.jalr t0: link = pc + 2.
    let (cpu, _, _) = run16(&[0x9282], &[(5, RAM + 0x40)]);
    assert_eq!((cpu.pc(), cpu.x(1)), (RAM + 0x40, RAM + 2));
    // c.beqz a0,.+254 taken / not taken.
    let (cpu, _, _) = run16(&[0xcd7d], &[]);
    assert_eq!(cpu.pc(), RAM + 254);
    let (cpu, _, _) = run16(&[0xcd7d], &[(10, 1)]);
    assert_eq!(cpu.pc(), RAM + 2);
    // c.addi4spn a0,sp,1020; c.sdsp zero,16(sp); c.ldsp t6,504(sp); c.addi16sp sp,-512
    let sp = RAM + 0x1000;
    let (cpu, mut bus, e) = run16(&[0x1fe8, 0xe802, 0x7ffe, 0x7101], &[(2, sp)]);
    assert_eq!(e, Exit::Budget);
    assert_eq!(cpu.x(10), sp + 1020);
    assert_eq!(bus.peek(sp + 16, 8), 0);
    assert_eq!(cpu.x(2), sp - 512);
    bus.poke(sp + 504, 8, 0x1234);
    assert_eq!(bus.peek(sp + 504, 8), 0x1234);
    // c.li a1,-1; c.srli a0,63 ; c.addiw a0,31 (a0=1 -> 32)
    let (cpu, _, _) = run16(&[0x55fd, 0x917d, 0x257d], &[(10, 1 << 63)]);
    assert_eq!((cpu.x(11), cpu.x(10)), (u64::MAX, 32));
    // c.ebreak -> breakpoint trap, stval = pc.
    let (_, _, e) = run16(&[0x9002], &[]);
    let t = trap_of(e);
    assert_eq!((t.scause, t.stval, t.insn_len), (CAUSE_BREAKPOINT, RAM, 2));
    // HINTs are no-ops: c.nop, c.slli zero (0x0006? -> c.slli x0,1 = 0x0006), c.mv x0,a0 (0x802a).
    let (cpu, _, e) = run16(&[0x0001, 0x0006, 0x802a], &[(10, 5)]);
    assert_eq!((e, cpu.pc(), cpu.x(10)), (Exit::Budget, RAM + 6, 5));
}

#[test]
fn system_instructions() {
    // ecall: scause 10, pc unchanged, stval 0, nothing retired.
    let (cpu, _, e) = run_words(&[0x0000_0073], &[]);
    let t = trap_of(e);
    assert_eq!(
        (t.scause, t.stval, t.pc, t.insn_len),
        (CAUSE_ECALL_VS, 0, RAM, 4)
    );
    assert_eq!((cpu.pc(), cpu.instructions_retired()), (RAM, 0));
    // wfi: virtual instruction with the instruction bits.
    let t = trap_of(run_words(&[0x1050_0073], &[]).2);
    assert_eq!(
        (t.scause, t.stval),
        (CAUSE_VIRTUAL_INSTRUCTION, 0x1050_0073)
    );
    // ebreak
    assert_eq!(
        trap_of(run_words(&[0x0010_0073], &[]).2).scause,
        CAUSE_BREAKPOINT
    );
    // mret: illegal below M.
    let t = trap_of(run_words(&[0x3020_0073], &[]).2);
    assert_eq!(
        (t.scause, t.stval),
        (CAUSE_ILLEGAL_INSTRUCTION, 0x3020_0073)
    );
    // hfence.gvma, hlv.w a0,(a1), hsv.d a0,(a1): virtual instruction from V=1.
    for w in [0x6200_0073, 0x6805_c573, 0x6ea5_c073] {
        assert_eq!(
            trap_of(run_words(&[w], &[]).2).scause,
            CAUSE_VIRTUAL_INSTRUCTION,
            "{w:#x}"
        );
    }
    // sfence.vma zero,zero ; fence.i ; fence rw,rw: no-ops in VS-mode.
    let (cpu, _, e) = run_words(&[0x1200_0073, 0x0000_100f, 0x0330_000f], &[]);
    assert_eq!((e, cpu.pc()), (Exit::Budget, RAM + 12));
    // Reserved / unimplemented: all ones, FP load (flw), AMO, 48-bit prefix.
    for w in [
        0xFFFF_FFFFu32,
        0x0005_a507,
        0x0805_a52f,
        0x0000_001f,
        0x0000_2073 | (0x7FF << 20),
    ] {
        let t = trap_of(run_words(&[w], &[]).2);
        assert_eq!(
            (t.scause, t.stval),
            (CAUSE_ILLEGAL_INSTRUCTION, u64::from(w)),
            "{w:#x}"
        );
    }
}

#[test]
fn sret_and_trap_injection_round_trip() {
    let mut bus = TestBus::new();
    bus.load_code(RAM + 0x100, &[0x1020_0073]); // sret at the handler
    let mut cpu = Rv64Cpu::new();
    cpu.set_pc(RAM + 0x40);
    assert!(cpu.set_csr(STVEC, RAM + 0x100));
    assert!(cpu.set_csr(SSTATUS, SSTATUS_SIE));
    cpu.inject_exception(CAUSE_ILLEGAL_INSTRUCTION, 0xdead);
    assert_eq!(cpu.pc(), RAM + 0x100);
    assert_eq!(cpu.csr(SEPC), Some(RAM + 0x40));
    assert_eq!(cpu.csr(SCAUSE), Some(2));
    assert_eq!(cpu.csr(STVAL), Some(0xdead));
    assert_eq!(
        cpu.csr(SSTATUS),
        Some(SSTATUS_SPIE | SSTATUS_SPP | SSTATUS_UXL64)
    );
    assert_eq!(cpu.step(&mut bus), None);
    assert_eq!(cpu.pc(), RAM + 0x40);
    assert_eq!(cpu.mode(), Mode::Supervisor);
    assert_eq!(
        cpu.csr(SSTATUS),
        Some(SSTATUS_SIE | SSTATUS_SPIE | SSTATUS_UXL64)
    );

    // Interrupts: need sstatus.SIE and sie.SEIE; vectored stvec adds 4 * cause.
    assert!(!cpu.inject_interrupt(9 | CAUSE_INTERRUPT));
    assert!(cpu.set_csr(SIE, 1 << 9));
    assert!(cpu.set_csr(STVEC, RAM + 0x200 + 1));
    assert!(cpu.inject_interrupt(9 | CAUSE_INTERRUPT));
    assert_eq!(cpu.pc(), RAM + 0x200 + 36);
    assert_eq!(cpu.csr(SCAUSE), Some(9 | CAUSE_INTERRUPT));
    assert_eq!(cpu.csr(STVAL), Some(0));
    assert!(!cpu.inject_interrupt(9), "SIE is now clear");

    // SRET to VU-mode (SPP = 0); then VU cannot touch sstatus, SRET or WFI.
    let mut cpu = Rv64Cpu::new();
    cpu.set_csr(SEPC, RAM);
    bus.load_code(RAM, &[0x1000_2573, 0x1020_0073, 0x0000_0073]);
    bus.load_code(RAM + 0x100, &[0x1020_0073]);
    cpu.set_pc(RAM + 0x100);
    assert_eq!(cpu.step(&mut bus), None);
    assert_eq!(cpu.mode(), Mode::User);
    let t = trap_of(cpu.step(&mut bus).unwrap());
    assert_eq!(t.scause, CAUSE_VIRTUAL_INSTRUCTION, "csrr sstatus from VU");
    cpu.set_pc(RAM + 4);
    assert_eq!(
        trap_of(cpu.step(&mut bus).unwrap()).scause,
        CAUSE_VIRTUAL_INSTRUCTION
    );
    cpu.set_pc(RAM + 8);
    assert_eq!(trap_of(cpu.step(&mut bus).unwrap()).scause, CAUSE_ECALL_VU);
    // In VU-mode interrupts are globally enabled for S level.
    cpu.set_csr(SIE, 1 << 5);
    assert!(cpu.inject_interrupt(5));
    assert_eq!(
        (cpu.mode(), cpu.csr(SSTATUS).unwrap() & SSTATUS_SPP),
        (Mode::Supervisor, 0)
    );
}

#[test]
fn csr_instructions() {
    // csrw stvec, a1 ; csrr a0, sstatus ; csrrs zero, sie, a2 ; csrrci a3, sstatus, 2
    let prog = [
        0x1055_9073,
        0x1000_2573,
        csrw(2, SIE, 12, 0),
        csrw(7, SSTATUS, 2, 13),
        csrw(1, SSCRATCH, 11, 14), // csrrw a4, sscratch, a1
        csrw(2, CYCLE, 0, 15),     // csrr a5, cycle
    ];
    let (cpu, _, e) = run_words(&prog, &[(11, RAM + 0x301), (12, u64::MAX)]);
    assert_eq!(e, Exit::Budget);
    assert_eq!(cpu.csr(STVEC), Some(RAM + 0x301));
    assert_eq!(cpu.x(10), SSTATUS_UXL64);
    assert_eq!(cpu.csr(SIE), Some(0x222));
    assert_eq!(cpu.x(13), SSTATUS_UXL64);
    assert_eq!(cpu.csr(SSCRATCH), Some(RAM + 0x301));
    assert_eq!(cpu.x(14), 0);
    assert_eq!(
        cpu.x(15),
        5,
        "cycle counts the retired instructions before it"
    );
    // sstatus: only SIE/SPIE/SPP/SUM/MXR are writable; UXL reads 2.
    let (cpu, _, _) = run_words(&[csrw(1, SSTATUS, 11, 0)], &[(11, u64::MAX)]);
    assert_eq!(cpu.csr(SSTATUS), Some(0x000C_0122 | SSTATUS_UXL64));
    // sip: the guest can only write SSIP; the host can set SEIP.
    let (mut cpu, _, _) = run_words(&[csrw(1, SIP, 11, 0)], &[(11, u64::MAX)]);
    assert_eq!(cpu.csr(SIP), Some(2));
    assert!(cpu.set_csr(SIP, 1 << 9));
    assert_eq!(cpu.csr(SIP), Some(1 << 9));
    // satp: only Bare; a non-Bare write has no effect.
    let (mut cpu, _, e) = run_words(&[csrw(1, SATP, 11, 10)], &[(11, 8 << 60 | 0x1234)]);
    assert_eq!((e, cpu.csr(SATP)), (Exit::Budget, Some(0)));
    assert!(!cpu.set_csr(SATP, 9 << 60));
    assert!(cpu.set_csr(SATP, 0));
    // Host-side: unknown CSRs are rejected.
    assert!(!cpu.set_csr(0x300, 0));
    assert_eq!(cpu.csr(SEED), None);
    assert_eq!(cpu.csr(0x600), None);
}

#[test]
fn csr_access_rules() {
    let cases: [(u32, &str, u64); 10] = [
        (0x6000_2573, "csrr a0, hstatus", CAUSE_VIRTUAL_INSTRUCTION),
        (0x2000_2573, "csrr a0, vsstatus", CAUSE_VIRTUAL_INSTRUCTION),
        (
            csrw(2, 0x680, 0, 10),
            "csrr a0, hgatp",
            CAUSE_VIRTUAL_INSTRUCTION,
        ),
        (
            csrw(2, 0xE12, 0, 10),
            "csrr a0, hgeip",
            CAUSE_VIRTUAL_INSTRUCTION,
        ),
        (
            csrw(1, 0xE12, 10, 0),
            "csrw hgeip, a0 (read-only in HS too)",
            CAUSE_ILLEGAL_INSTRUCTION,
        ),
        (0x3000_2573, "csrr a0, mstatus", CAUSE_ILLEGAL_INSTRUCTION),
        (0xc002_9073, "csrw cycle, t0", CAUSE_ILLEGAL_INSTRUCTION),
        (
            csrw(2, 0x5A8, 0, 10),
            "csrr a0, scontext (unimplemented)",
            CAUSE_ILLEGAL_INSTRUCTION,
        ),
        (
            csrw(2, 0x001, 0, 10),
            "csrr a0, fflags (no F)",
            CAUSE_ILLEGAL_INSTRUCTION,
        ),
        (
            csrw(2, 0xC03, 0, 10),
            "csrr a0, hpmcounter3",
            CAUSE_ILLEGAL_INSTRUCTION,
        ),
    ];
    for (word, asm, cause) in cases {
        let (cpu, _, e) = run_words(&[word], &[(10, 0x55)]);
        let t = trap_of(e);
        assert_eq!((t.scause, t.stval), (cause, u64::from(word)), "{asm}");
        assert_eq!(cpu.x(10), 0x55, "{asm}: rd untouched");
    }
}

#[test]
fn seed_csr_rules() {
    // Read-write forms trap as virtual instruction; read-only forms are illegal (§4.1).
    let cases: [(u32, &str, u64); 8] = [
        (
            0x0150_1573,
            "csrrw a0, seed, zero",
            CAUSE_VIRTUAL_INSTRUCTION,
        ),
        (0x0150_5573, "csrrwi a0, seed, 0", CAUSE_VIRTUAL_INSTRUCTION),
        (0x0155_a573, "csrrs a0, seed, a1", CAUSE_VIRTUAL_INSTRUCTION),
        (0x0150_e573, "csrrsi a0, seed, 1", CAUSE_VIRTUAL_INSTRUCTION),
        (
            0x0150_2573,
            "csrrs a0, seed, zero",
            CAUSE_ILLEGAL_INSTRUCTION,
        ),
        (
            0x0150_3573,
            "csrrc a0, seed, zero",
            CAUSE_ILLEGAL_INSTRUCTION,
        ),
        (0x0150_6573, "csrrsi a0, seed, 0", CAUSE_ILLEGAL_INSTRUCTION),
        (0x0150_7573, "csrrci a0, seed, 0", CAUSE_ILLEGAL_INSTRUCTION),
    ];
    for (word, asm, cause) in cases {
        let (cpu, _, e) = run_words(&[word], &[(10, 0x55), (11, 1)]);
        let t = trap_of(e);
        assert_eq!(
            (t.scause, t.stval, t.pc, t.insn),
            (cause, u64::from(word), RAM, word),
            "{asm}"
        );
        assert_eq!((cpu.x(10), cpu.pc()), (0x55, RAM), "{asm}: nothing changed");
        let acc = decode_csr(word).unwrap();
        assert_eq!(acc.csr, SEED);
        assert_eq!(acc.writes(), cause == CAUSE_VIRTUAL_INSTRUCTION, "{asm}");
    }
    // From VU-mode (mseccfg.USEED not granted) even the read-write form is illegal.
    let mut bus = TestBus::new();
    bus.load_code(RAM, &[0x0150_1573]);
    let mut cpu = Rv64Cpu::new();
    cpu.set_mode(Mode::User);
    cpu.set_pc(RAM);
    assert_eq!(
        trap_of(cpu.step(&mut bus).unwrap()).scause,
        CAUSE_ILLEGAL_INSTRUCTION
    );
}

#[test]
fn decode_csr_fields() {
    assert_eq!(
        decode_csr(0x1055_9073), // csrw stvec, a1
        Some(CsrAccess {
            csr: 0x105,
            rd: 0,
            op: CsrOp::Rw,
            src: CsrSrc::Reg(11),
            rs1_is_zero: false
        })
    );
    assert_eq!(
        decode_csr(0x0150_6573), // csrrsi a0, seed, 0
        Some(CsrAccess {
            csr: 0x015,
            rd: 10,
            op: CsrOp::Rs,
            src: CsrSrc::Imm(0),
            rs1_is_zero: true
        })
    );
    assert_eq!(
        decode_csr(csrw(7, 0x144, 3, 5)), // csrrci t0, sip, 3
        Some(CsrAccess {
            csr: 0x144,
            rd: 5,
            op: CsrOp::Rc,
            src: CsrSrc::Imm(3),
            rs1_is_zero: false
        })
    );
    assert_eq!(decode_csr(0x0000_0073), None); // ecall
    assert_eq!(decode_csr(0x6805_c573), None); // hlv.w
    assert_eq!(decode_csr(0x0085_a783), None); // lw
    let rw0 = decode_csr(0xc002_9073).unwrap(); // csrw cycle, t0
    assert!(rw0.writes() && !rw0.reads());
}

#[test]
fn decode_mmio_forms() {
    let m = |is_store, size, signed, reg, len| MmioAccess {
        is_store,
        size,
        signed,
        reg,
        len,
    };
    assert_eq!(decode_mmio(0x0085_a783), Some(m(false, 4, true, 15, 4))); // lw a5, 8(a1)
    assert_eq!(decode_mmio(0x0087_6383), Some(m(false, 4, false, 7, 4))); // lwu t2, 8(a4)
    assert_eq!(decode_mmio(0x0036_4283), Some(m(false, 1, false, 5, 4))); // lbu t0, 3(a2)
    assert_eq!(decode_mmio(0x0101_3503), Some(m(false, 8, true, 10, 4))); // ld a0, 16(sp)
    assert_eq!(decode_mmio(0x00c5_1323), Some(m(true, 2, false, 12, 4))); // sh a2, 6(a0)
    assert_eq!(decode_mmio(0x00e5_3423), Some(m(true, 8, false, 14, 4))); // sd a4, 8(a0)
    assert_eq!(decode_mmio(0x41c8), Some(m(false, 4, true, 10, 2))); // c.lw a0,4(a1)
    assert_eq!(decode_mmio(0xe780), Some(m(true, 8, false, 8, 2))); // c.sd s0,8(a5)
    assert_eq!(decode_mmio(0x7ffe), Some(m(false, 8, true, 31, 2))); // c.ldsp t6,504(sp)
    assert_eq!(decode_mmio(0xc66e), Some(m(true, 4, false, 27, 2))); // c.swsp s11,12(sp)
    assert_eq!(decode_mmio(0x0005_a507), None); // flw
    assert_eq!(decode_mmio(0x0805_a52f), None); // amoswap.w
    assert_eq!(decode_mmio(0x1fe8), None); // c.addi4spn
    assert_eq!(decode_mmio(0x2000), None); // c.fld
    assert_eq!(decode_mmio(0x0000_0073), None);
    // Salus' htinst values for a0 (cove.md §4.2) decode too.
    assert_eq!(decode_htinst(0x503), Some(m(false, 1, true, 10, 4)));
    assert_eq!(decode_htinst(0x6503), Some(m(false, 4, false, 10, 4)));
    assert_eq!(decode_htinst(0xa03023), Some(m(true, 8, false, 10, 4)));
    assert_eq!(decode_htinst(0), None);
}

#[test]
fn pointer_masking() {
    // ld a0, 16(sp) / sd a4, 8(a0) with junk in the top bits of the base.
    for (pmlen, junk) in [(7u8, 0xFE00_0000_0000_0000u64), (16, 0xABCD_0000_0000_0000)] {
        let data = RAM + 0x800;
        let (cpu, bus, e) = run_words_pm(&[0x0101_3503], &[(2, (data - 16) | junk)], pmlen);
        assert_eq!(e, Exit::Budget, "pmlen {pmlen}");
        assert_eq!(bus.reads, vec![(data, 8)]);
        assert_eq!(cpu.pmlen(), pmlen);
        // Bit XLEN-PMLEN-1 set: guest-physical addresses are zero-extended, not
        // sign-extended (Pointer Masking spec, "The Ignore Transformation").
        let high = 1u64 << (63 - pmlen);
        let (_, bus, e) = run_words_pm(&[0x00e5_3423], &[(10, junk | high | (data - 8))], pmlen);
        let t = trap_of(e);
        let masked = high | data;
        assert_eq!(bus.writes, vec![(masked, 8, 0)]);
        assert_eq!(
            (t.scause, t.stval),
            (CAUSE_STORE_ACCESS, masked),
            "stval is the transformed address"
        );
    }
    // Off: the full address reaches the bus.
    let (_, bus, _) = run_words_pm(&[0x0101_3503], &[(2, 0x0100_0000_8000_0000)], 0);
    assert_eq!(bus.reads, vec![(0x0100_0000_8000_0010, 8)]);
    // Invalid PMLEN is ignored (WARL); MXR disables masking.
    let mut cpu = Rv64Cpu::new();
    cpu.set_pmlen(7);
    cpu.set_pmlen(9);
    assert_eq!(cpu.pmlen(), 7);
    cpu.set_csr(SSTATUS, SSTATUS_MXR);
    assert_eq!(
        cpu.mask_data_address(0xFF00_0000_0000_0000),
        0xFF00_0000_0000_0000
    );
    // VU-mode uses the guest's senvcfg.PMM, not the VS setting.
    let mut cpu = Rv64Cpu::new();
    cpu.set_pmlen(16);
    cpu.set_mode(Mode::User);
    assert_eq!(
        cpu.mask_data_address(0xFF00_0000_0000_0000),
        0xFF00_0000_0000_0000
    );
    assert!(cpu.set_csr(SENVCFG, 2 << 32));
    assert_eq!(
        cpu.mask_data_address(0xFF80_0000_0000_0001),
        0x0180_0000_0000_0001
    );
    assert!(cpu.set_csr(SENVCFG, 1 << 32)); // reserved PMM value: unchanged
    assert_eq!(cpu.csr(SENVCFG), Some(2 << 32));
}

fn run_words_pm(words: &[u32], regs: &[(u8, u64)], pmlen: u8) -> (Rv64Cpu, TestBus, Exit) {
    let mut bus = TestBus::new();
    bus.load_code(RAM, words);
    let mut cpu = Rv64Cpu::new();
    cpu.set_pc(RAM);
    cpu.set_pmlen(pmlen);
    for &(n, v) in regs {
        cpu.set_x(n, v);
    }
    let exit = cpu.run(&mut bus, words.len() as u64);
    (cpu, bus, exit)
}

#[test]
fn x0_is_hardwired_and_budget_is_respected() {
    // addi zero, zero, 5 ; lui zero, 1 ; jal zero, 8 (skips one)
    let (cpu, _, _) = run_words(
        &[i(5, 0, 0, 0, 0x13), 0x0000_1037, j(8, 0), 0, 0x0000_0013],
        &[],
    );
    assert_eq!((cpu.x(0), cpu.pc()), (0, RAM + 20));
    assert_eq!(cpu.instructions_retired(), 4);
    let mut cpu = Rv64Cpu::new();
    cpu.set_x(0, 9);
    cpu.set_x(40, 9);
    assert_eq!((cpu.x(0), cpu.x(40)), (0, 0));
    let mut bus = TestBus::new();
    bus.load_code(RAM, &[j(0, 0)]); // infinite loop
    cpu.set_pc(RAM);
    assert_eq!(cpu.run(&mut bus, 0), Exit::Budget);
    assert_eq!(cpu.run(&mut bus, 1000), Exit::Budget);
    assert_eq!(cpu.instructions_retired(), 1000);
    assert_eq!(cpu.csr(INSTRET), Some(1000));
    cpu.set_pc(RAM + 1);
    assert_eq!(cpu.pc(), RAM);
}
