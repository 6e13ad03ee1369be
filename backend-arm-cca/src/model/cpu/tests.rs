//! Unit tests for the interpreter. Instruction words were assembled with
//! `aarch64-linux-gnu-as` (GNU as 2.x) and are pinned here with the source in a comment.

use super::esr;
use super::*;

/// Guest RAM base (IPA) and size for the test bus.
const RAM: u64 = 0x8000_0000;
const RAM_SIZE: usize = 0x1_0000;
/// Data area inside RAM.
const DATA: u64 = RAM + 0x1000;
/// Unmapped IPA (translation fault at level 3).
const HOLE: u64 = 0x1_0900_0008;
/// IPA reporting a synchronous external abort.
const SEA_ADDR: u64 = 0x4000_0000;

struct TestBus {
    mem: Vec<u8>,
}

impl TestBus {
    fn new() -> Self {
        Self {
            mem: vec![0; RAM_SIZE],
        }
    }

    fn range(&self, addr: u64, size: u8) -> Result<std::ops::Range<usize>, BusFault> {
        if (SEA_ADDR..SEA_ADDR + 0x1000).contains(&addr) {
            return Err(BusFault::External);
        }
        let off = addr
            .checked_sub(RAM)
            .ok_or(BusFault::Translation { level: 3 })?;
        let end = off + u64::from(size);
        if end > RAM_SIZE as u64 {
            return Err(BusFault::Translation { level: 3 });
        }
        Ok(off as usize..end as usize)
    }

    fn read_u64(&self, addr: u64) -> u64 {
        let r = self.range(addr, 8).unwrap();
        u64::from_le_bytes(self.mem[r].try_into().unwrap())
    }
}

impl Bus for TestBus {
    fn read(&mut self, addr: u64, size: u8) -> Result<u64, BusFault> {
        let r = self.range(addr, size)?;
        let mut b = [0u8; 8];
        b[..usize::from(size)].copy_from_slice(&self.mem[r]);
        Ok(u64::from_le_bytes(b))
    }

    fn write(&mut self, addr: u64, size: u8, value: u64) -> Result<(), BusFault> {
        let r = self.range(addr, size)?;
        self.mem[r].copy_from_slice(&value.to_le_bytes()[..usize::from(size)]);
        Ok(())
    }

    fn fetch(&mut self, addr: u64) -> Result<u32, BusFault> {
        Ok(self.read(addr, 4)? as u32)
    }
}

/// `hvc #0`: ends every test program.
const HVC0: u32 = 0xd4000002;

/// Loads `prog` at RAM, SP = RAM + 0x8000, VBAR_EL1 = RAM + 0x4000.
fn setup(prog: &[u32]) -> (Aarch64Cpu, TestBus) {
    let mut bus = TestBus::new();
    for (i, w) in prog.iter().enumerate() {
        bus.mem[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
    }
    let mut cpu = Aarch64Cpu::new();
    cpu.set_pc(RAM);
    cpu.set_sp(RAM + 0x8000);
    cpu.set_sysreg(SysReg::VbarEl1, RAM + 0x4000);
    (cpu, bus)
}

/// Runs `prog` followed by `hvc #0` with the given initial registers; asserts it ends there.
fn run_prog(prog: &[u32], regs: &[(u8, u64)]) -> (Aarch64Cpu, TestBus) {
    let mut p = prog.to_vec();
    p.push(HVC0);
    let (mut cpu, mut bus) = setup(&p);
    for &(r, v) in regs {
        cpu.set_x(r, v);
    }
    let exit = cpu.run(&mut bus, 10_000);
    assert_eq!(exit, Exit::Hvc { imm: 0 }, "pc={:#x}", cpu.pc());
    assert_eq!(cpu.pc(), RAM + 4 * p.len() as u64);
    (cpu, bus)
}

/// Runs a program expected to stop with `expect` at instruction index `at`.
fn run_exit(prog: &[u32], regs: &[(u8, u64)], expect: Exit, at: usize) -> Aarch64Cpu {
    let (mut cpu, mut bus) = setup(prog);
    for &(r, v) in regs {
        cpu.set_x(r, v);
    }
    assert_eq!(cpu.run(&mut bus, 10_000), expect);
    assert_eq!(cpu.pc(), RAM + 4 * at as u64);
    cpu
}

const N: u8 = 8;
const Z: u8 = 4;
const C: u8 = 2;
const V: u8 = 1;

#[test]
fn reset_state() {
    let cpu = Aarch64Cpu::new();
    assert_eq!(cpu.pstate(), 0x3C5);
    assert_eq!(cpu.sysreg(SysReg::SctlrEl1) & 1, 0);
    assert!((0..=31).all(|n| cpu.x(n) == 0));
    let mut cpu = cpu;
    cpu.set_x(31, 5);
    assert_eq!(cpu.x(31), 0);
    cpu.set_x(30, 5);
    assert_eq!(cpu.x(30), 5);
}

#[test]
fn move_wide() {
    let (cpu, _) = run_prog(
        &[
            0xd2800020, // movz x0, #1
            0xd2a24681, // movz x1, #0x1234, lsl #16
            0xf2f579a1, // movk x1, #0xabcd, lsl #48
            0x92800002, // movn x2, #0
            0x12800003, // movn w3, #0
            0x52bfffe4, // movz w4, #0xffff, lsl #16
            0x728acf04, // movk w4, #0x5678
            0x92a24685, // movn x5, #0x1234, lsl #16
            0xd28000ff, // movz xzr, #7
        ],
        &[(3, u64::MAX), (4, u64::MAX)],
    );
    assert_eq!(cpu.x(0), 1);
    assert_eq!(cpu.x(1), 0xabcd_0000_1234_0000);
    assert_eq!(cpu.x(2), u64::MAX);
    assert_eq!(cpu.x(3), 0xffff_ffff);
    assert_eq!(cpu.x(4), 0xffff_5678);
    assert_eq!(cpu.x(5), 0xffff_ffff_edcb_ffff);
}

#[test]
fn add_sub_immediate_and_flags() {
    let (cpu, _) = run_prog(
        &[
            0x913ffc05, // add x5, x0, #0xfff
            0x91400406, // add x6, x0, #1, lsl #12
            0xd1000807, // sub x7, x0, #2
            0x71000409, // subs w9, w0, #1
        ],
        &[(0, 1)],
    );
    assert_eq!(cpu.x(5), 0x1000);
    assert_eq!(cpu.x(6), 0x1001);
    assert_eq!(cpu.x(7), u64::MAX);
    assert_eq!(cpu.x(9), 0);
    assert_eq!(cpu.nzcv(), Z | C);

    let flags = |prog: &[u32], regs: &[(u8, u64)]| run_prog(prog, regs).0.nzcv();
    assert_eq!(flags(&[0xf100041f /* cmp x0, #1 */], &[(0, 1)]), Z | C);
    assert_eq!(
        flags(&[0xb100045f /* cmn x2, #1 */], &[(2, u64::MAX)]),
        Z | C
    );
    assert_eq!(flags(&[0xf1000808 /* subs x8, x0, #2 */], &[(0, 1)]), N);
    let (cpu, _) = run_prog(&[0xb1000401 /* adds x1, x0, #1 */], &[(0, i64::MAX as u64)]);
    assert_eq!((cpu.x(1), cpu.nzcv()), (1 << 63, N | V));
    let (cpu, _) = run_prog(
        &[0x31000401 /* adds w1, w0, #1 */],
        &[(0, 0xffff_ffff_7fff_ffff)],
    );
    assert_eq!((cpu.x(1), cpu.nzcv()), (0x8000_0000, N | V));
    let (cpu, _) = run_prog(&[0x31000401 /* adds w1, w0, #1 */], &[(0, 0xffff_ffff)]);
    assert_eq!((cpu.x(1), cpu.nzcv()), (0, Z | C));
}

#[test]
fn stack_pointer_vs_zero_register() {
    let (cpu, _) = run_prog(
        &[
            0x910043ff, // add sp, sp, #16
            0x910003ea, // mov x10, sp
            0xd10083ff, // sub sp, sp, #32
            0x8b204bf0, // add x16, sp, w0, uxtw #2
            0xb10003ff, // adds xzr, sp, #0
            0xaa0003eb, // orr x11, xzr, x0
            0x8b0007ec, // add x12, xzr, x0, lsl #1
        ],
        &[(0, 0xffff_ffff_0000_0003), (16, 99)],
    );
    let sp0 = RAM + 0x8000;
    assert_eq!(cpu.x(10), sp0 + 16);
    assert_eq!(cpu.sp(), sp0 - 16);
    assert_eq!(cpu.x(16), sp0 - 16 + 12);
    assert_eq!(cpu.nzcv(), 0);
    assert_eq!(cpu.x(11), 0xffff_ffff_0000_0003);
    assert_eq!(cpu.x(12), 0xffff_fffe_0000_0006);
}

#[test]
fn add_sub_register() {
    let x1 = 0xabcd_0000_1234_0000;
    let (cpu, _) = run_prog(
        &[
            0x8b01100b, // add x11, x0, x1, lsl #4
            0xcb40082c, // sub x12, x1, x0, lsr #2
            0xcb0003ef, // neg x15, x0
            0x8b238011, // add x17, x0, w3, sxtb
            0xcb232412, // sub x18, x0, w3, uxth #1
            0xeb01000e, // subs x14, x0, x1
        ],
        &[(0, 1), (1, x1), (3, 0x1_0000_ff80)],
    );
    assert_eq!(cpu.x(11), 0xbcd0_0001_2340_0001);
    assert_eq!(cpu.x(12), x1);
    assert_eq!(cpu.x(15), u64::MAX);
    assert_eq!(cpu.x(17), 1u64.wrapping_sub(128));
    assert_eq!(cpu.x(18), 1u64.wrapping_sub(0xff80 * 2));
    assert_eq!(cpu.x(14), 1u64.wrapping_sub(x1));
    assert_eq!(cpu.nzcv(), 0);
    let (cpu, _) = run_prog(
        &[0x2b80044d /* adds w13, w2, w0, asr #1 */],
        &[(0, 0xffff_fffe), (2, 1)],
    );
    assert_eq!((cpu.x(13), cpu.nzcv()), (0, Z | C));
}

#[test]
fn logical_immediate() {
    let (cpu, _) = run_prog(
        &[
            0x3200f3e1, // orr w1, wzr, #0x55555555
            0x92401c20, // and x0, x1, #0xff
            0xd201f062, // eor x2, x3, #0xaaaaaaaaaaaaaaaa
            0xb2009fe6, // orr x6, xzr, #0x00ff00ff00ff00ff
            0x321f7be7, // orr w7, wzr, #0xfffffffe
            0xb2420fe8, // orr x8, xzr, #0xc000000000000003
            0xb27ff7e9, // orr x9, xzr, #0x7ffffffffffffffe
            0xb200e7ea, // orr x10, xzr, #0x3333333333333333
            0x927ced7f, // and sp, x11, #0xfffffffffffffff0
            0xf2410083, // ands x3, x4, #0x8000000000000000
        ],
        &[(3, u64::MAX), (4, 0x8000_0000_0000_0001), (11, 0x1237)],
    );
    assert_eq!(cpu.x(1), 0x5555_5555);
    assert_eq!(cpu.x(0), 0x55);
    assert_eq!(cpu.x(2), 0x5555_5555_5555_5555);
    assert_eq!(cpu.x(6), 0x00ff_00ff_00ff_00ff);
    assert_eq!(cpu.x(7), 0xffff_fffe);
    assert_eq!(cpu.x(8), 0xc000_0000_0000_0003);
    assert_eq!(cpu.x(9), 0x7fff_ffff_ffff_fffe);
    assert_eq!(cpu.x(10), 0x3333_3333_3333_3333);
    assert_eq!(cpu.sp(), 0x1230);
    assert_eq!(cpu.x(3), 0x8000_0000_0000_0000);
    assert_eq!(cpu.nzcv(), N);
    let (cpu, _) = run_prog(&[0x720000bf /* tst w5, #1 */], &[(5, 2)]);
    assert_eq!(cpu.nzcv(), Z);
}

/// DecodeBitMasks against an independent encoder: every (element size, run length, rotation)
/// bitmask immediate encodes to (N, immr, imms) and must decode back to the same pattern, and
/// every other (N, imms) combination must be rejected.
#[test]
fn decode_bit_masks_exhaustive() {
    use super::decode::decode_bit_masks;
    let mut valid = std::collections::HashSet::new();
    let mut count = 0;
    for log in 1..=6u32 {
        let esize = 1u32 << log;
        for run in 1..esize {
            for rot in 0..esize {
                let elem: u64 = (1u64 << run) - 1;
                let emask = if esize == 64 {
                    u64::MAX
                } else {
                    (1u64 << esize) - 1
                };
                let rotated = if rot == 0 {
                    elem
                } else {
                    ((elem >> rot) | (elem << (esize - rot))) & emask
                };
                let mut pattern = 0u64;
                let mut i = 0;
                while i < 64 {
                    pattern |= rotated << i;
                    i += esize;
                }
                let n = u32::from(esize == 64);
                let imms = ((!((esize << 1) - 1)) & 0x3f) | (run - 1);
                let got = decode_bit_masks(n, imms, rot, true, 64).map(|m| m.0);
                assert_eq!(got, Some(pattern), "esize {esize} run {run} rot {rot}");
                valid.insert((n, imms));
                count += 1;
                if esize <= 32 {
                    let got32 = decode_bit_masks(n, imms, rot, true, 32).map(|m| m.0);
                    assert_eq!(got32, Some(pattern & 0xffff_ffff));
                }
            }
        }
    }
    for n in 0..2 {
        for imms in 0..64 {
            if !valid.contains(&(n, imms)) {
                assert_eq!(
                    decode_bit_masks(n, imms, 0, true, 64),
                    None,
                    "n {n} imms {imms}"
                );
            }
        }
    }
    // 5334 distinct (N, imms, immr) logical immediates over 120 (N, imms) pairs.
    assert_eq!((count, valid.len()), (5334, 120));
}

#[test]
fn logical_shifted_register() {
    let (cpu, _) = run_prog(
        &[
            0x8ac22020, // and x0, x1, x2, ror #8
            0x8a250083, // bic x3, x4, x5
            0x2a280ce6, // orn w6, w7, w8, lsl #3
            0xcaabfd49, // eon x9, x10, x11, asr #63
            0xaa1303f2, // mov x18, x19
            0x2a3503f4, // mvn w20, w21
            0xea31020f, // bics x15, x16, x17
        ],
        &[
            (1, u64::MAX),
            (2, 0x0000_0000_0000_12ff),
            (4, 0xff),
            (5, 0x0f),
            (7, 0),
            (8, 0x1000_0001),
            (10, 0x1234),
            (11, 1 << 63),
            (19, 0xdead),
            (21, 0x1234_5678_0000_0001),
            (16, 0xf0),
            (17, 0xf0),
        ],
    );
    assert_eq!(cpu.x(0), 0xff00_0000_0000_0012);
    assert_eq!(cpu.x(3), 0xf0);
    assert_eq!(cpu.x(6), !(0x1000_0001u32 << 3) as u64);
    assert_eq!(cpu.x(9), 0x1234);
    assert_eq!(cpu.x(18), 0xdead);
    assert_eq!(cpu.x(20), 0xffff_fffe);
    assert_eq!(cpu.x(15), 0);
    assert_eq!(cpu.nzcv(), Z);
    let (cpu, _) = run_prog(
        &[0x6a0e01ac /* ands w12, w13, w14 */],
        &[(13, 0x8000_0000), (14, u64::MAX)],
    );
    assert_eq!((cpu.x(12), cpu.nzcv()), (0x8000_0000, N));
}

#[test]
fn bitfield_and_extract() {
    let a = 0x1234_5678_9abc_def0;
    let b = 0xfedc_ba98_7654_3210;
    let (cpu, _) = run_prog(
        &[
            0xd37cee20, // lsl x0, x17, #4
            0x531f7e22, // lsr w2, w17, #31
            0x937ffe44, // asr x4, x18, #63
            0x93401e26, // sxtb x6, w17
            0x13003e28, // sxth w8, w17
            0x93407e2a, // sxtw x10, w17
            0x53001e2c, // uxtb w12, w17
            0x53003e2e, // uxth w14, w17
            0xd3485e30, // ubfx x16, x17, #8, #16
            0x13041e33, // sbfx w19, w17, #4, #4
            0xb3741e34, // bfi x20, x17, #12, #8
            0x33031e36, // bfxil w22, w17, #3, #5
            0x93d11238, // ror x24, x17, #4
            0x1392223a, // extr w26, w17, w18, #8
            0x531f7a3b, // lsl w27, w17, #1
            0x13047e3c, // asr w28, w17, #4
        ],
        &[(17, a), (18, b), (22, u64::MAX)],
    );
    assert_eq!(cpu.x(0), 0x2345_6789_abcd_ef00);
    assert_eq!(cpu.x(2), 1);
    assert_eq!(cpu.x(4), u64::MAX);
    assert_eq!(cpu.x(6), 0xffff_ffff_ffff_fff0);
    assert_eq!(cpu.x(8), 0xffff_def0);
    assert_eq!(cpu.x(10), 0xffff_ffff_9abc_def0);
    assert_eq!(cpu.x(12), 0xf0);
    assert_eq!(cpu.x(14), 0xdef0);
    assert_eq!(cpu.x(16), 0xbcde);
    assert_eq!(cpu.x(19), 0xffff_ffff);
    assert_eq!(cpu.x(20), 0xf_0000);
    assert_eq!(cpu.x(22), 0xffff_fffe);
    assert_eq!(cpu.x(24), 0x0123_4567_89ab_cdef);
    assert_eq!(cpu.x(26), 0xf076_5432);
    assert_eq!(cpu.x(27), 0x3579_bde0);
    assert_eq!(cpu.x(28), 0xf9ab_cdef);
}

#[test]
fn variable_shifts() {
    let (cpu, _) = run_prog(
        &[
            0x9ac22220, // lslv x0, x17, x2
            0x1ac22623, // lsrv w3, w17, w2
            0x9ac22a46, // asrv x6, x18, x2
            0x1ac22e29, // rorv w9, w17, w2
            0x9adf262a, // lsr x10, x17, xzr
        ],
        &[
            (17, 0x1234_5678_9abc_def0),
            (18, 0xfedc_ba98_7654_3210),
            (2, 68),
        ],
    );
    assert_eq!(cpu.x(0), 0x2345_6789_abcd_ef00);
    assert_eq!(cpu.x(3), 0x09ab_cdef);
    assert_eq!(cpu.x(6), 0xffed_cba9_8765_4321);
    assert_eq!(cpu.x(9), 0x09ab_cdef);
    assert_eq!(cpu.x(10), 0x1234_5678_9abc_def0);
}

#[test]
fn conditional_select_and_compare() {
    let (cpu, _) = run_prog(
        &[
            0xeb02003f, // cmp x1, x2
            0x9a820020, // csel x0, x1, x2, eq
            0x1a821423, // csinc w3, w1, w2, ne
            0xda82b026, // csinv x6, x1, x2, lt
            0x5a82a429, // csneg w9, w1, w2, ge
            0x9a9f97ec, // cset x12, hi
            0x5a9f83ed, // csetm w13, ls
            0x9a81742e, // cinc x14, x1, vs
            0x9a81542f, // cinc x15, x1, mi
        ],
        &[(1, 5), (2, 7), (12, 9)],
    );
    assert_eq!(cpu.nzcv(), N);
    assert_eq!(cpu.x(0), 7);
    assert_eq!(cpu.x(3), 5);
    assert_eq!(cpu.x(6), 5);
    assert_eq!(cpu.x(9), 0xffff_fff9);
    assert_eq!(cpu.x(12), 0);
    assert_eq!(cpu.x(13), 0xffff_ffff);
    assert_eq!(cpu.x(14), 5);
    assert_eq!(cpu.x(15), 6);
    let (cpu, _) = run_prog(
        &[
            0xeb01003f, /* cmp x1, x1 */
            0xfa420024, /* ccmp x1, x2, #4, eq */
        ],
        &[(1, 5), (2, 7)],
    );
    assert_eq!(cpu.nzcv(), N);
    let (cpu, _) = run_prog(
        &[
            0xeb01003f, /* cmp x1, x1 */
            0xfa421024, /* ccmp x1, x2, #4, ne */
        ],
        &[(1, 5), (2, 7)],
    );
    assert_eq!(cpu.nzcv(), Z);
    let (cpu, _) = run_prog(
        &[
            0xeb02003f, /* cmp x1, x2 */
            0x3a451822, /* ccmn w1, #5, #2, ne */
        ],
        &[(1, 0xffff_fffb)],
    );
    assert_eq!(cpu.nzcv(), Z | C);
}

#[test]
fn multiply_divide() {
    let (cpu, _) = run_prog(
        &[
            0x9b020c20, // madd x0, x1, x2, x3
            0x1b028c24, // msub w4, w1, w2, w3
            0x9b027c28, // mul x8, x1, x2
            0x9ac2086b, // udiv x11, x3, x2
            0x9ac20cae, // sdiv x14, x5, x2
            0x9adf0870, // udiv x16, x3, xzr
            0x1ac70cd1, // sdiv w17, w6, w7
            0x9b557eb4, // smulh x20, x21, x21
            0x9bd77ef6, // umulh x22, x23, x23
            0x9b417ef8, // smulh x24, x23, x1
            0x9b220cb9, // smaddl x25, w5, w2, x3
            0x9bb77efa, // umull x26, w23, w23
            0x9adf0cbb, // sdiv x27, x5, xzr
        ],
        &[
            (1, 5),
            (2, 7),
            (3, 100),
            (5, (-100i64) as u64),
            (6, 0x8000_0000),
            (7, 0xffff_ffff),
            (21, 1 << 63),
            (23, u64::MAX),
            (27, 1),
        ],
    );
    assert_eq!(cpu.x(0), 135);
    assert_eq!(cpu.x(4), 65);
    assert_eq!(cpu.x(8), 35);
    assert_eq!(cpu.x(11), 14);
    assert_eq!(cpu.x(14), (-14i64) as u64);
    assert_eq!(cpu.x(16), 0);
    assert_eq!(cpu.x(17), 0x8000_0000);
    assert_eq!(cpu.x(20), 0x4000_0000_0000_0000);
    assert_eq!(cpu.x(22), 0xffff_ffff_ffff_fffe);
    assert_eq!(cpu.x(24), u64::MAX);
    assert_eq!(cpu.x(25), (-600i64) as u64);
    assert_eq!(cpu.x(26), 0xffff_fffe_0000_0001);
    assert_eq!(cpu.x(27), 0);
}

#[test]
fn carry_and_one_source() {
    let (cpu, _) = run_prog(
        &[
            0xeb01003f, // cmp x1, x1
            0x9a020020, // adc x0, x1, x2
            0x7a020023, // sbcs w3, w1, w2
        ],
        &[(1, 5), (2, 7)],
    );
    assert_eq!(cpu.x(0), 13);
    assert_eq!(cpu.x(3), 0xffff_fffe);
    assert_eq!(cpu.nzcv(), N);
    let (cpu, _) = run_prog(
        &[
            0xdac00220, // rbit x0, x17
            0x5ac00622, // rev16 w2, w17
            0xdac00a24, // rev32 x4, x17
            0xdac00e26, // rev x6, x17
            0x5ac00a28, // rev w8, w17
            0xdac0126a, // clz x10, x19
            0xdac013eb, // clz x11, xzr
            0x5ac0168c, // cls w12, w20
            0xdac0142d, // cls x13, x1
            0x5ac0126e, // clz w14, w19
        ],
        &[
            (17, 0x1234_5678_9abc_def0),
            (19, 1),
            (20, 0xffff_fff0),
            (1, 5),
        ],
    );
    assert_eq!(cpu.x(0), 0x0f7b_3d59_1e6a_2c48);
    assert_eq!(cpu.x(2), 0xbc9a_f0de);
    assert_eq!(cpu.x(4), 0x7856_3412_f0de_bc9a);
    assert_eq!(cpu.x(6), 0xf0de_bc9a_7856_3412);
    assert_eq!(cpu.x(8), 0xf0de_bc9a);
    assert_eq!(cpu.x(10), 63);
    assert_eq!(cpu.x(11), 64);
    assert_eq!(cpu.x(12), 27);
    assert_eq!(cpu.x(13), 60);
    assert_eq!(cpu.x(14), 31);
}

#[test]
fn branches() {
    let (cpu, _) = run_prog(
        &[
            0xd2800000, // movz x0, #0
            0xb4000040, // cbz x0, .+8
            0xd2800c60, // movz x0, #99
            0x91000400, // add x0, x0, #1
            0xb5000040, // cbnz x0, .+8
            0x91019000, // add x0, x0, #100
            0x36080040, // tbz x0, #1, .+8
            0x91019000, // add x0, x0, #100
            0x37000040, // tbnz x0, #0, .+8
            0x91019000, // add x0, x0, #100
            0xf100041f, // cmp x0, #1
            0x54000041, // b.ne .+8
            0x91000400, // add x0, x0, #1
            0x54000040, // b.eq .+8
            0x91019000, // add x0, x0, #100
            0x94000002, // bl .+8
            0x91019000, // add x0, x0, #100
            0x10000081, // adr x1, .+16
            0xd63f0020, // blr x1
            0x14000003, // b .+12
            0x91019000, // add x0, x0, #100
            0xd65f03c0, // ret
            0x91000400, // add x0, x0, #1
            0xb7400043, // tbnz x3, #40, .+8
            0x91019000, // add x0, x0, #100
            0x34000043, // cbz w3, .+8
            0x91019000, // add x0, x0, #100
            0x10000062, // adr x2, .+12
            0xd61f0040, // br x2
            0x91019000, // add x0, x0, #100
            0x14000001, // b .+4
        ],
        &[(3, 1 << 40)],
    );
    assert_eq!(cpu.x(0), 3);
    assert_eq!(cpu.x(30), RAM + 19 * 4);
    assert_eq!(cpu.x(1), RAM + 21 * 4);
    // Backward branch loop: 10 iterations.
    let (cpu, _) = run_prog(
        &[
            0xd2800140, // movz x0, #10
            0xd2800001, // movz x1, #0
            0x91000c21, // add x1, x1, #3
            0xf1000400, // subs x0, x0, #1
            0x54ffffc1, // b.ne .-8
        ],
        &[],
    );
    assert_eq!(cpu.x(1), 30);
    // movz, movz, 10 x (add, subs, b.ne), hvc.
    assert_eq!(cpu.instructions_retired(), 2 + 30 + 1);
}

#[test]
fn adr_adrp() {
    let (cpu, _) = run_prog(
        &[
            0x10000800, // adr x0, .+0x100
            0x10ffffe1, // adr x1, .-4
            0xf0000002, // adrp x2, .+0x3000 (objdump: adrp x2, 3000)
            0xf0ffffe3, // adrp x3, .-0x1000 (objdump: adrp x3, -0x1000)
        ],
        &[],
    );
    assert_eq!(cpu.x(0), RAM + 0x100);
    assert_eq!(cpu.x(1), RAM);
    assert_eq!(cpu.x(2), RAM + 0x3000);
    assert_eq!(cpu.x(3), RAM - 0x1000);
}

#[test]
fn loads_and_stores() {
    let x1 = 0x1122_3344_5566_7788;
    let x2 = 0x8081_8283_8485_86f7;
    let (cpu, bus) = run_prog(
        &[
            0xf9000001, // str x1, [x0]
            0xf9400003, // ldr x3, [x0]
            0xb9400404, // ldr w4, [x0, #4]
            0x39401c05, // ldrb w5, [x0, #7]
            0x79400406, // ldrh w6, [x0, #2]
            0xf9000402, // str x2, [x0, #8]
            0x39c02007, // ldrsb w7, [x0, #8]
            0x39802008, // ldrsb x8, [x0, #8]
            0x79c01c09, // ldrsh w9, [x0, #14]
            0x79801c0a, // ldrsh x10, [x0, #14]
            0xb9800c0b, // ldrsw x11, [x0, #12]
            0x39004001, // strb w1, [x0, #16]
            0x79002401, // strh w1, [x0, #18]
            0xb9001401, // str w1, [x0, #20]
            0xf940080c, // ldr x12, [x0, #16]
            0xb81fc002, // stur w2, [x0, #-4]
            0xb85fc00d, // ldur w13, [x0, #-4]
            0xaa0003ee, // mov x14, x0
            0xf8018dc1, // str x1, [x14, #24]!
            0xf84085cf, // ldr x15, [x14], #8
            0x385e0dd0, // ldrb w16, [x14, #-32]!
            0xd2800071, // movz x17, #3
            0xf8717812, // ldr x18, [x0, x17, lsl #3]
            0xb873d814, // ldr w20, [x0, w19, sxtw #2]
            0x38716815, // ldrb w21, [x0, x17]
            0x78715816, // ldrh w22, [x0, w17, uxtw #1]
            0xb8317802, // str w2, [x0, x17, lsl #2]
            0xf9800400, // prfm pldl1keep, [x0, #8]
            0xf878e817, // ldr x23, [x0, x24, sxtx]
        ],
        &[(0, DATA), (1, x1), (2, x2), (19, u64::MAX), (24, 8)],
    );
    assert_eq!(cpu.x(3), x1);
    assert_eq!(cpu.x(4), 0x1122_3344);
    assert_eq!(cpu.x(5), 0x11);
    assert_eq!(cpu.x(6), 0x5566);
    assert_eq!(cpu.x(7), 0xffff_fff7);
    assert_eq!(cpu.x(8), 0xffff_ffff_ffff_fff7);
    assert_eq!(cpu.x(9), 0xffff_8081);
    assert_eq!(cpu.x(10), 0xffff_ffff_ffff_8081);
    assert_eq!(cpu.x(11), 0xffff_ffff_8081_8283);
    assert_eq!(cpu.x(12), 0x5566_7788_7788_0088);
    assert_eq!(cpu.x(13), 0x8485_86f7);
    assert_eq!(cpu.x(14), DATA);
    assert_eq!(cpu.x(15), x1);
    assert_eq!(cpu.x(16), 0x88);
    assert_eq!(cpu.x(18), x1);
    assert_eq!(cpu.x(20), 0x8485_86f7);
    assert_eq!(cpu.x(21), 0x55);
    assert_eq!(cpu.x(22), 0x1122);
    assert_eq!(cpu.x(23), 0x8485_86f7_8485_86f7);
    assert_eq!(bus.read_u64(DATA + 8), 0x8485_86f7_8485_86f7);
    assert_eq!(bus.read_u64(DATA + 24), x1);
}

#[test]
fn load_literal() {
    let (cpu, _) = run_prog(
        &[
            0x58000081, // ldr x1, .+16
            0x18000062, // ldr w2, .+12
            0x98000063, // ldrsw x3, .+12
            0x14000003, // b .+12
            0x89abcdef, // .word 0x89abcdef
            0x81234567, // .word 0x81234567
        ],
        &[],
    );
    assert_eq!(cpu.x(1), 0x8123_4567_89ab_cdef);
    assert_eq!(cpu.x(2), 0x89ab_cdef);
    assert_eq!(cpu.x(3), 0xffff_ffff_8123_4567);
}

#[test]
fn load_store_pair() {
    let (cpu, bus) = run_prog(
        &[
            0xa9020801, // stp x1, x2, [x0, #32]
            0xa9421003, // ldp x3, x4, [x0, #32]
            0xaa0003e5, // mov x5, x0
            0x29bf08a1, // stp w1, w2, [x5, #-8]!
            0x28c11ca6, // ldp w6, w7, [x5], #8
            0x697f2408, // ldpsw x8, x9, [x0, #-8]
            0xa8030402, // stnp x2, x1, [x0, #48]
            0xa8432c0a, // ldnp x10, x11, [x0, #48]
            0xa9bf0be1, // stp x1, x2, [sp, #-16]!
            0xa8c137ec, // ldp x12, x13, [sp], #16
        ],
        &[
            (0, DATA),
            (1, 0x1111_2222_8333_4444),
            (2, 0x5555_6666_f777_8888),
        ],
    );
    assert_eq!(bus.read_u64(DATA + 32), 0x1111_2222_8333_4444);
    assert_eq!(bus.read_u64(DATA + 40), 0x5555_6666_f777_8888);
    assert_eq!(
        (cpu.x(3), cpu.x(4)),
        (0x1111_2222_8333_4444, 0x5555_6666_f777_8888)
    );
    assert_eq!(cpu.x(5), DATA);
    assert_eq!((cpu.x(6), cpu.x(7)), (0x8333_4444, 0xf777_8888));
    assert_eq!(
        (cpu.x(8), cpu.x(9)),
        (0xffff_ffff_8333_4444, 0xffff_ffff_f777_8888)
    );
    assert_eq!(
        (cpu.x(10), cpu.x(11)),
        (0x5555_6666_f777_8888, 0x1111_2222_8333_4444)
    );
    assert_eq!(
        (cpu.x(12), cpu.x(13)),
        (0x1111_2222_8333_4444, 0x5555_6666_f777_8888)
    );
    assert_eq!(cpu.sp(), RAM + 0x8000);
}

/// ESR_EL2 values for stage-2 data aborts, per /work/shared/spec/cca.md §3.2.
#[test]
fn data_abort_syndromes() {
    let cases: &[(u32, u64)] = &[
        (0xb9000001 /* str w1, [x0] */, 0x9381_0047),
        (0xf9400002 /* ldr x2, [x0] */, 0x93C2_8007),
        (0x39c00003 /* ldrsb w3, [x0] */, 0x9323_0007),
        (0x79800004 /* ldrsh x4, [x0] */, 0x9364_8007),
        (0xb9400005 /* ldr w5, [x0] */, 0x9385_0007),
        (0x3900001f /* strb wzr, [x0] */, 0x931F_0047),
        (0xf83f6806 /* str x6, [x0, xzr] */, 0x93C6_8047),
        (0xb9800007 /* ldrsw x7, [x0] */, 0x93A7_8007),
        (0xf8400008 /* ldur x8, [x0] */, 0x93C8_8007),
        (0x79000009 /* strh w9, [x0] */, 0x9349_0047),
        // Writeback and pair forms: ISV = 0.
        (0xf8008401 /* str x1, [x0], #8 */, 0x9200_0047),
        (0xf8408401 /* ldr x1, [x0], #8 */, 0x9200_0007),
        (0xa9400801 /* ldp x1, x2, [x0] */, 0x9200_0007),
        (0x29000801 /* stp w1, w2, [x0] */, 0x9200_0047),
    ];
    for &(insn, esr_expect) in cases {
        let (mut cpu, mut bus) = setup(&[insn]);
        cpu.set_x(0, HOLE);
        cpu.set_x(1, 0x55);
        let exit = cpu.run(&mut bus, 10);
        assert_eq!(
            exit,
            Exit::DataAbort {
                esr: esr_expect,
                far: HOLE,
                hpfar: 0x109_0000
            },
            "insn {insn:#010x}"
        );
        assert_eq!(cpu.pc(), RAM);
        assert_eq!(cpu.x(0), HOLE, "no writeback on abort");
        assert_eq!(cpu.x(1), 0x55);
        assert_eq!(cpu.instructions_retired(), 0);
        assert_eq!(esr::hpfar_to_ipa(0x109_0000), HOLE & !0xfff);
    }
    // Accessors on the spec's example.
    let e = 0x93C2_8007;
    assert_eq!(esr::ec(e), esr::EC_DABT_LOWER);
    assert!(esr::il(e) && esr::isv(e) && esr::sf(e) && !esr::sse(e) && !esr::wnr(e));
    assert_eq!((esr::sas(e), esr::srt(e), esr::dfsc(e)), (3, 2, 7));
    let syn = esr::AccessSyndrome {
        sas: 2,
        sse: false,
        srt: 1,
        sf: false,
        ar: false,
    };
    assert_eq!(
        esr::build(
            esr::EC_DABT_LOWER,
            true,
            esr::data_abort_iss(Some(syn), true, 7)
        ),
        0x9381_0047
    );
    // Second access of a pair faults: FAR is the second address.
    let (mut cpu, mut bus) = setup(&[0xa9400801 /* ldp x1, x2, [x0] */]);
    cpu.set_x(0, RAM + RAM_SIZE as u64 - 8);
    let far = RAM + RAM_SIZE as u64;
    assert_eq!(
        cpu.run(&mut bus, 10),
        Exit::DataAbort {
            esr: 0x9200_0007,
            far,
            hpfar: esr::hpfar(far)
        }
    );
    assert_eq!(cpu.x(1), 0, "no partial register update on a faulting LDP");
    // External abort.
    let (mut cpu, mut bus) = setup(&[0xb9400005 /* ldr w5, [x0] */]);
    cpu.set_x(0, SEA_ADDR);
    assert_eq!(
        cpu.run(&mut bus, 10),
        Exit::DataAbort {
            esr: 0x9385_0010,
            far: SEA_ADDR,
            hpfar: esr::hpfar(SEA_ADDR)
        }
    );
}

#[test]
fn instruction_abort_and_pc_alignment() {
    let mut cpu = Aarch64Cpu::new();
    let mut bus = TestBus::new();
    cpu.set_pc(HOLE & !3);
    assert_eq!(
        cpu.step(&mut bus),
        Some(Exit::InstructionAbort {
            esr: 0x8200_0007,
            far: HOLE & !3,
            hpfar: 0x109_0000
        })
    );
    cpu.set_pc(SEA_ADDR);
    assert_eq!(
        cpu.step(&mut bus),
        Some(Exit::InstructionAbort {
            esr: 0x8200_0010,
            far: SEA_ADDR,
            hpfar: esr::hpfar(SEA_ADDR)
        })
    );
    // Misaligned PC: PC alignment fault (EC 0x22) to EL1.
    cpu.set_sysreg(SysReg::VbarEl1, RAM + 0x800);
    cpu.set_pc(RAM + 2);
    assert_eq!(cpu.step(&mut bus), None);
    assert_eq!(cpu.pc(), RAM + 0xa00);
    assert_eq!(cpu.sysreg(SysReg::EsrEl1), 0x8A00_0000);
    assert_eq!(cpu.sysreg(SysReg::FarEl1), RAM + 2);
    assert_eq!(cpu.sysreg(SysReg::ElrEl1), RAM + 2);
}

#[test]
fn alignment_fault_to_el1() {
    let (mut cpu, mut bus) = setup(&[
        0xb9400001, /* ldr w1, [x0] */
        0xf8004001, /* str x1, [x0, #4] */
        0xd4000002, /* hvc #0 */
    ]);
    cpu.set_x(0, DATA + 2);
    cpu.set_nzcv(N | C);
    cpu.set_daif(0);
    assert_eq!(cpu.step(&mut bus), None);
    assert_eq!(cpu.pc(), RAM + 0x4200);
    assert_eq!(cpu.sysreg(SysReg::EsrEl1), 0x9600_0021);
    assert_eq!(cpu.sysreg(SysReg::FarEl1), DATA + 2);
    assert_eq!(cpu.sysreg(SysReg::ElrEl1), RAM);
    assert_eq!(cpu.sysreg(SysReg::SpsrEl1), 0xA000_0005);
    assert_eq!(cpu.daif(), 0xF);
    // Store flavour (WnR) from EL1t: vector offset 0.
    cpu.set_pc(RAM + 4);
    cpu.set_pstate(0x3C4);
    assert_eq!(cpu.step(&mut bus), None);
    assert_eq!(cpu.pc(), RAM + 0x4000);
    assert_eq!(cpu.sysreg(SysReg::EsrEl1), 0x9600_0061);
    assert_eq!(cpu.sysreg(SysReg::FarEl1), DATA + 6);
    assert_eq!(cpu.sysreg(SysReg::SpsrEl1), 0x3C4);
    assert_eq!(cpu.pstate() & 0xF, 0b0101);
}

#[test]
fn sp_alignment_check() {
    let (mut cpu, mut bus) = setup(&[0xf94003e1 /* ldr x1, [sp] */]);
    cpu.set_sp(RAM + 0x8008);
    cpu.set_sysreg(SysReg::SctlrEl1, super::sysreg::SCTLR_EL1_RESET | 8);
    assert_eq!(cpu.step(&mut bus), None);
    assert_eq!(cpu.sysreg(SysReg::EsrEl1), 0x9A00_0000);
    assert_eq!(cpu.pc(), RAM + 0x4200);
}

#[test]
fn exception_generation_and_eret() {
    // SMC: PC stays; HVC: PC advances.
    run_exit(
        &[0xd4000243 /* smc #0x12 */],
        &[],
        Exit::Smc { imm: 0x12 },
        0,
    );
    run_exit(
        &[0xd503201f /* nop */, 0xd4000682 /* hvc #0x34 */],
        &[],
        Exit::Hvc { imm: 0x34 },
        2,
    );
    run_exit(&[0xd503207f /* wfi */], &[], Exit::Wfx { wfe: false }, 0);
    run_exit(&[0xd503205f /* wfe */], &[], Exit::Wfx { wfe: true }, 0);
    // SVC to EL1 and ERET back.
    let mut prog = vec![
        0xd40000a1, // svc #5
        0x91000400, // add x0, x0, #1
        0xd4000002, // hvc #0
    ];
    prog.resize(0x1080, 0);
    // Vector at VBAR + 0x200 = RAM + 0x4200 (word 0x1080).
    prog.extend_from_slice(&[
        0xd5385201, // mrs x1, esr_el1
        0xd5384022, // mrs x2, elr_el1
        0xd5384003, // mrs x3, spsr_el1
        0xd2800084, // movz x4, #4
        0xf2ac0004, // movk x4, #0x6000, lsl #16
        0xd5184004, // msr spsr_el1, x4
        0xd69f03e0, // eret
    ]);
    let (mut cpu, mut bus) = setup(&prog);
    cpu.set_x(0, 10);
    assert_eq!(cpu.run(&mut bus, 100), Exit::Hvc { imm: 0 });
    assert_eq!(cpu.x(0), 11);
    assert_eq!(cpu.x(1), 0x5600_0005);
    assert_eq!(cpu.x(2), RAM + 4);
    assert_eq!(cpu.x(3), 0x3C5);
    // ERET restored SPSR 0x6000_0004: Z and C set, DAIF clear, EL1t.
    assert_eq!(cpu.pstate(), 0x6000_0004);
    // BRK: ELR at the BRK itself.
    let (mut cpu, mut bus) = setup(&[0xd4200020 /* brk #1 */]);
    assert_eq!(cpu.step(&mut bus), None);
    assert_eq!(cpu.sysreg(SysReg::EsrEl1), 0xF200_0001);
    assert_eq!(cpu.sysreg(SysReg::ElrEl1), RAM);
    // ERET to EL0 / AArch32 is not modelled.
    let (mut cpu, mut bus) = setup(&[0xd69f03e0 /* eret */]);
    cpu.set_sysreg(SysReg::SpsrEl1, 0);
    assert!(matches!(cpu.step(&mut bus), Some(Exit::Undefined { .. })));
}

#[test]
fn injected_exceptions() {
    let mut cpu = Aarch64Cpu::new();
    cpu.set_sysreg(SysReg::VbarEl1, 0x8000_0800);
    cpu.set_pc(0x8000_1234);
    cpu.set_nzcv(Z);
    cpu.set_daif(0);
    cpu.inject_undef();
    assert_eq!(cpu.pc(), 0x8000_0a00);
    assert_eq!(cpu.sysreg(SysReg::EsrEl1), 0x0200_0000);
    assert_eq!(cpu.sysreg(SysReg::ElrEl1), 0x8000_1234);
    assert_eq!(cpu.sysreg(SysReg::SpsrEl1), 0x4000_0005);
    assert_eq!(cpu.daif(), 0xF);
    cpu.set_pc(0x8000_2000);
    cpu.inject_sea(0x1234_5678);
    assert_eq!(cpu.sysreg(SysReg::EsrEl1), 0x9600_0010);
    assert_eq!(cpu.sysreg(SysReg::FarEl1), 0x1234_5678);
    assert_eq!(cpu.sysreg(SysReg::ElrEl1), 0x8000_2000);
    cpu.take_exception_el1(0x1234, 0x99);
    assert_eq!(cpu.sysreg(SysReg::EsrEl1), 0x1234);
    assert_eq!(cpu.sysreg(SysReg::FarEl1), 0x99);
    assert_eq!(cpu.sysreg(SysReg::ElrEl1), 0x8000_0a00);
}

#[test]
fn system_registers() {
    let (cpu, _) = run_prog(
        &[
            0xd518c000, // msr vbar_el1, x0
            0xd538c001, // mrs x1, vbar_el1
            0xd50342ff, // msr daifclr, #2
            0xd53b4222, // mrs x2, daif
            0xd5034fdf, // msr daifset, #0xf
            0xd53b4223, // mrs x3, daif
            0xd5384244, // mrs x4, currentel
            0xd51b4205, // msr nzcv, x5
            0xd53b4206, // mrs x6, nzcv
            0xd51bd047, // msr tpidr_el0, x7
            0xd53bd048, // mrs x8, tpidr_el0
            0xd5184109, // msr sp_el0, x9
            0xd538410a, // mrs x10, sp_el0
            0xd538420b, // mrs x11, spsel
            0xd53be04c, // mrs x12, cntvct_el0
            0xd518100d, // msr sctlr_el1, x13
            0xd538100e, // mrs x14, sctlr_el1
            0xd518204f, // msr tcr_el1, x15
            0xd518200f, // msr ttbr0_el1, x15
            0xd518a20f, // msr mair_el1, x15
            0xd538a210, // mrs x16, mair_el1
        ],
        &[
            (0, 0x8000_0800),
            (5, 0x9000_0000),
            (7, 0x77),
            (9, 0xabc0),
            (13, 0x30d0_1804),
            (15, 0x55),
        ],
    );
    assert_eq!(cpu.x(1), 0x8000_0800);
    assert_eq!(cpu.x(2), 0x340);
    assert_eq!(cpu.x(3), 0x3c0);
    assert_eq!(cpu.x(4), 4);
    assert_eq!(cpu.x(6), 0x9000_0000);
    assert_eq!(cpu.nzcv(), N | V);
    assert_eq!(cpu.x(8), 0x77);
    assert_eq!(cpu.x(10), 0xabc0);
    assert_eq!(cpu.x(11), 1);
    assert_eq!(cpu.x(12), 14);
    assert_eq!(cpu.x(14), 0x30d0_1804);
    assert_eq!(cpu.x(16), 0x55);
    assert_eq!(cpu.sysreg(SysReg::TcrEl1), 0x55);
    assert_eq!(cpu.sysreg(SysReg::Ttbr0El1), 0x55);
    // SPSel switching.
    let (cpu, _) = run_prog(
        &[
            0xd50040bf, // msr spsel, #0
            0x910003e1, // mov x1, sp
            0xd50041bf, // msr spsel, #1
            0x910003e2, // mov x2, sp
        ],
        &[],
    );
    assert_eq!(cpu.x(1), 0);
    assert_eq!(cpu.x(2), RAM + 0x8000);
}

#[test]
fn system_register_traps() {
    // MRS of an ID register: EC 0x18, Op0=3 Op2=0 Op1=0 CRn=0 Rt=1 CRm=4 Direction=1.
    let cpu = run_exit(
        &[0xd5380401 /* mrs x1, id_aa64pfr0_el1 */],
        &[],
        Exit::SysReg { esr: 0x6230_0029 },
        0,
    );
    assert_eq!(cpu.instructions_retired(), 0);
    let e = 0x6230_0029;
    assert_eq!(esr::sysreg_id(e), esr::sysreg_key(3, 0, 0, 4, 0));
    assert_eq!((esr::sysreg_rt(e), esr::sysreg_is_read(e)), (1, true));
    let id = |insn: u32| {
        let (mut cpu, mut bus) = setup(&[insn]);
        match cpu.step(&mut bus) {
            Some(Exit::SysReg { esr }) => (
                esr::sysreg_id(esr),
                esr::sysreg_rt(esr),
                esr::sysreg_is_read(esr),
            ),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        id(0xd5380002 /* mrs x2, midr_el1 */),
        (esr::sysreg_key(3, 0, 0, 0, 0), 2, true)
    );
    assert_eq!(
        id(0xd53800a3 /* mrs x3, mpidr_el1 */),
        (esr::sysreg_key(3, 0, 0, 0, 5), 3, true)
    );
    assert_eq!(
        id(0xd538075e /* mrs x30, id_aa64mmfr2_el1 */),
        (esr::sysreg_key(3, 0, 0, 7, 2), 30, true)
    );
    assert_eq!(
        id(0xd538063f /* mrs xzr, id_aa64isar1_el1 */),
        (esr::sysreg_key(3, 0, 0, 6, 1), 31, true)
    );
    assert_eq!(
        id(0xd5100244 /* msr mdscr_el1, x4 */),
        (esr::sysreg_key(2, 0, 0, 2, 2), 4, false)
    );
    assert_eq!(
        id(0xd50b7425 /* dc zva, x5 */),
        (esr::sysreg_key(1, 3, 7, 4, 1), 5, false)
    );
    // The handler completes the access.
    let (mut cpu, mut bus) = setup(&[0xd5380507 /* mrs x7, id_aa64dfr0_el1 */, HVC0]);
    let Exit::SysReg { esr } = cpu.run(&mut bus, 10) else {
        panic!()
    };
    cpu.set_x(esr::sysreg_rt(esr), 0x1234);
    cpu.set_pc(cpu.pc() + 4);
    assert_eq!(cpu.run(&mut bus, 10), Exit::Hvc { imm: 0 });
    assert_eq!(cpu.x(7), 0x1234);
}

#[test]
fn hints_barriers_maintenance_are_nops() {
    let (cpu, _) = run_prog(
        &[
            0xd503201f, // nop
            0xd503203f, // yield
            0xd503209f, // sev
            0xd50320bf, // sevl
            0xd5033fdf, // isb
            0xd5033f9f, // dsb sy
            0xd5033bbf, // dmb ish
            0xd5033f5f, // clrex
            0xd50b7e20, // dc civac, x0
            0xd50b7b20, // dc cvau, x0
            0xd508751f, // ic iallu
            0xd50b7520, // ic ivau, x0
            0xd508871f, // tlbi vmalle1
            0xd5088320, // tlbi vae1is, x0
            0xd503245f, // hint #34
            0xd503229f, // csdb
        ],
        &[],
    );
    assert_eq!(cpu.instructions_retired(), 17);
}

#[test]
fn undefined_encodings() {
    let undef: &[u32] = &[
        0x0000_0000,                // udf #0
        0x1e622820,                 // fadd d0, d1, d2
        0xc85f7c20,                 // ldxr x0, [x1]
        0xc8dffc20,                 // ldar x0, [x1]
        0xf8408c21,                 // ldr x1, [x1, #8]!
        0xa9400401,                 // ldp x1, x1, [x0]
        0xa9810400,                 // stp x0, x1, [x0, #16]!
        0xf8400820,                 // ldtr x0, [x1]
        0xf8200041,                 // ldadd x0, x1, [x2]
        0xd4400000,                 // hlt #0
        0xd71f0801,                 // braa x0, x1
        0xd5184240,                 // msr currentel, x0
        0xd500419f,                 // msr pan, #1
        0x3dc00000,                 // ldr q0, [x0]
        0x1280_0000 | (0b01 << 29), // MOVN/MOVZ opc = 01: unallocated
        0x5280_0000 | (2 << 21),    // movz w0 with hw = 2: unallocated
        0x1240_0000,                // and w0, w0, #imm with N = 1 (sf = 0): unallocated
        0x9200_fc00,                // and x0, x0, #imm with N=0 imms=111111: reserved
        0x0b20_7400,                // add w0, w0, w0, uxtx #5: imm3 > 4
        0x8bc0_0000,                // add x0, x0, x0 with shift = 11: reserved
        0x7380_0000,                // SBFM opc = 11
        0x1ac0_0000,                // data-processing 2-source opcode 000000
        0xd61f_0001,                // br x0 with op4 != 0
        0x5400_0010,                // b.cond with o0 = 1 (BC.cond)
        0xf9c0_0000,                // size=11 opc=11 (unsigned offset): unallocated
    ];
    for &insn in undef {
        let (mut cpu, mut bus) = setup(&[insn]);
        cpu.set_x(0, DATA);
        cpu.set_x(1, DATA);
        cpu.set_x(2, DATA);
        assert_eq!(
            cpu.step(&mut bus),
            Some(Exit::Undefined { pc: RAM, insn }),
            "insn {insn:#010x}"
        );
        assert_eq!(cpu.pc(), RAM);
    }
    // MSR SCTLR_EL1 with M = 1 is refused (no stage-1 MMU).
    let (mut cpu, mut bus) = setup(&[0xd5181000 /* msr sctlr_el1, x0 */]);
    cpu.set_x(0, 0x30d0_0801);
    assert!(matches!(cpu.step(&mut bus), Some(Exit::Undefined { .. })));
    // SP_EL0 is not accessible through MRS while PSTATE.SP = 0.
    let (mut cpu, mut bus) = setup(&[0xd5384100 /* mrs x0, sp_el0 */]);
    cpu.set_pstate(0x3C4);
    assert!(matches!(cpu.step(&mut bus), Some(Exit::Undefined { .. })));
}

#[test]
fn run_budget_and_retired_count() {
    let (mut cpu, mut bus) = setup(&[0x14000000 /* b . */]);
    assert_eq!(cpu.run(&mut bus, 1000), Exit::Budget);
    assert_eq!(cpu.instructions_retired(), 1000);
    assert_eq!(cpu.run(&mut bus, 0), Exit::Budget);
}

/// A 1M-instruction loop (10M in the ignored `perf_10m_loop`): a sanity check that the run
/// loop has no per-instruction overhead worth mentioning.
fn loop_program(iterations: u32) -> Vec<u32> {
    vec![
        0xd2800000 | ((iterations & 0xffff) << 5), // movz x0, #lo
        0xf2a00000 | ((iterations >> 16) << 5),    // movk x0, #hi, lsl #16
        0x91000c21,                                // add x1, x1, #3
        0xca010042,                                // eor x2, x2, x1
        0xf9400083,                                // ldr x3, [x4]
        0xf9000082,                                // str x2, [x4]
        0xf1000400,                                // subs x0, x0, #1
        0x54ffff61,                                // b.ne .-20
        HVC0,
    ]
}

fn run_loop(iterations: u32) -> std::time::Duration {
    let (mut cpu, mut bus) = setup(&loop_program(iterations));
    cpu.set_x(4, DATA);
    let t = std::time::Instant::now();
    assert_eq!(cpu.run(&mut bus, u64::MAX), Exit::Hvc { imm: 0 });
    let dt = t.elapsed();
    assert_eq!(cpu.instructions_retired(), 3 + 6 * u64::from(iterations));
    assert_eq!(cpu.x(1), 3 * u64::from(iterations));
    dt
}

#[test]
fn loop_1m() {
    let _ = run_loop(1_000_000 / 6);
}

#[test]
#[ignore = "timing; run with --release -- --ignored"]
fn perf_10m_loop() {
    let dt = run_loop(10_000_000 / 6);
    eprintln!(
        "10M instructions in {dt:?} ({:.1} MIPS)",
        10.0 / dt.as_secs_f64()
    );
}
