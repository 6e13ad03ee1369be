//! Lowering a [`Program`] to machine code for one ISA.
//!
//! [`lower`] validates the program, then walks it and drives an ISA [`Emitter`]
//! ([`super::x86_64`], [`super::aarch64`], [`super::riscv64`]). Everything platform-specific
//! comes from the [`GuestPlatform`]: the device alias for MMIO ops (never for RAM ops), the
//! prologue, and the [`PlatformStep`]s of share/unshare/measurement/entropy/host call/power off.
//!
//! The generated program, in order:
//!
//! 1. ISA start: load the data-page and doorbell base registers, install the exception vector
//!    (AArch64 `VBAR_EL1`, RV64 `stvec`; none on x86-64), whose handler reports
//!    [`Command::Exception`] once and powers off;
//! 2. the platform prologue;
//! 3. the ops; `SystemOff` is appended if the program does not end with one. `SystemOff`
//!    reports [`Command::Done`] and jumps to
//! 4. the power-off block: the platform's `system_off` steps, then a jump back to them (so a
//!    power-off that returns keeps exiting to the host instead of running off the end).
//!
//! State lives in registers and the data page only (no stack). The data page
//! ([`Layout::data`]) holds:
//!
//! | offset | contents |
//! |---|---|
//! | [`DATA_SLOTS`] (0x000) | slot `n` at `8 n` (64 slots) |
//! | [`DATA_RESULTS`] (0x200) | platform result word `w` at `0x200 + 8 w` ([`RESULT_WORDS`] words) |
//! | [`DATA_EXCEPTION_FLAG`] (0x300) | non-zero once the exception handler ran |
//! | [`DATA_PLATFORM_SCRATCH`] (0x800–0xfff) | free for the platform (buffers for measurement reads, host-call blocks) |
//!
//! Result word 0 of an op that has a slot (`ReadEntropy`, `HostCall`) is the slot itself.

use dynasmrt::DynamicLabel;

use super::doorbell::{self, Command, PlatformOp};
use super::platform::{Conduit, EntropySource, GuestPlatform, Layout, NotSupported, PlatformStep};
use super::program::{Op, Program, Slot};
use crate::config::Arch;

/// Offset of the slots in the data page.
pub const DATA_SLOTS: u16 = 0x000;
/// Offset of the platform result words in the data page.
pub const DATA_RESULTS: u16 = 0x200;
/// Number of platform result words.
pub const RESULT_WORDS: u8 = 32;
/// Offset of the exception handler's "already ran" flag in the data page.
pub const DATA_EXCEPTION_FLAG: u16 = 0x300;
/// Start of the data-page bytes reserved for the platform's own buffers.
pub const DATA_PLATFORM_SCRATCH: u16 = 0x800;
/// Deepest allowed nesting of `Repeat`.
pub const MAX_REPEAT_DEPTH: usize = 4;
/// Most host-call arguments.
pub const MAX_HOST_CALL_ARGS: usize = 6;

/// Machine code for one program, ready to load at `layout.code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestImage {
    /// The code, to be loaded at `layout.code`.
    pub code: Vec<u8>,
    /// Entry point (guest-physical).
    pub entry: u64,
    /// The layout it was lowered for.
    pub layout: Layout,
    /// The ISA.
    pub arch: Arch,
}

/// Why a program could not be lowered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LowerError {
    /// The platform cannot express an op; callers report the test as skipped.
    #[error(transparent)]
    NotSupported(#[from] NotSupported),
    /// An access size outside {1, 2, 4, 8}.
    #[error("access size {0} (must be 1, 2, 4 or 8)")]
    BadSize(u8),
    /// An address not aligned to its access size (or a share range not 4 KiB aligned).
    #[error("address {addr:#x} is not aligned to {align} bytes")]
    Misaligned {
        /// The address.
        addr: u64,
        /// The required alignment.
        align: u64,
    },
    /// A slot the program did not allocate.
    #[error("slot {slot} is not allocated (the program has {slots} slots, at most {max})", max = Program::MAX_SLOTS)]
    BadSlot {
        /// The slot.
        slot: u8,
        /// `Program::slots()`.
        slots: u8,
    },
    /// More than [`MAX_HOST_CALL_ARGS`] host-call arguments.
    #[error("{0} host-call arguments (at most 6)")]
    TooManyArgs(usize),
    /// `Repeat` nested deeper than [`MAX_REPEAT_DEPTH`].
    #[error("Repeat nested {0} deep (at most 4)")]
    TooDeep(usize),
    /// A layout the lowering cannot use.
    #[error("bad layout: {0}")]
    Layout(&'static str),
    /// A platform step names a register the lowering reserves or the ISA does not have.
    #[error("platform {platform} uses register {reg}, which {arch:?} lowering does not allow")]
    BadRegister {
        /// The platform.
        platform: &'static str,
        /// The ISA.
        arch: Arch,
        /// The register number.
        reg: u8,
    },
    /// A conduit or entropy source of another ISA.
    #[error("platform {platform} asks for {what}, which {arch:?} does not have")]
    WrongIsa {
        /// The platform.
        platform: &'static str,
        /// The ISA.
        arch: Arch,
        /// The conduit or entropy source.
        what: String,
    },
    /// A platform step names a result word beyond the result area.
    #[error("platform result word {0} (at most {max})", max = RESULT_WORDS - 1)]
    BadResultWord(u8),
    /// A measurement register longer than the result area.
    #[error("measurement register of {0} bytes (at most 256)")]
    MeasurementTooLong(usize),
    /// The assembler refused the code (e.g. a branch out of range in a huge program).
    #[error("assembler: {0}")]
    Assemble(String),
}

/// A value an [`Emitter`] moves to a doorbell register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Src {
    /// An immediate.
    Imm(u64),
    /// The 8 bytes at this data-page offset.
    Data(u16),
    /// A platform register (ISA numbering, already checked by `platform_reg_ok`).
    Reg(u8),
}

/// What one ISA implements. Every method emits straight-line code except the explicit branch
/// and loop helpers; all use the ISA's reserved registers only, and never a stack.
pub(crate) trait Emitter {
    /// Whether platform steps may name register `reg`.
    fn platform_reg_ok(&self, reg: u8) -> bool;
    /// A fresh label.
    fn new_label(&mut self) -> DynamicLabel;
    /// Binds `label` here.
    fn bind(&mut self, label: DynamicLabel);
    /// Unconditional jump.
    fn jump(&mut self, label: DynamicLabel);
    /// Program start: base registers, exception vector (its handler reports once, then jumps
    /// to `power_off`).
    fn start(&mut self, layout: &Layout, doorbell: u64, power_off: DynamicLabel);
    /// Stores the low `size` bytes of `value` at `addr` (one store instruction).
    fn store(&mut self, addr: u64, size: u8, value: u64);
    /// Loads `size` bytes at `addr` (one load instruction), extends, saves at data offset `dest`.
    fn load(&mut self, addr: u64, size: u8, signed: bool, dest: u16);
    /// Writes `src` to doorbell register `offset` (one 8-byte store).
    fn doorbell(&mut self, offset: u64, src: Src);
    /// Jumps to `target` if `src` (`Data` or `Reg`) equals `value`.
    fn branch_eq(&mut self, src: Src, value: u64, target: DynamicLabel);
    /// Starts a loop of `count` (> 0) iterations at nesting `depth`; returns its top label.
    fn repeat_start(&mut self, depth: usize, count: u32) -> DynamicLabel;
    /// Ends the loop started at `top`.
    fn repeat_end(&mut self, depth: usize, top: DynamicLabel);
    /// Loads the argument registers and leaves through `conduit`.
    fn call(&mut self, conduit: Conduit, args: &[(u8, u64)]) -> Result<(), String>;
    /// Saves platform register `reg` at data offset `dest`.
    fn save(&mut self, reg: u8, dest: u16);
    /// Entropy loop: on success the value is at `dest`; after the retries the last raw reading
    /// is at `dest` and control goes to `fail`.
    fn entropy(
        &mut self,
        source: EntropySource,
        dest: u16,
        fail: DynamicLabel,
    ) -> Result<(), String>;
    /// The finished code.
    fn finish(self: Box<Self>) -> Result<Vec<u8>, LowerError>;
}

/// Lowers `program` for `platform` at the addresses in `layout`.
pub fn lower(
    program: &Program,
    platform: &dyn GuestPlatform,
    layout: &Layout,
) -> Result<GuestImage, LowerError> {
    validate_layout(layout)?;
    validate_ops(&program.ops, program.slots(), 0)?;
    let arch = platform.arch();
    let mut emitter: Box<dyn Emitter> = match arch {
        Arch::X86_64 => Box::new(super::x86_64::X64::new(layout.code)),
        Arch::Aarch64 => Box::new(super::aarch64::A64::new(layout.code)),
        Arch::Riscv64 => Box::new(super::riscv64::Rv64::new(layout.code)),
    };
    let power_off = emitter.new_label();
    let mut lw = Lowering {
        e: emitter,
        platform,
        layout,
        arch,
        position: 0,
        power_off,
    };
    let doorbell = platform.device_address(layout.doorbell);
    lw.e.start(layout, doorbell, power_off);
    let prologue = platform.prologue(layout);
    lw.steps(&prologue, PlatformOp::Prologue, doorbell::PROLOGUE, None)?;
    lw.ops(&program.ops, 0)?;
    if !matches!(program.ops.last(), Some(Op::SystemOff | Op::StopVcpu)) {
        lw.op(&Op::SystemOff, 0)?;
    }
    lw.e.bind(power_off);
    let off = platform.system_off();
    lw.steps(&off, PlatformOp::SystemOff, lw.position, None)?;
    lw.e.jump(power_off);
    let code = lw.e.finish()?;
    Ok(GuestImage {
        code,
        entry: layout.code,
        layout: layout.clone(),
        arch,
    })
}

fn validate_layout(layout: &Layout) -> Result<(), LowerError> {
    if layout.code % 4096 != 0 {
        return Err(LowerError::Layout("code must be 4 KiB aligned"));
    }
    if layout.data % 4096 != 0 {
        return Err(LowerError::Layout("data must be 4 KiB aligned"));
    }
    if layout.doorbell % 4096 != 0 {
        return Err(LowerError::Layout("the doorbell must be 4 KiB aligned"));
    }
    Ok(())
}

fn check_size(size: u8) -> Result<(), LowerError> {
    match size {
        1 | 2 | 4 | 8 => Ok(()),
        _ => Err(LowerError::BadSize(size)),
    }
}

fn check_aligned(addr: u64, align: u64) -> Result<(), LowerError> {
    if addr % align == 0 {
        Ok(())
    } else {
        Err(LowerError::Misaligned { addr, align })
    }
}

fn check_access(addr: u64, size: u8) -> Result<(), LowerError> {
    check_size(size)?;
    check_aligned(addr, u64::from(size))
}

fn check_slot(slot: Slot, slots: u8) -> Result<(), LowerError> {
    if slot.0 < slots && slot.0 < Program::MAX_SLOTS {
        Ok(())
    } else {
        Err(LowerError::BadSlot {
            slot: slot.0,
            slots,
        })
    }
}

fn validate_ops(ops: &[Op], slots: u8, depth: usize) -> Result<(), LowerError> {
    for op in ops {
        match op {
            Op::MmioWrite { addr, size, .. } => check_access(*addr, *size)?,
            Op::MemWrite { gpa, size, .. } => check_access(*gpa, *size)?,
            Op::MmioRead {
                addr, size, slot, ..
            } => {
                check_access(*addr, *size)?;
                check_slot(*slot, slots)?;
            }
            Op::MemRead { gpa, size, slot } => {
                check_access(*gpa, *size)?;
                check_slot(*slot, slots)?;
            }
            Op::Expect { slot, .. } | Op::Report { slot } | Op::ReadEntropy { slot } => {
                check_slot(*slot, slots)?
            }
            Op::Repeat { body, .. } => {
                if depth + 1 > MAX_REPEAT_DEPTH {
                    return Err(LowerError::TooDeep(depth + 1));
                }
                validate_ops(body, slots, depth + 1)?;
            }
            Op::Share { gpa, len } | Op::Unshare { gpa, len } => {
                check_aligned(*gpa, 4096)?;
                check_aligned(*len, 4096)?;
            }
            Op::HostCall { args, slot, .. } => {
                if args.len() > MAX_HOST_CALL_ARGS {
                    return Err(LowerError::TooManyArgs(args.len()));
                }
                check_slot(*slot, slots)?;
            }
            Op::ReadMeasurement { .. } | Op::SystemOff | Op::StartVcpu { .. } | Op::StopVcpu => {}
        }
    }
    Ok(())
}

fn slot_offset(slot: Slot) -> u16 {
    DATA_SLOTS + 8 * u16::from(slot.0)
}

fn result_offset(word: u8) -> u16 {
    DATA_RESULTS + 8 * u16::from(word)
}

struct Lowering<'a> {
    e: Box<dyn Emitter>,
    platform: &'a dyn GuestPlatform,
    layout: &'a Layout,
    arch: Arch,
    /// Pre-order position of the next op.
    position: u16,
    /// The power-off block.
    power_off: DynamicLabel,
}

impl Lowering<'_> {
    fn ops(&mut self, ops: &[Op], depth: usize) -> Result<(), LowerError> {
        ops.iter().try_for_each(|op| self.op(op, depth))
    }

    /// Reports `cmd` with the given operands (VALUE, then AUX/AUX2 if present, then CMD).
    fn report(&mut self, cmd: u64, value: Option<Src>, aux: Option<Src>) {
        if let Some(v) = value {
            self.e.doorbell(doorbell::VALUE, v);
        }
        if let Some(a) = aux {
            self.e.doorbell(doorbell::AUX, a);
        }
        self.e.doorbell(doorbell::CMD, Src::Imm(cmd));
    }

    fn op(&mut self, op: &Op, depth: usize) -> Result<(), LowerError> {
        let position = self.position;
        self.position = self.position.saturating_add(1);
        let p = self.platform;
        match op {
            Op::MmioWrite { addr, size, value } => {
                self.e.store(p.device_address(*addr), *size, *value)
            }
            Op::MmioRead {
                addr,
                size,
                signed,
                slot,
            } => self
                .e
                .load(p.device_address(*addr), *size, *signed, slot_offset(*slot)),
            Op::MemWrite { gpa, size, value } => self.e.store(*gpa, *size, *value),
            Op::MemRead { gpa, size, slot } => self.e.load(*gpa, *size, false, slot_offset(*slot)),
            Op::Expect { slot, value } => {
                let ok = self.e.new_label();
                let at = slot_offset(*slot);
                self.e.branch_eq(Src::Data(at), *value, ok);
                let cmd = doorbell::encode(Command::ExpectFailed, slot.0, 0, 0);
                self.report(cmd, Some(Src::Data(at)), Some(Src::Imm(*value)));
                self.e.bind(ok);
            }
            Op::Report { slot } => {
                let cmd = doorbell::encode(Command::Report, slot.0, 0, 0);
                self.report(cmd, Some(Src::Data(slot_offset(*slot))), None);
            }
            Op::Repeat { count, body } => {
                if *count == 0 {
                    // Nothing runs; the body is still counted for positions.
                    self.position = self.position.saturating_add(count_ops(body));
                } else {
                    let top = self.e.repeat_start(depth, *count);
                    self.ops(body, depth + 1)?;
                    self.e.repeat_end(depth, top);
                }
            }
            Op::Share { gpa, len } => {
                let steps = p.share(*gpa, *len)?;
                self.steps(&steps, PlatformOp::Share, position, None)?;
            }
            Op::Unshare { gpa, len } => {
                let steps = p.unshare(*gpa, *len)?;
                self.steps(&steps, PlatformOp::Unshare, position, None)?;
            }
            Op::ReadMeasurement { index } => {
                let (steps, len) = p.read_measurement(*index, self.layout)?;
                if len > 8 * usize::from(RESULT_WORDS) {
                    return Err(LowerError::MeasurementTooLong(len));
                }
                self.steps(&steps, PlatformOp::ReadMeasurement, position, None)?;
                let words = len.div_ceil(8).max(1);
                for w in 0..words as u8 {
                    let cmd =
                        doorbell::encode(Command::Measurement, *index, u16::from(w), len as u16);
                    self.report(cmd, Some(Src::Data(result_offset(w))), None);
                }
            }
            Op::ReadEntropy { slot } => {
                let steps = p.read_entropy()?;
                self.steps(&steps, PlatformOp::ReadEntropy, position, Some(*slot))?;
            }
            Op::HostCall { nr, args, slot } => {
                let steps = p.host_call(*nr, args)?;
                self.steps(&steps, PlatformOp::HostCall, position, Some(*slot))?;
            }
            Op::StartVcpu { vcpu, entry, arg } => {
                let steps = p.start_vcpu(*vcpu, *entry, *arg)?;
                self.steps(&steps, PlatformOp::StartVcpu, position, None)?;
            }
            Op::StopVcpu => {
                // DONE first, so the runner knows a halt after this is the end, not a wait.
                let steps = p.stop_vcpu()?;
                self.report(doorbell::encode(Command::Done, 0, 0, 0), None, None);
                let again = self.e.new_label();
                self.e.bind(again);
                self.steps(&steps, PlatformOp::StopVcpu, position, None)?;
                self.e.jump(again);
            }
            Op::SystemOff => {
                self.report(doorbell::encode(Command::Done, 0, 0, 0), None, None);
                // The power-off block is emitted once, at the end; `lower` binds it.
                self.e.jump(self.power_off);
            }
        }
        Ok(())
    }

    fn check_reg(&self, reg: u8) -> Result<(), LowerError> {
        if self.e.platform_reg_ok(reg) {
            Ok(())
        } else {
            Err(LowerError::BadRegister {
                platform: self.platform.name(),
                arch: self.arch,
                reg,
            })
        }
    }

    fn wrong_isa(&self, what: String) -> LowerError {
        LowerError::WrongIsa {
            platform: self.platform.name(),
            arch: self.arch,
            what,
        }
    }

    /// Emits platform steps for op `what` at `position`; result word 0 is `slot` if given.
    fn steps(
        &mut self,
        steps: &[PlatformStep],
        what: PlatformOp,
        position: u16,
        slot: Option<Slot>,
    ) -> Result<(), LowerError> {
        let dest = |word: u8| -> Result<u16, LowerError> {
            match (word, slot) {
                (0, Some(s)) => Ok(slot_offset(s)),
                (w, _) if w < RESULT_WORDS => Ok(result_offset(w)),
                (w, _) => Err(LowerError::BadResultWord(w)),
            }
        };
        for (index, step) in steps.iter().enumerate() {
            let step_no = u16::try_from(index).unwrap_or(u16::MAX);
            let failed = doorbell::encode(Command::PlatformFailed, what as u8, step_no, position);
            match step {
                PlatformStep::Call { conduit, args } => {
                    for (reg, _) in args {
                        self.check_reg(*reg)?;
                    }
                    self.e.call(*conduit, args).map_err(|w| self.wrong_isa(w))?;
                }
                PlatformStep::Expect { reg, value } => {
                    self.check_reg(*reg)?;
                    let ok = self.e.new_label();
                    self.e.branch_eq(Src::Reg(*reg), *value, ok);
                    self.report(failed, Some(Src::Reg(*reg)), Some(Src::Imm(*value)));
                    self.e.bind(ok);
                }
                PlatformStep::Save { reg, result } => {
                    self.check_reg(*reg)?;
                    let at = dest(*result)?;
                    self.e.save(*reg, at);
                }
                PlatformStep::LoadResult { gpa, result } => {
                    check_aligned(*gpa, 8)?;
                    let at = dest(*result)?;
                    self.e.load(*gpa, 8, false, at);
                }
                PlatformStep::Entropy(source) => {
                    let at = dest(0)?;
                    let (fail, done) = (self.e.new_label(), self.e.new_label());
                    self.e
                        .entropy(*source, at, fail)
                        .map_err(|w| self.wrong_isa(w))?;
                    self.e.jump(done);
                    self.e.bind(fail);
                    let exhausted = Src::Imm(doorbell::ENTROPY_EXHAUSTED);
                    self.report(failed, Some(Src::Data(at)), Some(exhausted));
                    self.e.bind(done);
                }
                PlatformStep::Store { gpa, size, value } => {
                    check_access(*gpa, *size)?;
                    self.e.store(*gpa, *size, *value);
                }
            }
        }
        Ok(())
    }
}

fn count_ops(ops: &[Op]) -> u16 {
    ops.iter().fold(0u16, |n, op| {
        let inner = match op {
            Op::Repeat { body, .. } => count_ops(body),
            _ => 0,
        };
        n.saturating_add(1).saturating_add(inner)
    })
}
