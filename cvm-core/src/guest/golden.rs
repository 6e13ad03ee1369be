//! Golden encodings: every instruction form each ISA emitter produces, pinned byte for byte
//! with its disassembly alongside.
//!
//! Each case is a listing in (normalised) GNU objdump format, `offset: hex text`, where `hex`
//! is what objdump prints (a 32-bit word for AArch64/RV64, bytes for x86-64). The bytes test
//! rebuilds the code from the listing (gaps are zero, as objdump's `...`) and compares. The
//! listings were produced by, and checked against, binutils 2.x objdump (`-D -b binary -m
//! aarch64 | riscv:rv64 | i386:x86-64`); `objdump_agrees` re-runs it when objdump is installed.
//!
//! `CVM_GOLDEN_PRINT=1 cargo test -p cvm-core golden -- --nocapture` prints objdump's view of
//! every case (to re-pin after an intended change).

use std::process::Command;

use dynasmrt::DynamicLabel;

use super::aarch64::A64;
use super::lower::{Emitter, Src};
use super::platform::{Conduit, EntropySource, Layout};
use super::riscv64::Rv64;
use super::x86_64::X64;
use crate::config::Arch;

const CODE: u64 = 0x8000_0000;

fn layout() -> Layout {
    Layout {
        code: CODE,
        data: CODE + 0x10_0000,
        doorbell: 0x0900_0000,
        devices: vec![(0x0a00_0000, 0x1000)],
    }
}

type Build = fn(&mut dyn Emitter, DynamicLabel);

/// (name, what it builds).
fn cases() -> Vec<(&'static str, Build)> {
    vec![
        ("const_small", |e, _| e.store(0, 8, 0x7ff)),
        ("const_32", |e, _| e.store(0x1234_5678, 8, 0x7fff_f800)),
        ("const_64", |e, _| {
            e.store(0x8000_0000_0a00_0000, 8, 0xffff_ffff_ffff_fffe)
        }),
        ("const_mixed", |e, _| {
            e.store(0xdead_beef_0000_1000, 8, 0x0123_4567_89ab_cdef)
        }),
        ("store_1", |e, _| e.store(0x0a00_0000, 1, 0x5a)),
        ("store_2", |e, _| e.store(0x0a00_0002, 2, 0x1234)),
        ("store_4", |e, _| e.store(0x0a00_0004, 4, 0x8765_4321)),
        ("load_1u", |e, _| e.load(0x0a00_0000, 1, false, 0x08)),
        ("load_1s", |e, _| e.load(0x0a00_0000, 1, true, 0x10)),
        ("load_2u", |e, _| e.load(0x0a00_0000, 2, false, 0x18)),
        ("load_2s", |e, _| e.load(0x0a00_0000, 2, true, 0x20)),
        ("load_4u", |e, _| e.load(0x0a00_0000, 4, false, 0x28)),
        ("load_4s", |e, _| e.load(0x0a00_0000, 4, true, 0x30)),
        ("load_8", |e, _| e.load(0x0a00_0000, 8, false, 0x1f8)),
        ("doorbell_imm", |e, _| {
            e.doorbell(0x18, Src::Imm(0xc700_0000_0000_0101))
        }),
        ("doorbell_data", |e, _| e.doorbell(0x00, Src::Data(0x08))),
        ("doorbell_reg", |e, _| e.doorbell(0x08, Src::Reg(1))),
        ("expect", |e, _| {
            let ok = e.new_label();
            e.branch_eq(Src::Data(0x10), 42, ok);
            e.doorbell(0x00, Src::Data(0x10));
            e.bind(ok);
        }),
        ("expect_reg", |e, _| {
            let ok = e.new_label();
            e.branch_eq(Src::Reg(0), 0, ok);
            e.bind(ok);
        }),
        ("repeat_nested", |e, _| {
            let outer = e.repeat_start(0, 3);
            let inner = e.repeat_start(1, 100_000);
            e.save(2, 0x200);
            e.repeat_end(1, inner);
            e.repeat_end(0, outer);
        }),
        ("save_jump", |e, exit| {
            e.save(0, 0x208);
            e.jump(exit);
            e.bind(exit);
        }),
    ]
}

fn call_case(arch: Arch, e: &mut dyn Emitter) {
    let r = match arch {
        Arch::Aarch64 => e
            .call(Conduit::Smc(0), &[(0, 0xc400_0199), (1, 0x8010_0800)])
            .and_then(|()| e.call(Conduit::Hvc(0), &[(0, 0x8400_0008)])),
        Arch::Riscv64 => e.call(
            Conduit::Ecall,
            &[(17, 0x434f_5647), (16, 2), (10, 0x8020_0000)],
        ),
        Arch::X86_64 => e
            .call(Conduit::Vmcall, &[(0, 12), (3, 0x8020_0000), (1, 0x1000)])
            .and_then(|()| e.call(Conduit::Hlt, &[])),
    };
    assert!(r.is_ok());
}

fn entropy_case(arch: Arch, e: &mut dyn Emitter) {
    let source = match arch {
        Arch::Aarch64 => EntropySource::Rndr,
        Arch::Riscv64 => EntropySource::Seed,
        Arch::X86_64 => EntropySource::Rdrand,
    };
    let fail = e.new_label();
    assert!(e.entropy(source, 0x18, fail).is_ok());
    e.bind(fail);
}

fn emitter(arch: Arch) -> Box<dyn Emitter> {
    match arch {
        Arch::X86_64 => Box::new(X64::new(CODE)),
        Arch::Aarch64 => Box::new(A64::new(CODE)),
        Arch::Riscv64 => Box::new(Rv64::new(CODE)),
    }
}

/// Every case's code for `arch`, by name.
fn build_all(arch: Arch) -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    let mut run = |name: &'static str, f: &dyn Fn(&mut dyn Emitter, DynamicLabel)| {
        let mut e = emitter(arch);
        let label = e.new_label();
        f(e.as_mut(), label);
        out.push((name, e.finish().unwrap()));
    };
    for (name, build) in cases() {
        run(name, &build);
    }
    run("call", &|e, _| call_case(arch, e));
    run("entropy", &|e, _| entropy_case(arch, e));
    run("start", &|e, off| {
        e.start(&layout(), 0x0900_0000, off);
        e.bind(off);
    });
    out
}

/// One normalised listing line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    offset: usize,
    hex: String,
    text: String,
}

fn parse_listing(listing: &str) -> Vec<Line> {
    listing
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (offset, rest) = l.split_once(':').unwrap();
            let rest = rest.trim();
            let (hex, text) = split_hex(rest);
            Line {
                offset: usize::from_str_radix(offset.trim(), 16).unwrap(),
                hex,
                text: normalise(text),
            }
        })
        .collect()
}

/// Splits `hex text`, where hex is either one 8-digit word or 2-digit bytes.
fn split_hex(rest: &str) -> (String, &str) {
    let mut hex = Vec::new();
    let mut tail = rest;
    loop {
        let t = tail.trim_start();
        let token = t.split_whitespace().next().unwrap_or("");
        let is_hex = (token.len() == 2 || token.len() == 8)
            && token.chars().all(|c| c.is_ascii_hexdigit())
            && (token.len() == 8 || hex.iter().all(|h: &&str| h.len() == 2));
        // A word is alone; bytes continue until the mnemonic.
        if !is_hex || (hex.len() == 1 && hex[0].len() == 8) {
            return (hex.join(" "), t);
        }
        hex.push(token);
        tail = &t[token.len()..];
    }
}

fn normalise(text: &str) -> String {
    let text = text.split("//").next().unwrap_or("");
    let text = text.split(" # ").next().unwrap_or("");
    let text = text.split("\t#").next().unwrap_or("");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn bytes_of(arch: Arch, lines: &[Line]) -> Vec<u8> {
    let mut out = Vec::new();
    for l in lines {
        out.resize(l.offset, 0);
        if arch == Arch::X86_64 {
            out.extend(l.hex.split(' ').map(|b| u8::from_str_radix(b, 16).unwrap()));
        } else {
            let w = u32::from_str_radix(&l.hex, 16).unwrap();
            out.extend(w.to_le_bytes());
        }
    }
    out
}

fn objdump(arch: Arch, code: &[u8]) -> Option<String> {
    let (tools, machine): (&[&str], &str) = match arch {
        Arch::X86_64 => (&["objdump", "x86_64-linux-gnu-objdump"], "i386:x86-64"),
        Arch::Aarch64 => (&["aarch64-linux-gnu-objdump", "objdump"], "aarch64"),
        Arch::Riscv64 => (&["riscv64-linux-gnu-objdump", "objdump"], "riscv:rv64"),
    };
    let dir = std::env::temp_dir().join(format!("cvm-golden-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let file = dir.join(format!("{arch:?}-{}.bin", code.len()));
    std::fs::write(&file, code).ok()?;
    for tool in tools {
        let out = Command::new(tool)
            .args(["-D", "-b", "binary", "-m", machine, "--insn-width=16"])
            .args(if arch == Arch::Riscv64 {
                &["-M", "no-aliases,numeric"][..]
            } else {
                &[][..]
            })
            .arg(&file)
            .output();
        if let Ok(out) = out {
            if out.status.success() {
                let text = String::from_utf8_lossy(&out.stdout);
                // Only instruction lines: "  offset:\thex\ttext".
                let body: Vec<&str> = text
                    .lines()
                    .filter(|l| {
                        l.split_once(':').is_some_and(|(o, r)| {
                            !o.trim().is_empty()
                                && o.trim().chars().all(|c| c.is_ascii_hexdigit())
                                && r.starts_with('\t')
                        })
                    })
                    .collect();
                return Some(body.join("\n"));
            }
        }
    }
    None
}

fn check_arch(arch: Arch, golden: &[(&str, &str)]) {
    let built = build_all(arch);
    assert_eq!(
        built.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        golden.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        "{arch:?}: cases and golden listings differ"
    );
    for ((name, code), (_, listing)) in built.iter().zip(golden) {
        let lines = parse_listing(listing);
        assert_eq!(
            &bytes_of(arch, &lines),
            code,
            "{arch:?} case {name}: bytes differ from the pinned listing"
        );
    }
}

fn objdump_agrees(arch: Arch, golden: &[(&str, &str)]) {
    let print = std::env::var_os("CVM_GOLDEN_PRINT").is_some();
    for (i, (name, code)) in build_all(arch).iter().enumerate() {
        let Some(dump) = objdump(arch, code) else {
            println!("skipped: objdump for {arch:?} not found");
            return;
        };
        if print {
            println!("== {arch:?} {name}\n{dump}\n");
            continue;
        }
        let listing = golden.get(i).map_or("", |g| g.1);
        assert_eq!(
            parse_listing(&dump),
            parse_listing(listing),
            "{arch:?} case {name}: objdump disagrees with the pinned listing"
        );
    }
}

#[test]
fn aarch64_bytes() {
    check_arch(Arch::Aarch64, AARCH64);
}

#[test]
fn riscv64_bytes() {
    check_arch(Arch::Riscv64, RISCV64);
}

#[test]
fn x86_64_bytes() {
    check_arch(Arch::X86_64, X86_64);
}

#[test]
fn aarch64_objdump_agrees() {
    objdump_agrees(Arch::Aarch64, AARCH64);
}

#[test]
fn riscv64_objdump_agrees() {
    objdump_agrees(Arch::Riscv64, RISCV64);
}

#[test]
fn x86_64_objdump_agrees() {
    objdump_agrees(Arch::X86_64, X86_64);
}

const AARCH64: &[(&str, &str)] = &[
    (
        "const_small",
        "
        0: d2800015  mov x21, #0x0
        4: d280fff6  mov x22, #0x7ff
        8: f90002b6  str x22, [x21]
        ",
    ),
    (
        "const_32",
        "
        0: d28acf15  mov x21, #0x5678
        4: f2a24695  movk x21, #0x1234, lsl #16
        8: d29f0016  mov x22, #0xf800
        c: f2affff6  movk x22, #0x7fff, lsl #16
        10: f90002b6  str x22, [x21]
        ",
    ),
    (
        "const_64",
        "
        0: d2a14015  mov x21, #0xa000000
        4: f2f00015  movk x21, #0x8000, lsl #48
        8: 92800036  mov x22, #0xfffffffffffffffe
        c: f90002b6  str x22, [x21]
        ",
    ),
    (
        "const_mixed",
        "
        0: d2820015  mov x21, #0x1000
        4: f2d7ddf5  movk x21, #0xbeef, lsl #32
        8: f2fbd5b5  movk x21, #0xdead, lsl #48
        c: d299bdf6  mov x22, #0xcdef
        10: f2b13576  movk x22, #0x89ab, lsl #16
        14: f2c8acf6  movk x22, #0x4567, lsl #32
        18: f2e02476  movk x22, #0x123, lsl #48
        1c: f90002b6  str x22, [x21]
        ",
    ),
    (
        "store_1",
        "
        0: d2a14015  mov x21, #0xa000000
        4: d2800b56  mov x22, #0x5a
        8: 390002b6  strb w22, [x21]
        ",
    ),
    (
        "store_2",
        "
        0: d2800055  mov x21, #0x2
        4: f2a14015  movk x21, #0xa00, lsl #16
        8: d2824696  mov x22, #0x1234
        c: 790002b6  strh w22, [x21]
        ",
    ),
    (
        "store_4",
        "
        0: d2800095  mov x21, #0x4
        4: f2a14015  movk x21, #0xa00, lsl #16
        8: d2886436  mov x22, #0x4321
        c: f2b0ecb6  movk x22, #0x8765, lsl #16
        10: b90002b6  str w22, [x21]
        ",
    ),
    (
        "load_1u",
        "
        0: d2a14015  mov x21, #0xa000000
        4: 394002b6  ldrb w22, [x21]
        8: f9000676  str x22, [x19, #8]
        ",
    ),
    (
        "load_1s",
        "
        0: d2a14015  mov x21, #0xa000000
        4: 398002b6  ldrsb x22, [x21]
        8: f9000a76  str x22, [x19, #16]
        ",
    ),
    (
        "load_2u",
        "
        0: d2a14015  mov x21, #0xa000000
        4: 794002b6  ldrh w22, [x21]
        8: f9000e76  str x22, [x19, #24]
        ",
    ),
    (
        "load_2s",
        "
        0: d2a14015  mov x21, #0xa000000
        4: 798002b6  ldrsh x22, [x21]
        8: f9001276  str x22, [x19, #32]
        ",
    ),
    (
        "load_4u",
        "
        0: d2a14015  mov x21, #0xa000000
        4: b94002b6  ldr w22, [x21]
        8: f9001676  str x22, [x19, #40]
        ",
    ),
    (
        "load_4s",
        "
        0: d2a14015  mov x21, #0xa000000
        4: b98002b6  ldrsw x22, [x21]
        8: f9001a76  str x22, [x19, #48]
        ",
    ),
    (
        "load_8",
        "
        0: d2a14015  mov x21, #0xa000000
        4: f94002b6  ldr x22, [x21]
        8: f900fe76  str x22, [x19, #504]
        ",
    ),
    (
        "doorbell_imm",
        "
        0: d2802036  mov x22, #0x101
        4: f2f8e016  movk x22, #0xc700, lsl #48
        8: f9000e96  str x22, [x20, #24]
        ",
    ),
    (
        "doorbell_data",
        "
        0: f9400676  ldr x22, [x19, #8]
        4: f9000296  str x22, [x20]
        ",
    ),
    (
        "doorbell_reg",
        "
        0: f9000681  str x1, [x20, #8]
        ",
    ),
    (
        "expect",
        "
        0: f9400a76  ldr x22, [x19, #16]
        4: d2800557  mov x23, #0x2a
        8: eb1702df  cmp x22, x23
        c: 54000060  b.eq 0x18
        10: f9400a76  ldr x22, [x19, #16]
        14: f9000296  str x22, [x20]
        ",
    ),
    (
        "expect_reg",
        "
        0: d2800017  mov x23, #0x0
        4: eb17001f  cmp x0, x23
        8: 54000020  b.eq 0xc
        ",
    ),
    (
        "repeat_nested",
        "
        0: d2800078  mov x24, #0x3
        4: d290d419  mov x25, #0x86a0
        8: f2a00039  movk x25, #0x1, lsl #16
        c: f9010262  str x2, [x19, #512]
        10: f1000739  subs x25, x25, #0x1
        14: 54ffffc1  b.ne 0xc
        18: f1000718  subs x24, x24, #0x1
        1c: 54ffff41  b.ne 0x4
        ",
    ),
    (
        "save_jump",
        "
        0: f9010660  str x0, [x19, #520]
        4: 14000001  b 0x8
        ",
    ),
    (
        "call",
        "
        0: d2803320  mov x0, #0x199
        4: f2b88000  movk x0, #0xc400, lsl #16
        8: d2810001  mov x1, #0x800
        c: f2b00201  movk x1, #0x8010, lsl #16
        10: d4000003  smc
        14: d2800100  mov x0, #0x8
        18: f2b08000  movk x0, #0x8400, lsl #16
        1c: d4000002  hvc
        ",
    ),
    (
        "entropy",
        "
        0: d280081c  mov x28, #0x40
        4: d53b2416  mrs x22, rndr
        8: 540000a1  b.ne 0x1c
        c: f100079c  subs x28, x28, #0x1
        10: 54ffffa1  b.ne 0x4
        14: f9000e76  str x22, [x19, #24]
        18: 14000002  b 0x20
        1c: f9000e76  str x22, [x19, #24]
        ",
    ),
    (
        "start",
        "
        0: 14000410  b 0x1040
        800: 14000200  b 0x1000
        880: 140001e0  b 0x1000
        900: 140001c0  b 0x1000
        980: 140001a0  b 0x1000
        a00: 14000180  b 0x1000
        a80: 14000160  b 0x1000
        b00: 14000140  b 0x1000
        b80: 14000120  b 0x1000
        c00: 14000100  b 0x1000
        c80: 140000e0  b 0x1000
        d00: 140000c0  b 0x1000
        d80: 140000a0  b 0x1000
        e00: 14000080  b 0x1000
        e80: 14000060  b 0x1000
        f00: 14000040  b 0x1000
        f80: 14000020  b 0x1000
        1000: f9418276  ldr x22, [x19, #768]
        1004: b50001b6  cbnz x22, 0x1038
        1008: d2800036  mov x22, #0x1
        100c: f9018276  str x22, [x19, #768]
        1010: d5385216  mrs x22, esr_el1
        1014: f9000296  str x22, [x20]
        1018: d5384036  mrs x22, elr_el1
        101c: f9000696  str x22, [x20, #8]
        1020: d5386016  mrs x22, far_el1
        1024: f9000a96  str x22, [x20, #16]
        1028: d28000d6  mov x22, #0x6
        102c: f2f8e016  movk x22, #0xc700, lsl #48
        1030: f9000e96  str x22, [x20, #24]
        1034: 14000008  b 0x1054
        1038: f9000296  str x22, [x20]
        103c: 17ffffff  b 0x1038
        1040: d2b00213  mov x19, #0x80100000
        1044: d2a12014  mov x20, #0x9000000
        1048: d2810015  mov x21, #0x800
        104c: f2b00015  movk x21, #0x8000, lsl #16
        1050: d518c015  msr vbar_el1, x21
        ",
    ),
];
const RISCV64: &[(&str, &str)] = &[
    (
        "const_small",
        "
        0: 00000a13  addi x20,x0,0
        4: 7ff00a93  addi x21,x0,2047
        8: 015a3023  sd x21,0(x20)
        ",
    ),
    (
        "const_32",
        "
        0: 12345a37  lui x20,0x12345
        4: 678a0a13  addi x20,x20,1656
        8: 00100a93  addi x21,x0,1
        c: 01fa9a93  slli x21,x21,0x1f
        10: 800a8a93  addi x21,x21,-2048
        14: 015a3023  sd x21,0(x20)
        ",
    ),
    (
        "const_64",
        "
        0: fff00a13  addi x20,x0,-1
        4: 026a1a13  slli x20,x20,0x26
        8: 005a0a13  addi x20,x20,5
        c: 019a1a13  slli x20,x20,0x19
        10: ffe00a93  addi x21,x0,-2
        14: 015a3023  sd x21,0(x20)
        ",
    ),
    (
        "const_mixed",
        "
        0: deadca37  lui x20,0xdeadc
        4: eefa0a13  addi x20,x20,-273
        8: 014a1a13  slli x20,x20,0x14
        c: 001a0a13  addi x20,x20,1
        10: 00ca1a13  slli x20,x20,0xc
        14: 00092ab7  lui x21,0x92
        18: a2ba8a93  addi x21,x21,-1493
        1c: 00ca9a93  slli x21,x21,0xc
        20: 3c5a8a93  addi x21,x21,965
        24: 00da9a93  slli x21,x21,0xd
        28: abda8a93  addi x21,x21,-1347
        2c: 00ca9a93  slli x21,x21,0xc
        30: defa8a93  addi x21,x21,-529
        34: 015a3023  sd x21,0(x20)
        ",
    ),
    (
        "store_1",
        "
        0: 0a000a37  lui x20,0xa000
        4: 05a00a93  addi x21,x0,90
        8: 015a0023  sb x21,0(x20)
        ",
    ),
    (
        "store_2",
        "
        0: 0a000a37  lui x20,0xa000
        4: 002a0a13  addi x20,x20,2
        8: 00001ab7  lui x21,0x1
        c: 234a8a93  addi x21,x21,564
        10: 015a1023  sh x21,0(x20)
        ",
    ),
    (
        "store_4",
        "
        0: 0a000a37  lui x20,0xa000
        4: 004a0a13  addi x20,x20,4
        8: 00022ab7  lui x21,0x22
        c: d95a8a93  addi x21,x21,-619
        10: 00ea9a93  slli x21,x21,0xe
        14: 321a8a93  addi x21,x21,801
        18: 015a2023  sw x21,0(x20)
        ",
    ),
    (
        "load_1u",
        "
        0: 0a000a37  lui x20,0xa000
        4: 000a4a83  lbu x21,0(x20)
        8: 01593423  sd x21,8(x18)
        ",
    ),
    (
        "load_1s",
        "
        0: 0a000a37  lui x20,0xa000
        4: 000a0a83  lb x21,0(x20)
        8: 01593823  sd x21,16(x18)
        ",
    ),
    (
        "load_2u",
        "
        0: 0a000a37  lui x20,0xa000
        4: 000a5a83  lhu x21,0(x20)
        8: 01593c23  sd x21,24(x18)
        ",
    ),
    (
        "load_2s",
        "
        0: 0a000a37  lui x20,0xa000
        4: 000a1a83  lh x21,0(x20)
        8: 03593023  sd x21,32(x18)
        ",
    ),
    (
        "load_4u",
        "
        0: 0a000a37  lui x20,0xa000
        4: 000a6a83  lwu x21,0(x20)
        8: 03593423  sd x21,40(x18)
        ",
    ),
    (
        "load_4s",
        "
        0: 0a000a37  lui x20,0xa000
        4: 000a2a83  lw x21,0(x20)
        8: 03593823  sd x21,48(x18)
        ",
    ),
    (
        "load_8",
        "
        0: 0a000a37  lui x20,0xa000
        4: 000a3a83  ld x21,0(x20)
        8: 1f593c23  sd x21,504(x18)
        ",
    ),
    (
        "doorbell_imm",
        "
        0: fc700a93  addi x21,x0,-57
        4: 038a9a93  slli x21,x21,0x38
        8: 101a8a93  addi x21,x21,257
        c: 0159bc23  sd x21,24(x19)
        ",
    ),
    (
        "doorbell_data",
        "
        0: 00893a83  ld x21,8(x18)
        4: 0159b023  sd x21,0(x19)
        ",
    ),
    (
        "doorbell_reg",
        "
        0: 0019b423  sd x1,8(x19)
        ",
    ),
    (
        "expect",
        "
        0: 01093a83  ld x21,16(x18)
        4: 02a00b13  addi x22,x0,42
        8: 016a8663  beq x21,x22,0x14
        c: 01093a83  ld x21,16(x18)
        10: 0159b023  sd x21,0(x19)
        ",
    ),
    (
        "expect_reg",
        "
        0: 00000b13  addi x22,x0,0
        4: 01600263  beq x0,x22,0x8
        ",
    ),
    (
        "repeat_nested",
        "
        0: 00300b93  addi x23,x0,3
        4: 00018c37  lui x24,0x18
        8: 6a0c0c13  addi x24,x24,1696
        c: 20293023  sd x2,512(x18)
        10: fffc0c13  addi x24,x24,-1
        14: 000c0463  beq x24,x0,0x1c
        18: ff5ff06f  jal x0,0xc
        1c: fffb8b93  addi x23,x23,-1
        20: 000b8463  beq x23,x0,0x28
        24: fe1ff06f  jal x0,0x4
        ",
    ),
    (
        "save_jump",
        "
        0: 20093423  sd x0,520(x18)
        4: 0040006f  jal x0,0x8
        ",
    ),
    (
        "call",
        "
        0: 434f58b7  lui x17,0x434f5
        4: 64788893  addi x17,x17,1607
        8: 00200813  addi x16,x0,2
        c: 40100513  addi x10,x0,1025
        10: 01551513  slli x10,x10,0x15
        14: 00000073  ecall
        ",
    ),
    (
        "entropy",
        "
        0: 04000d93  addi x27,x0,64
        4: 01501af3  csrrw x21,seed,x0
        8: 01eadb13  srli x22,x21,0x1e
        c: 00200a13  addi x20,x0,2
        10: 014b0a63  beq x22,x20,0x24
        14: fffd8d93  addi x27,x27,-1
        18: fe0d96e3  bne x27,x0,0x4
        1c: 01593c23  sd x21,24(x18)
        20: 0100006f  jal x0,0x30
        24: 030a9a93  slli x21,x21,0x30
        28: 030ada93  srli x21,x21,0x30
        2c: 01593c23  sd x21,24(x18)
        ",
    ),
    (
        "start",
        "
        0: 04c0006f  jal x0,0x4c
        4: 30093a83  ld x21,768(x18)
        8: 000a8463  beq x21,x0,0x10
        c: 0380006f  jal x0,0x44
        10: 00100a93  addi x21,x0,1
        14: 31593023  sd x21,768(x18)
        18: 14202af3  csrrs x21,scause,x0
        1c: 0159b023  sd x21,0(x19)
        20: 14102af3  csrrs x21,sepc,x0
        24: 0159b423  sd x21,8(x19)
        28: 14302af3  csrrs x21,stval,x0
        2c: 0159b823  sd x21,16(x19)
        30: fc700a93  addi x21,x0,-57
        34: 038a9a93  slli x21,x21,0x38
        38: 006a8a93  addi x21,x21,6
        3c: 0159bc23  sd x21,24(x19)
        40: 02c0006f  jal x0,0x6c
        44: 0159b023  sd x21,0(x19)
        48: ffdff06f  jal x0,0x44
        4c: 00001937  lui x18,0x1
        50: 80190913  addi x18,x18,-2047
        54: 01491913  slli x18,x18,0x14
        58: 090009b7  lui x19,0x9000
        5c: 00100a13  addi x20,x0,1
        60: 01fa1a13  slli x20,x20,0x1f
        64: 004a0a13  addi x20,x20,4
        68: 105a1073  csrrw x0,stvec,x20
        ",
    ),
];
const X86_64: &[(&str, &str)] = &[
    (
        "const_small",
        "
        0: 41 ba 00 00 00 00  mov $0x0,%r10d
        6: 41 bb ff 07 00 00  mov $0x7ff,%r11d
        c: 4d 89 1a  mov %r11,(%r10)
        ",
    ),
    (
        "const_32",
        "
        0: 41 ba 78 56 34 12  mov $0x12345678,%r10d
        6: 41 bb 00 f8 ff 7f  mov $0x7ffff800,%r11d
        c: 4d 89 1a  mov %r11,(%r10)
        ",
    ),
    (
        "const_64",
        "
        0: 49 ba 00 00 00 0a 00 00 00 80  movabs $0x800000000a000000,%r10
        a: 49 c7 c3 fe ff ff ff  mov $0xfffffffffffffffe,%r11
        11: 4d 89 1a  mov %r11,(%r10)
        ",
    ),
    (
        "const_mixed",
        "
        0: 49 ba 00 10 00 00 ef be ad de  movabs $0xdeadbeef00001000,%r10
        a: 49 bb ef cd ab 89 67 45 23 01  movabs $0x123456789abcdef,%r11
        14: 4d 89 1a  mov %r11,(%r10)
        ",
    ),
    (
        "store_1",
        "
        0: 41 ba 00 00 00 0a  mov $0xa000000,%r10d
        6: 41 bb 5a 00 00 00  mov $0x5a,%r11d
        c: 45 88 1a  mov %r11b,(%r10)
        ",
    ),
    (
        "store_2",
        "
        0: 41 ba 02 00 00 0a  mov $0xa000002,%r10d
        6: 41 bb 34 12 00 00  mov $0x1234,%r11d
        c: 66 45 89 1a  mov %r11w,(%r10)
        ",
    ),
    (
        "store_4",
        "
        0: 41 ba 04 00 00 0a  mov $0xa000004,%r10d
        6: 41 bb 21 43 65 87  mov $0x87654321,%r11d
        c: 45 89 1a  mov %r11d,(%r10)
        ",
    ),
    (
        "load_1u",
        "
        0: 41 ba 00 00 00 0a  mov $0xa000000,%r10d
        6: 45 0f b6 1a  movzbl (%r10),%r11d
        a: 4d 89 98 08 00 00 00  mov %r11,0x8(%r8)
        ",
    ),
    (
        "load_1s",
        "
        0: 41 ba 00 00 00 0a  mov $0xa000000,%r10d
        6: 4d 0f be 1a  movsbq (%r10),%r11
        a: 4d 89 98 10 00 00 00  mov %r11,0x10(%r8)
        ",
    ),
    (
        "load_2u",
        "
        0: 41 ba 00 00 00 0a  mov $0xa000000,%r10d
        6: 45 0f b7 1a  movzwl (%r10),%r11d
        a: 4d 89 98 18 00 00 00  mov %r11,0x18(%r8)
        ",
    ),
    (
        "load_2s",
        "
        0: 41 ba 00 00 00 0a  mov $0xa000000,%r10d
        6: 4d 0f bf 1a  movswq (%r10),%r11
        a: 4d 89 98 20 00 00 00  mov %r11,0x20(%r8)
        ",
    ),
    (
        "load_4u",
        "
        0: 41 ba 00 00 00 0a  mov $0xa000000,%r10d
        6: 45 8b 1a  mov (%r10),%r11d
        9: 4d 89 98 28 00 00 00  mov %r11,0x28(%r8)
        ",
    ),
    (
        "load_4s",
        "
        0: 41 ba 00 00 00 0a  mov $0xa000000,%r10d
        6: 4d 63 1a  movslq (%r10),%r11
        9: 4d 89 98 30 00 00 00  mov %r11,0x30(%r8)
        ",
    ),
    (
        "load_8",
        "
        0: 41 ba 00 00 00 0a  mov $0xa000000,%r10d
        6: 4d 8b 1a  mov (%r10),%r11
        9: 4d 89 98 f8 01 00 00  mov %r11,0x1f8(%r8)
        ",
    ),
    (
        "doorbell_imm",
        "
        0: 49 bb 01 01 00 00 00 00 00 c7  movabs $0xc700000000000101,%r11
        a: 4d 89 99 18 00 00 00  mov %r11,0x18(%r9)
        ",
    ),
    (
        "doorbell_data",
        "
        0: 4d 8b 98 08 00 00 00  mov 0x8(%r8),%r11
        7: 4d 89 99 00 00 00 00  mov %r11,0x0(%r9)
        ",
    ),
    (
        "doorbell_reg",
        "
        0: 49 89 89 08 00 00 00  mov %rcx,0x8(%r9)
        ",
    ),
    (
        "expect",
        "
        0: 4d 8b 98 10 00 00 00  mov 0x10(%r8),%r11
        7: 40 bd 2a 00 00 00  rex mov $0x2a,%ebp
        d: 4c 3b dd  cmp %rbp,%r11
        10: 0f 84 0e 00 00 00  je 0x24
        16: 4d 8b 98 10 00 00 00  mov 0x10(%r8),%r11
        1d: 4d 89 99 00 00 00 00  mov %r11,0x0(%r9)
        ",
    ),
    (
        "expect_reg",
        "
        0: 40 bd 00 00 00 00  rex mov $0x0,%ebp
        6: 48 3b c5  cmp %rbp,%rax
        9: 0f 84 00 00 00 00  je 0xf
        ",
    ),
    (
        "repeat_nested",
        "
        0: 41 bc 03 00 00 00  mov $0x3,%r12d
        6: 41 bd a0 86 01 00  mov $0x186a0,%r13d
        c: 49 89 90 00 02 00 00  mov %rdx,0x200(%r8)
        13: 49 83 ed 01  sub $0x1,%r13
        17: 0f 85 ef ff ff ff  jne 0xc
        1d: 49 83 ec 01  sub $0x1,%r12
        21: 0f 85 df ff ff ff  jne 0x6
        ",
    ),
    (
        "save_jump",
        "
        0: 49 89 80 08 02 00 00  mov %rax,0x208(%r8)
        7: e9 00 00 00 00  jmp 0xc
        ",
    ),
    (
        "call",
        "
        0: 40 b8 0c 00 00 00  rex mov $0xc,%eax
        6: 40 bb 00 00 20 80  rex mov $0x80200000,%ebx
        c: 40 b9 00 10 00 00  rex mov $0x1000,%ecx
        12: 0f 01 c1  vmcall
        15: f4  hlt
        ",
    ),
    (
        "entropy",
        "
        0: 40 bd 40 00 00 00  rex mov $0x40,%ebp
        6: 49 0f c7 f3  rdrand %r11
        a: 0f 82 16 00 00 00  jb 0x26
        10: 48 83 ed 01  sub $0x1,%rbp
        14: 0f 85 ec ff ff ff  jne 0x6
        1a: 4d 89 98 18 00 00 00  mov %r11,0x18(%r8)
        21: e9 07 00 00 00  jmp 0x2d
        26: 4d 89 98 18 00 00 00  mov %r11,0x18(%r8)
        ",
    ),
    (
        "start",
        "
        0: 41 b8 00 00 10 80  mov $0x80100000,%r8d
        6: 41 b9 00 00 00 09  mov $0x9000000,%r9d
        ",
    ),
];
