//! Lowering: validation errors, and proof that every platform-specific instruction comes from
//! the `GuestPlatform` (a fake one here), never from the lowering itself.

// Test helpers outside #[test] functions may unwrap and panic too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cvm_core::guest::{
    lower, Conduit, EntropySource, GuestPlatform, Layout, LowerError, NotSupported, Op,
    PlatformStep, Program, Slot,
};
use cvm_core::Arch;

const ARCHES: [Arch; 3] = [Arch::X86_64, Arch::Aarch64, Arch::Riscv64];
const DEV: u64 = 0x0a00_0000;

/// A platform described entirely by data, so tests can change one thing at a time.
#[derive(Clone)]
struct Fake {
    arch: Arch,
    /// OR-ed into device addresses.
    alias: u64,
    prologue: Vec<PlatformStep>,
    /// Returned by share/unshare/host_call/read_entropy/read_measurement.
    steps: Vec<PlatformStep>,
    measurement_len: usize,
    unsupported: bool,
}

impl Fake {
    fn new(arch: Arch) -> Self {
        Self {
            arch,
            alias: 0,
            prologue: vec![],
            steps: vec![],
            measurement_len: 32,
            unsupported: false,
        }
    }

    fn with_steps(mut self, steps: Vec<PlatformStep>) -> Self {
        self.steps = steps;
        self
    }

    fn answer(&self, op: &'static str) -> Result<Vec<PlatformStep>, NotSupported> {
        if self.unsupported {
            return Err(NotSupported {
                op,
                platform: "fake",
                reason: "test",
            });
        }
        Ok(self.steps.clone())
    }
}

impl GuestPlatform for Fake {
    fn name(&self) -> &'static str {
        "fake"
    }
    fn arch(&self) -> Arch {
        self.arch
    }
    fn device_address(&self, gpa: u64) -> u64 {
        gpa | self.alias
    }
    fn prologue(&self, _: &Layout) -> Vec<PlatformStep> {
        self.prologue.clone()
    }
    fn share(&self, _: u64, _: u64) -> Result<Vec<PlatformStep>, NotSupported> {
        self.answer("share")
    }
    fn unshare(&self, _: u64, _: u64) -> Result<Vec<PlatformStep>, NotSupported> {
        self.answer("unshare")
    }
    fn read_measurement(
        &self,
        _: u8,
        _: &Layout,
    ) -> Result<(Vec<PlatformStep>, usize), NotSupported> {
        Ok((self.answer("read_measurement")?, self.measurement_len))
    }
    fn read_entropy(&self) -> Result<Vec<PlatformStep>, NotSupported> {
        self.answer("read_entropy")
    }
    fn host_call(&self, _: u64, _: &[u64]) -> Result<Vec<PlatformStep>, NotSupported> {
        self.answer("host_call")
    }
    fn system_off(&self) -> Vec<PlatformStep> {
        vec![]
    }
}

fn code(p: &Program, platform: &Fake) -> Vec<u8> {
    lower(p, platform, &Layout::standard()).unwrap().code
}

fn native_call(arch: Arch) -> PlatformStep {
    let conduit = match arch {
        Arch::X86_64 => Conduit::Vmcall,
        Arch::Aarch64 => Conduit::Smc(0x42),
        Arch::Riscv64 => Conduit::Ecall,
    };
    PlatformStep::Call {
        conduit,
        args: vec![(0, 1), (1, 2)],
    }
}

fn native_entropy(arch: Arch) -> EntropySource {
    match arch {
        Arch::X86_64 => EntropySource::Rdrand,
        Arch::Aarch64 => EntropySource::Rndr,
        Arch::Riscv64 => EntropySource::Seed,
    }
}

fn everything() -> Program {
    let mut p = Program::new();
    p.mmio_write(DEV, 1, 0x5a).mmio_write(DEV + 8, 8, u64::MAX);
    for size in [1, 2, 4, 8] {
        let u = p.mmio_read(DEV, size, false);
        let s = p.mmio_read(DEV, size, true);
        p.expect(u, 1).report(s);
    }
    let m = p.mem_read(0x8010_0800, 4);
    p.mem_write(0x8010_0808, 2, 7).report(m);
    p.repeat(3, |b| {
        b.repeat(2, |c| {
            c.mmio_write(DEV, 4, 1);
        });
    });
    p.share(0x8020_0000, 0x1000).unshare(0x8020_0000, 0x1000);
    p.read_measurement(0);
    let e = p.read_entropy();
    let h = p.host_call(9, &[1, 2, 3, 4, 5, 6]);
    p.report(e).report(h);
    p
}

#[test]
fn a_program_using_every_op_lowers_on_every_isa() {
    for arch in ARCHES {
        let steps = vec![
            native_call(arch),
            PlatformStep::Expect { reg: 0, value: 0 },
            PlatformStep::Save { reg: 1, result: 0 },
            PlatformStep::LoadResult {
                gpa: 0x8010_0800,
                result: 3,
            },
            PlatformStep::Entropy(native_entropy(arch)),
            PlatformStep::Store {
                gpa: 0x8010_0800,
                size: 4,
                value: 3,
            },
        ];
        let platform = Fake::new(arch).with_steps(steps);
        let image = lower(&everything(), &platform, &Layout::standard()).unwrap();
        assert_eq!(image.arch, arch);
        assert_eq!(image.entry, Layout::standard().code);
        assert_eq!(image.layout, Layout::standard());
        if arch != Arch::X86_64 {
            assert_eq!(image.code.len() % 4, 0);
        }
        // Deterministic.
        assert_eq!(
            image,
            lower(&everything(), &platform, &Layout::standard()).unwrap()
        );
    }
}

#[test]
fn device_alias_applies_to_mmio_ops_only() {
    const ALIAS: u64 = 1 << 47;
    for arch in ARCHES {
        let aliased = Fake {
            alias: ALIAS,
            ..Fake::new(arch)
        };
        // The doorbell is a device too: make the identity platform's layout point at the
        // aliased doorbell so only the ops under test differ.
        let mut layout = Layout::standard();
        let identity = Fake::new(arch);
        let mut mmio = Program::new();
        mmio.mmio_write(DEV, 4, 1);
        let r = mmio.mmio_read(DEV + 4, 2, true);
        mmio.report(r);
        let mut expect = Program::new();
        expect.mmio_write(DEV | ALIAS, 4, 1);
        let r = expect.mmio_read((DEV + 4) | ALIAS, 2, true);
        expect.report(r);
        let got = lower(&mmio, &aliased, &layout).unwrap().code;
        layout.doorbell |= ALIAS;
        let want = lower(&expect, &identity, &layout).unwrap().code;
        assert_eq!(got, want, "{arch:?}: MMIO ops use the platform's alias");

        // RAM ops are never aliased.
        let mut ram = Program::new();
        ram.mem_write(0x8010_0800, 8, 1);
        let r = ram.mem_read(0x8010_0800, 8);
        ram.report(r);
        let got = lower(&ram, &aliased, &Layout::standard()).unwrap().code;
        let want = lower(&ram, &identity, &layout).unwrap().code;
        assert_eq!(got, want, "{arch:?}: RAM ops are not aliased");
    }
}

#[test]
fn prologue_and_op_steps_are_emitted_exactly_as_the_platform_gives_them() {
    for arch in ARCHES {
        let store = PlatformStep::Store {
            gpa: 0x8010_0900,
            size: 8,
            value: 0x1234,
        };
        // A prologue store is the same code as the program's own first RAM store.
        let with_prologue = Fake {
            prologue: vec![store.clone()],
            ..Fake::new(arch)
        };
        let mut empty = Program::new();
        empty.system_off();
        let mut first = Program::new();
        first.mem_write(0x8010_0900, 8, 0x1234).system_off();
        assert_eq!(code(&empty, &with_prologue), code(&first, &Fake::new(arch)));

        // A host call whose steps are one store is that store.
        let platform = Fake::new(arch).with_steps(vec![store]);
        let mut call = Program::new();
        call.host_call(1, &[2]);
        assert_eq!(code(&call, &platform), code(&first, &Fake::new(arch)));
    }
}

/// The AArch64 conduit instructions (SMC/HVC) never appear unless the platform asks.
#[test]
fn conduits_come_only_from_the_platform() {
    let is_conduit = |w: &u32| w & 0xffe0_001c == 0xd400_0000 && w & 3 != 0;
    let words = |code: Vec<u8>| -> Vec<u32> {
        code.chunks(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let silent = Fake::new(Arch::Aarch64);
    let image = words(code(&everything(), &silent));
    assert!(!image.iter().any(is_conduit));
    let calls = Fake::new(Arch::Aarch64).with_steps(vec![native_call(Arch::Aarch64)]);
    let image = words(code(&everything(), &calls));
    // share, unshare, measurement, entropy, host call: one SMC #0x42 each.
    assert_eq!(image.iter().filter(|w| **w == 0xd400_0843).count(), 5);
}

#[test]
fn system_off_is_appended_when_missing_and_repeat_zero_is_empty() {
    for arch in ARCHES {
        let platform = Fake::new(arch);
        let mut a = Program::new();
        let s = a.mmio_read(DEV, 4, false);
        a.report(s);
        let mut b = a.clone();
        b.system_off();
        assert_eq!(code(&a, &platform), code(&b, &platform));

        let mut c = a.clone();
        c.repeat(0, |body| {
            body.mmio_write(DEV, 4, 1);
        });
        assert_eq!(code(&c, &platform), code(&a, &platform));
    }
}

fn err(p: &Program, platform: &Fake) -> LowerError {
    lower(p, platform, &Layout::standard()).unwrap_err()
}

#[test]
fn bad_programs_are_typed_errors() {
    for arch in ARCHES {
        let f = Fake::new(arch);
        let mut p = Program::new();
        p.mmio_write(DEV, 3, 0);
        assert_eq!(err(&p, &f), LowerError::BadSize(3));

        let mut p = Program::new();
        p.mem_read(0x8010_0002, 4);
        assert_eq!(
            err(&p, &f),
            LowerError::Misaligned {
                addr: 0x8010_0002,
                align: 4
            }
        );

        let mut p = Program::new();
        p.share(0x8010_0800, 0x1000);
        assert!(matches!(err(&p, &f), LowerError::Misaligned { .. }));

        // A program's slots are those its ops name (programs may come from JSON), so only a
        // slot beyond the data page's slot area is refused.
        let mut p = Program::new();
        p.push(Op::Report { slot: Slot(64) });
        assert_eq!(
            err(&p, &f),
            LowerError::BadSlot {
                slot: 64,
                slots: 65
            }
        );

        let mut p = Program::new();
        for _ in 0..70 {
            p.mem_read(0x8010_0000, 8);
        }
        assert_eq!(p.slots(), 70);
        assert_eq!(
            err(&p, &f),
            LowerError::BadSlot {
                slot: 64,
                slots: 70
            }
        );

        let mut p = Program::new();
        p.host_call(1, &[0; 7]);
        assert_eq!(err(&p, &f), LowerError::TooManyArgs(7));

        let mut p = Program::new();
        p.repeat(2, |a| {
            a.repeat(2, |b| {
                b.repeat(2, |c| {
                    c.repeat(2, |d| {
                        d.repeat(2, |e| {
                            e.system_off();
                        });
                    });
                });
            });
        });
        assert_eq!(err(&p, &f), LowerError::TooDeep(5));

        let ok = Program::new();
        let mut layout = Layout::standard();
        layout.code += 0x10;
        assert!(matches!(
            lower(&ok, &f, &layout),
            Err(LowerError::Layout(_))
        ));
    }
}

#[test]
fn bad_platform_answers_are_typed_errors() {
    for arch in ARCHES {
        let mut p = Program::new();
        p.read_entropy();

        let unsupported = Fake {
            unsupported: true,
            ..Fake::new(arch)
        };
        match err(&p, &unsupported) {
            LowerError::NotSupported(n) => {
                assert_eq!((n.op, n.platform), ("read_entropy", "fake"))
            }
            other => panic!("{other:?}"),
        }

        let reserved = match arch {
            Arch::X86_64 => 4, // rsp
            Arch::Aarch64 => 19,
            Arch::Riscv64 => 18,
        };
        let f = Fake::new(arch).with_steps(vec![PlatformStep::Save {
            reg: reserved,
            result: 0,
        }]);
        assert!(matches!(
            err(&p, &f),
            LowerError::BadRegister { reg, arch: a, .. } if reg == reserved && a == arch
        ));

        let foreign = match arch {
            Arch::Riscv64 => Conduit::Smc(0),
            _ => Conduit::Ecall,
        };
        let f = Fake::new(arch).with_steps(vec![PlatformStep::Call {
            conduit: foreign,
            args: vec![],
        }]);
        assert!(matches!(err(&p, &f), LowerError::WrongIsa { .. }));

        let foreign = match arch {
            Arch::Aarch64 => EntropySource::Seed,
            _ => EntropySource::Rndr,
        };
        let f = Fake::new(arch).with_steps(vec![PlatformStep::Entropy(foreign)]);
        assert!(matches!(err(&p, &f), LowerError::WrongIsa { .. }));

        let f = Fake::new(arch).with_steps(vec![PlatformStep::Save { reg: 1, result: 32 }]);
        assert_eq!(err(&p, &f), LowerError::BadResultWord(32));

        let mut m = Program::new();
        m.read_measurement(1);
        let f = Fake {
            measurement_len: 300,
            ..Fake::new(arch)
        };
        assert_eq!(err(&m, &f), LowerError::MeasurementTooLong(300));
    }
}
