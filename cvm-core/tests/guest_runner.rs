//! The runner and the doorbell protocol: scripted exits from a fake vCPU, `launch` on the fake
//! backend, and lowered RV64 programs executed end to end by a small RV64I interpreter.

// Test helpers outside #[test] functions may unwrap and panic too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::VecDeque;

use common::FakeBackend;
use cvm_core::guest::doorbell::{self, Command, ENTROPY_EXHAUSTED};
use cvm_core::guest::{
    launch, lower, Conduit, EntropySource, GuestPlatform, LaunchError, Layout, LowerError,
    NotSupported, PlatformOp, PlatformStep, Program, Report, RunError, Runner, Slot,
};
use cvm_core::{
    Arch, Error, ExitDetail, ExitKind, MemoryKind, Result, Resume, Stats, Vcpu, VmConfig, VmExit,
};

const BELL: u64 = 0x0900_0000;
const DEV: u64 = 0x0a00_0000;

/// Returns scripted exits in order and records the resumes it was given.
struct Script {
    exits: VecDeque<VmExit>,
    resumes: Vec<Resume>,
    pending: Option<VmExit>,
}

impl Script {
    fn new(exits: Vec<VmExit>) -> Self {
        Self {
            exits: exits.into(),
            resumes: vec![],
            pending: None,
        }
    }
}

impl Vcpu for Script {
    fn id(&self) -> u32 {
        0
    }
    fn run(&mut self, resume: Resume) -> Result<VmExit> {
        cvm_core::validate_resume(self.pending.as_ref(), &resume)?;
        self.resumes.push(resume);
        let exit = self.exits.pop_front().unwrap_or(VmExit::Halt);
        self.pending = Some(exit.clone());
        Ok(exit)
    }
    fn pending(&self) -> Option<&VmExit> {
        self.pending.as_ref()
    }
    fn stats(&self) -> Stats {
        Stats::default()
    }
    fn exit_detail(&self) -> Option<ExitDetail> {
        None
    }
}

fn bell(offset: u64, value: u64) -> VmExit {
    VmExit::Mmio {
        gpa: BELL + offset,
        size: 8,
        write: Some(value),
    }
}

fn cmd(c: Command, a: u8, b: u16, d: u16) -> VmExit {
    bell(doorbell::CMD, doorbell::encode(c, a, b, d))
}

#[test]
fn every_report_kind_decodes() {
    let m = [0x1122_3344_5566_7788u64, 0x99aa_bbcc_ddee_ff00, 0x0102_0304];
    let mut exits = vec![
        bell(doorbell::VALUE, 7),
        cmd(Command::Report, 3, 0, 0),
        bell(doorbell::VALUE, 1),
        bell(doorbell::AUX, 2),
        cmd(Command::ExpectFailed, 4, 0, 0),
    ];
    for (w, v) in m.iter().enumerate() {
        exits.push(bell(doorbell::VALUE, *v));
        exits.push(cmd(Command::Measurement, 1, w as u16, 20));
    }
    exits.extend([
        bell(doorbell::VALUE, 5),
        bell(doorbell::AUX, 0),
        cmd(Command::PlatformFailed, PlatformOp::Share as u8, 1, 9),
        bell(doorbell::VALUE, 0x9600_0010),
        bell(doorbell::AUX, 0x8000_1234),
        bell(doorbell::AUX2, 0xdead_0000),
        cmd(Command::Exception, 0, 0, 0),
        cmd(Command::Done, 0, 0, 0),
        VmExit::SystemOff,
    ]);
    let mut vcpu = Script::new(exits);
    let out = Runner::new(&Layout::standard()).run(&mut vcpu).unwrap();
    let mut bytes: Vec<u8> = m.iter().flat_map(|v| v.to_le_bytes()).collect();
    bytes.truncate(20);
    assert_eq!(
        out.reports,
        vec![
            Report::Value {
                slot: Slot(3),
                value: 7
            },
            Report::ExpectFailed {
                slot: Slot(4),
                expected: 2,
                actual: 1
            },
            Report::Measurement { index: 1, bytes },
            Report::PlatformFailed {
                op: PlatformOp::Share,
                step: 1,
                position: 9,
                expected: 0,
                actual: 5
            },
            Report::Exception {
                syndrome: 0x9600_0010,
                pc: 0x8000_1234,
                address: 0xdead_0000
            },
        ]
    );
    assert_eq!(out.value(Slot(3)), Some(7));
    assert_eq!(out.failures().len(), 3);
    assert!(out.done && out.powered_off && !out.passed());
    assert_eq!(out.exits_of(ExitKind::MmioWrite), 2 + 3 + 3 * 2 + 3 + 4 + 1);
    assert_eq!(out.exits_of(ExitKind::SystemOff), 1);
    assert!(vcpu.resumes.iter().all(|r| *r == Resume::Done));
}

#[test]
fn devices_conversions_host_calls_and_entropy_are_answered() {
    let exits = vec![
        VmExit::Mmio {
            gpa: DEV + 8,
            size: 2,
            write: None,
        },
        VmExit::Mmio {
            gpa: DEV + 0x10,
            size: 1,
            write: Some(0x1ff),
        },
        VmExit::ConvertMemory {
            gpa: 0x8020_0000,
            size: 0x1000,
            to_private: false,
        },
        VmExit::HostCall {
            nr: 0x42,
            args: [1, 2, 3, 4, 5, 6],
        },
        VmExit::SysReg {
            reg: 0x015,
            write: Some(0),
            write_mask: u64::MAX,
        },
        VmExit::SysReg {
            reg: 0x5920,
            write: None,
            write_mask: 0,
        },
        VmExit::Halt,
        VmExit::Interrupted,
        VmExit::SystemOff,
    ];
    let mut vcpu = Script::new(exits);
    let mut runner = Runner::new(&Layout::standard());
    runner
        .device_read(DEV + 8, 0x1122_3344_5566_7788)
        .entropy(0xabcd_1234);
    let out = runner.run(&mut vcpu).unwrap();
    assert_eq!(
        vcpu.resumes,
        vec![
            Resume::Done,
            Resume::MmioRead(0x7788),
            Resume::Done,
            Resume::Conversion(true),
            Resume::HostCall([0x42, 0]),
            Resume::SysReg(0x8000_1234),
            Resume::SysReg(0xabcd_1234),
            Resume::Done,
            Resume::Done,
        ]
    );
    assert_eq!(out.device_writes.len(), 1);
    assert_eq!(
        (out.device_writes[0].size, out.device_writes[0].value),
        (1, 0xff)
    );
    assert!(out.conversions[0].accepted && !out.conversions[0].to_private);
    assert_eq!(out.host_calls[0].ret, [0x42, 0]);
    assert!(!out.done && out.powered_off);

    // Reject conversions, custom host calls.
    let mut vcpu = Script::new(vec![
        VmExit::ConvertMemory {
            gpa: 0,
            size: 0x1000,
            to_private: true,
        },
        VmExit::HostCall {
            nr: 1,
            args: [10, 20, 0, 0, 0, 0],
        },
        VmExit::Reset,
    ]);
    let out = Runner::new(&Layout::standard())
        .accept_conversions(false)
        .host_call_handler(|_, a| [a[0] + a[1], 1])
        .run(&mut vcpu)
        .unwrap();
    assert_eq!(
        vcpu.resumes[1..],
        [Resume::Conversion(false), Resume::HostCall([30, 1])]
    );
    assert!(!out.powered_off);
    assert_eq!(out.end, VmExit::Reset);
}

#[test]
fn misbehaving_guests_are_errors_not_hangs() {
    let run = |exits: Vec<VmExit>| Runner::new(&Layout::standard()).run(&mut Script::new(exits));
    // The script halts forever once it runs out.
    assert!(matches!(
        run(vec![]),
        Err(RunError::ExitBudget {
            last: ExitKind::Halt,
            ..
        })
    ));
    assert!(matches!(
        run(vec![VmExit::Mmio {
            gpa: 0x1000,
            size: 4,
            write: None
        }]),
        Err(RunError::UnexpectedMmio {
            gpa: 0x1000,
            write: false,
            ..
        })
    ));
    assert!(matches!(
        run(vec![VmExit::Mmio {
            gpa: BELL,
            size: 8,
            write: None
        }]),
        Err(RunError::UnexpectedMmio { .. })
    ));
    assert!(matches!(
        run(vec![bell(doorbell::CMD, 0x1234)]),
        Err(RunError::Doorbell(doorbell::DoorbellError::BadCommand(
            0x1234
        )))
    ));
    assert!(matches!(
        run(vec![VmExit::Mmio {
            gpa: BELL,
            size: 4,
            write: Some(1)
        }]),
        Err(RunError::Doorbell(
            doorbell::DoorbellError::BadRegister { .. }
        ))
    ));
    assert!(matches!(
        run(vec![cmd(Command::Measurement, 0, 1, 16)]),
        Err(RunError::Doorbell(
            doorbell::DoorbellError::MeasurementOrder { .. }
        ))
    ));
    assert!(matches!(
        run(vec![VmExit::Pio {
            port: 0x3f8,
            size: 1,
            write: Some(0)
        }]),
        Err(RunError::UnexpectedExit(VmExit::Pio { .. }))
    ));
    let fault = VmExit::Fault {
        pc: 4,
        syndrome: 1,
        insn: None,
        reason: "test".into(),
    };
    let out = run(vec![fault.clone()]).unwrap();
    assert_eq!(out.end, fault);
    assert!(!out.passed());

    let mut r = Runner::new(&Layout::standard());
    r.device_read(0x1234, 1);
    assert!(matches!(
        r.run(&mut Script::new(vec![])),
        Err(RunError::NoDevice(0x1234))
    ));
}

#[test]
fn launch_builds_a_finalized_vm_on_any_backend() {
    let backend = FakeBackend::new(vec![cmd(Command::Done, 0, 0, 0), VmExit::SystemOff]);
    let mut p = Program::new();
    let s = p.mmio_read(DEV, 4, false);
    p.report(s);
    let layout = Layout::standard();
    let mut launched = launch(
        &backend,
        &VmConfig::default(),
        &p,
        &layout,
        Layout::standard_ram(),
    )
    .unwrap();
    assert_eq!(launched.image.arch, Arch::Aarch64);
    assert_eq!(launched.image.entry, 0x8000_0000);
    assert_eq!(
        backend.calls(),
        [
            "add_memory 0x80000000",
            "load 0x80000000 Yes",
            "load 0x80100000 Yes",
            "create_vcpu 0",
            "finalize"
        ]
    );
    assert_eq!(launched.vm.regions()[0].kind, MemoryKind::Private);
    let out = Runner::new(&layout).run(launched.vcpu.as_mut()).unwrap();
    assert!(out.passed());

    // The layout must fit the RAM region.
    let mut bad = layout.clone();
    bad.data = 0x9000_0000;
    let e = launch(
        &backend,
        &VmConfig::default(),
        &p,
        &bad,
        Layout::standard_ram(),
    );
    assert!(matches!(e, Err(LaunchError::Layout(_))));
    let mut bad = layout.clone();
    bad.devices.push((0x8030_0000, 0x1000));
    let e = launch(
        &backend,
        &VmConfig::default(),
        &p,
        &bad,
        Layout::standard_ram(),
    );
    assert!(matches!(e, Err(LaunchError::Layout(_))));

    let skip = LaunchError::Lower(LowerError::NotSupported(NotSupported {
        op: "share",
        platform: "fake",
        reason: "test",
    }));
    assert_eq!(skip.not_supported().map(|n| n.op), Some("share"));
    assert!(LaunchError::Vm(Error::Unsupported("x".into()))
        .not_supported()
        .is_none());
}

// ---------------------------------------------------------------------------------------------
// End to end: lowered RV64 code, executed.

const SRST: u64 = 0x5352_5354;
const RAM: u64 = 0x8000_0000;
const RAM_SIZE: usize = 4 << 20;
/// Loads from here raise a load access fault (scause 5).
const BUS_ERROR: u64 = 0xdead_0000;

/// An SBI-flavoured RV64 platform for the interpreter below; powers off with ecall a7 = `off`.
struct SbiPlatform {
    off: u64,
}

/// An ecall with this a7 is an illegal instruction in the interpreter.
const BROKEN: u64 = 0xbad;

impl GuestPlatform for SbiPlatform {
    fn name(&self) -> &'static str {
        "test-sbi"
    }
    fn arch(&self) -> Arch {
        Arch::Riscv64
    }
    fn share(&self, _: u64, _: u64) -> Result<Vec<PlatformStep>, NotSupported> {
        Err(NotSupported {
            op: "share",
            platform: "test-sbi",
            reason: "not modelled",
        })
    }
    fn unshare(&self, gpa: u64, len: u64) -> Result<Vec<PlatformStep>, NotSupported> {
        self.share(gpa, len)
    }
    fn read_measurement(
        &self,
        _: u8,
        layout: &Layout,
    ) -> Result<(Vec<PlatformStep>, usize), NotSupported> {
        // A "firmware" that left 12 bytes in the platform scratch area.
        let buf = layout.data + 0x800;
        let steps = vec![
            PlatformStep::Store {
                gpa: buf,
                size: 8,
                value: 0x0807_0605_0403_0201,
            },
            PlatformStep::Store {
                gpa: buf + 8,
                size: 4,
                value: 0x0c0b_0a09,
            },
            PlatformStep::LoadResult {
                gpa: buf,
                result: 0,
            },
            PlatformStep::LoadResult {
                gpa: buf + 8,
                result: 1,
            },
        ];
        Ok((steps, 12))
    }
    fn read_entropy(&self) -> Result<Vec<PlatformStep>, NotSupported> {
        Ok(vec![PlatformStep::Entropy(EntropySource::Seed)])
    }
    fn host_call(&self, nr: u64, args: &[u64]) -> Result<Vec<PlatformStep>, NotSupported> {
        let mut regs = vec![(17, nr)];
        regs.extend(args.iter().enumerate().map(|(i, a)| (10 + i as u8, *a)));
        Ok(vec![
            PlatformStep::Call {
                conduit: Conduit::Ecall,
                args: regs,
            },
            // The "SBI error" in a1 must be 0.
            PlatformStep::Expect { reg: 11, value: 0 },
            PlatformStep::Save { reg: 10, result: 0 },
        ])
    }
    fn system_off(&self) -> Vec<PlatformStep> {
        vec![PlatformStep::Call {
            conduit: Conduit::Ecall,
            args: vec![(17, self.off), (16, 0), (10, 0)],
        }]
    }
}

enum Pending {
    None,
    Load { rd: usize, size: u8, signed: bool },
    Next,
    Ecall,
    Csr { rd: usize },
}

/// RV64I + Zicsr, exactly the instructions the lowering emits, with MMIO, ECALL and the seed
/// CSR as exits and traps through `stvec`.
struct Rv {
    x: [u64; 32],
    pc: u64,
    ram: Vec<u8>,
    stvec: u64,
    csrs: [u64; 3], // sepc, scause, stval
    pending: Pending,
    /// Answer the seed CSR in "firmware" with this value instead of exiting.
    firmware_seed: Option<u64>,
    last: Option<VmExit>,
}

impl Rv {
    fn new(code: &[u8], entry: u64) -> Self {
        let mut ram = vec![0; RAM_SIZE];
        ram[..code.len()].copy_from_slice(code);
        Self {
            x: [0; 32],
            pc: entry,
            ram,
            stvec: 0,
            csrs: [0; 3],
            pending: Pending::None,
            firmware_seed: None,
            last: None,
        }
    }

    fn ram_index(&self, addr: u64, size: u8) -> Option<usize> {
        let off = addr.checked_sub(RAM)?;
        (off + u64::from(size) <= RAM_SIZE as u64).then_some(off as usize)
    }

    fn set(&mut self, rd: usize, v: u64) {
        if rd != 0 {
            self.x[rd] = v;
        }
    }

    fn trap(&mut self, cause: u64, tval: u64) {
        self.csrs = [self.pc, cause, tval];
        self.pc = self.stvec;
    }

    fn extend(v: u64, size: u8, signed: bool) -> u64 {
        if signed {
            cvm_core::sign_extend(v, size)
        } else {
            cvm_core::mask_to_size(v, size)
        }
    }

    fn step(&mut self) -> Option<VmExit> {
        let Some(i) = self.ram_index(self.pc, 4) else {
            return Some(VmExit::Fault {
                pc: self.pc,
                syndrome: 1,
                insn: None,
                reason: "fetch outside RAM".into(),
            });
        };
        let insn = u32::from_le_bytes(self.ram[i..i + 4].try_into().unwrap());
        let rd = ((insn >> 7) & 31) as usize;
        let rs1 = ((insn >> 15) & 31) as usize;
        let rs2 = ((insn >> 20) & 31) as usize;
        let f3 = (insn >> 12) & 7;
        let imm_i = ((insn as i32) >> 20) as i64 as u64;
        let imm_s =
            ((((insn & 0xfe00_0000) as i32) >> 20) as i64 as u64) | u64::from((insn >> 7) & 31);
        let a = self.x[rs1];
        let mut next = self.pc.wrapping_add(4);
        match insn & 0x7f {
            0x37 => self.set(rd, (insn & 0xffff_f000) as i32 as i64 as u64),
            0x13 => match f3 {
                0 => self.set(rd, a.wrapping_add(imm_i)),
                1 => self.set(rd, a << (imm_i & 63)),
                5 => self.set(rd, a >> (imm_i & 63)),
                _ => return self.illegal(insn),
            },
            0x03 => {
                let addr = a.wrapping_add(imm_i);
                let (size, signed) = match f3 {
                    0 => (1, true),
                    1 => (2, true),
                    2 => (4, true),
                    3 => (8, false),
                    4 => (1, false),
                    5 => (2, false),
                    6 => (4, false),
                    _ => return self.illegal(insn),
                };
                if addr == BUS_ERROR {
                    self.trap(5, addr);
                    return None;
                }
                match self.ram_index(addr, size) {
                    Some(j) => {
                        let mut b = [0u8; 8];
                        b[..usize::from(size)].copy_from_slice(&self.ram[j..j + usize::from(size)]);
                        self.set(rd, Self::extend(u64::from_le_bytes(b), size, signed));
                    }
                    None => {
                        self.pending = Pending::Load { rd, size, signed };
                        return Some(VmExit::Mmio {
                            gpa: addr,
                            size,
                            write: None,
                        });
                    }
                }
            }
            0x23 => {
                let addr = a.wrapping_add(imm_s);
                let size = 1u8 << f3;
                let v = cvm_core::mask_to_size(self.x[rs2], size);
                match self.ram_index(addr, size) {
                    Some(j) => self.ram[j..j + usize::from(size)]
                        .copy_from_slice(&v.to_le_bytes()[..usize::from(size)]),
                    None => {
                        self.pending = Pending::Next;
                        return Some(VmExit::Mmio {
                            gpa: addr,
                            size,
                            write: Some(v),
                        });
                    }
                }
            }
            0x63 => {
                let imm = (((insn as i32) >> 31) as i64 as u64) << 12
                    | u64::from((insn >> 7) & 1) << 11
                    | u64::from((insn >> 25) & 0x3f) << 5
                    | u64::from((insn >> 8) & 0xf) << 1;
                let taken = match f3 {
                    0 => a == self.x[rs2],
                    1 => a != self.x[rs2],
                    _ => return self.illegal(insn),
                };
                if taken {
                    next = self.pc.wrapping_add(imm);
                }
            }
            0x6f => {
                let imm = (((insn as i32) >> 31) as i64 as u64) << 20
                    | u64::from((insn >> 12) & 0xff) << 12
                    | u64::from((insn >> 20) & 1) << 11
                    | u64::from((insn >> 21) & 0x3ff) << 1;
                self.set(rd, next);
                next = self.pc.wrapping_add(imm);
            }
            0x73 if insn == 0x73 && self.x[17] == BROKEN => return self.illegal(insn),
            0x73 if insn == 0x73 => {
                self.pending = Pending::Ecall;
                let x = self.x;
                return Some(if x[17] == SRST {
                    VmExit::SystemOff
                } else {
                    VmExit::HostCall {
                        nr: x[17],
                        args: [x[10], x[11], x[12], x[13], x[14], x[15]],
                    }
                });
            }
            0x73 if f3 == 1 || f3 == 2 => {
                let csr = insn >> 20;
                let old = match csr {
                    0x015 => match self.firmware_seed {
                        Some(v) => v,
                        None => {
                            self.pending = Pending::Csr { rd };
                            return Some(VmExit::SysReg {
                                reg: 0x015,
                                write: Some(a),
                                write_mask: u64::MAX,
                            });
                        }
                    },
                    0x105 => self.stvec,
                    0x141..=0x143 => self.csrs[(csr - 0x141) as usize],
                    _ => return self.illegal(insn),
                };
                if f3 == 1 && csr == 0x105 {
                    self.stvec = a;
                }
                self.set(rd, old);
            }
            _ => return self.illegal(insn),
        }
        self.pc = next;
        None
    }

    fn illegal(&mut self, insn: u32) -> Option<VmExit> {
        self.trap(2, u64::from(insn));
        None
    }
}

impl Vcpu for Rv {
    fn id(&self) -> u32 {
        0
    }
    fn run(&mut self, resume: Resume) -> Result<VmExit> {
        match (std::mem::replace(&mut self.pending, Pending::None), resume) {
            (Pending::Load { rd, size, signed }, Resume::MmioRead(v)) => {
                self.set(rd, Self::extend(v, size, signed));
                self.pc += 4;
            }
            (Pending::Csr { rd }, Resume::SysReg(v)) => {
                self.set(rd, v);
                self.pc += 4;
            }
            (Pending::Ecall, Resume::HostCall([r0, r1])) => {
                self.x[10] = r0;
                self.x[11] = r1;
                self.pc += 4;
            }
            (Pending::Next, Resume::Done) => self.pc += 4,
            (Pending::None, Resume::Done) => {}
            (_, r) => return Err(Error::InvalidArgument(format!("unexpected {r:?}"))),
        }
        for _ in 0..1_000_000 {
            if let Some(exit) = self.step() {
                self.last = Some(exit.clone());
                return Ok(exit);
            }
        }
        Err(Error::InvalidArgument("guest spins without exiting".into()))
    }
    fn pending(&self) -> Option<&VmExit> {
        self.last.as_ref()
    }
    fn stats(&self) -> Stats {
        Stats::default()
    }
    fn exit_detail(&self) -> Option<ExitDetail> {
        None
    }
}

fn try_execute(
    p: &Program,
    runner: &mut Runner,
    seed: Option<u64>,
    off: u64,
) -> std::result::Result<cvm_core::guest::RunOutcome, RunError> {
    let layout = Layout::standard();
    let image = lower(p, &SbiPlatform { off }, &layout).unwrap();
    let mut cpu = Rv::new(&image.code, image.entry);
    cpu.firmware_seed = seed;
    runner.run(&mut cpu)
}

fn execute(p: &Program, runner: &mut Runner, seed: Option<u64>) -> cvm_core::guest::RunOutcome {
    try_execute(p, runner, seed, SRST).unwrap()
}

#[test]
fn lowered_rv64_program_runs_end_to_end() {
    let mut p = Program::new();
    p.mmio_write(DEV, 4, 0xdead_beef);
    let byte = p.mmio_read(DEV + 8, 1, true);
    p.expect(byte, 0xffff_ffff_ffff_ff80).report(byte);
    let half = p.mmio_read(DEV + 8, 2, false);
    p.report(half);
    p.mem_write(0x8010_0900, 8, 0x0123_4567_89ab_cdef);
    let mem = p.mem_read(0x8010_0900, 4);
    p.expect(mem, 0x89ab_cdef);
    p.repeat(3, |b| {
        b.repeat(2, |c| {
            c.mmio_write(DEV + 0x10, 1, 0x11);
        });
    });
    let call = p.host_call(0x42, &[1, 2]);
    p.expect(call, 0x42);
    let rnd = p.read_entropy();
    p.report(rnd);
    p.read_measurement(4);
    p.expect(half, 7); // fails: reported, and the program carries on
    let mut runner = Runner::new(&Layout::standard());
    runner
        .device_read(DEV + 8, 0x1234_5680)
        .entropy(0x9999_5eed);
    let out = execute(&p, &mut runner, None);

    assert_eq!(
        out.reports,
        vec![
            Report::Value {
                slot: byte,
                value: 0xffff_ffff_ffff_ff80
            },
            Report::Value {
                slot: half,
                value: 0x5680
            },
            Report::Value {
                slot: rnd,
                value: 0x5eed
            },
            Report::Measurement {
                index: 4,
                bytes: (1..=12).collect()
            },
            Report::ExpectFailed {
                slot: half,
                expected: 7,
                actual: 0x5680
            },
        ]
    );
    assert!(out.done && out.powered_off);
    let writes: Vec<_> = out
        .device_writes
        .iter()
        .map(|w| (w.gpa, w.size, w.value))
        .collect();
    let mut want = vec![(DEV, 4, 0xdead_beef)];
    want.extend([(DEV + 0x10, 1, 0x11); 6]);
    assert_eq!(writes, want);
    assert_eq!(out.host_calls.len(), 1);
    assert_eq!(out.host_calls[0].args[..2], [1, 2]);
    // Doorbell cost: 3 reports × 2 + 2 measurement words × 2 + expect failure 3 + done 1;
    // plus 7 device writes.
    assert_eq!(out.exits_of(ExitKind::MmioWrite), 6 + 4 + 3 + 1 + 7);
    assert_eq!(out.exits_of(ExitKind::MmioRead), 2);
    assert_eq!(out.exits_of(ExitKind::SysReg), 1);
}

#[test]
fn rv64_exception_is_reported_once_and_powers_off() {
    let mut p = Program::new();
    let s = p.mem_read(BUS_ERROR, 8);
    p.report(s);
    let out = execute(&p, &mut Runner::new(&Layout::standard()), None);
    match out.reports.as_slice() {
        [Report::Exception {
            syndrome: 5,
            pc,
            address: BUS_ERROR,
        }] => assert!((RAM..RAM + 0x1000).contains(pc)),
        other => panic!("{other:?}"),
    }
    assert!(!out.done && out.powered_off && !out.passed());
}

#[test]
fn rv64_entropy_that_never_arrives_is_a_platform_failure() {
    let mut p = Program::new();
    let s = p.read_entropy();
    p.report(s);
    // Firmware answers OPST = WAIT forever.
    let out = execute(&p, &mut Runner::new(&Layout::standard()), Some(0x4000_0000));
    assert_eq!(
        out.reports[0],
        Report::PlatformFailed {
            op: PlatformOp::ReadEntropy,
            step: 0,
            position: 0,
            expected: ENTROPY_EXHAUSTED,
            actual: 0x4000_0000
        }
    );
    assert!(out.done);
}

#[test]
fn rv64_host_call_error_is_a_platform_failure() {
    let mut p = Program::new();
    p.host_call(7, &[]);
    let mut runner = Runner::new(&Layout::standard());
    runner.host_call_handler(|nr, _| [nr, u64::MAX - 2]);
    let out = execute(&p, &mut runner, None);
    assert_eq!(
        out.reports,
        vec![Report::PlatformFailed {
            op: PlatformOp::HostCall,
            step: 1,
            position: 0,
            expected: 0,
            actual: u64::MAX - 2
        }]
    );
}

#[test]
fn rv64_power_off_that_faults_ends_in_the_exit_budget_not_a_hang() {
    let mut p = Program::new();
    let s = p.mmio_read(DEV, 4, false);
    p.report(s);
    let mut runner = Runner::new(&Layout::standard());
    runner.exit_budget(200);
    let e = try_execute(&p, &mut runner, None, BROKEN).unwrap_err();
    assert!(
        matches!(
            e,
            RunError::ExitBudget {
                budget: 200,
                last: ExitKind::MmioWrite
            }
        ),
        "{e}"
    );
}
