//! The doorbell: how a lowered program reports back to the host (a ucall-style MMIO protocol).
//!
//! The doorbell is one page of device MMIO at [`Layout::doorbell`](super::Layout) (reached
//! through the platform's device alias, like any device). It has four 8-byte write-only
//! registers; the guest fills the operands it needs, then writes the command word, which makes
//! the host act on the latched operands and clear them:
//!
//! | offset | register | meaning |
//! |---|---|---|
//! | `0x00` | [`VALUE`] | the value being reported |
//! | `0x08` | [`AUX`] | second operand (expected value, faulting PC) |
//! | `0x10` | [`AUX2`] | third operand (fault address) |
//! | `0x18` | [`CMD`] | the command word: [`encode`]`(command, a, b, c)` |
//!
//! The command word is `MAGIC (bits 63:56 = 0xC7) | c << 32 | b << 16 | a << 8 | command`.
//!
//! | command | code | a | b | c | operands | MMIO write exits |
//! |---|---|---|---|---|---|---|
//! | [`Command::Report`] | 1 | slot | – | – | VALUE = slot value | 2 |
//! | [`Command::ExpectFailed`] | 2 | slot | – | – | VALUE = actual, AUX = expected | 3 |
//! | [`Command::Measurement`] | 3 | register index | word index | length in bytes | VALUE = little-endian word | 2 per 8-byte word |
//! | [`Command::PlatformFailed`] | 4 | [`PlatformOp`] | step index | op position | VALUE = actual, AUX = expected | 3 |
//! | [`Command::Done`] | 5 | – | – | – | none | 1 |
//! | [`Command::Exception`] | 6 | – | – | – | VALUE = syndrome (ESR_EL1 / scause), AUX = PC (ELR_EL1 / sepc), AUX2 = fault address (FAR_EL1 / stval) | 4 |
//!
//! So a program that passes costs exactly `2 × reports + 1` doorbell writes (plus its own
//! device accesses and whatever its platform steps cost). The op position in
//! `PlatformFailed` is the op's index in a pre-order walk of the program (a `Repeat` counts
//! before its body, and an appended `SystemOff` counts as the last op); [`PROLOGUE`] marks the
//! platform prologue, and the power-off block (shared by every `SystemOff` and the exception
//! handler) uses the number of ops.
//!
//! An entropy loop that never gets a value after [`ENTROPY_RETRIES`] tries reports
//! `PlatformFailed` with AUX = [`ENTROPY_EXHAUSTED`] and VALUE = the last raw reading.

use serde::{Deserialize, Serialize};

use super::Slot;

/// Offset of the VALUE register.
pub const VALUE: u64 = 0x00;
/// Offset of the AUX register.
pub const AUX: u64 = 0x08;
/// Offset of the AUX2 register.
pub const AUX2: u64 = 0x10;
/// Offset of the command register.
pub const CMD: u64 = 0x18;
/// Bits 63:56 of every command word.
pub const MAGIC: u64 = 0xC7 << 56;
/// Op position used for failures in the platform prologue.
pub const PROLOGUE: u16 = u16::MAX;
/// Tries of an entropy instruction before the program gives up.
pub const ENTROPY_RETRIES: u16 = 64;
/// The "expected" operand of a `PlatformFailed` for an exhausted entropy loop.
pub const ENTROPY_EXHAUSTED: u64 = u64::MAX;

/// A doorbell command code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Command {
    /// Report a slot's value.
    Report = 1,
    /// An `Expect` did not hold.
    ExpectFailed = 2,
    /// One word of a measurement register.
    Measurement = 3,
    /// A platform step's `Expect` did not hold (or entropy ran out).
    PlatformFailed = 4,
    /// The program reached its end (sent before powering off).
    Done = 5,
    /// The guest took an exception; it powers off next.
    Exception = 6,
}

impl Command {
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => Command::Report,
            2 => Command::ExpectFailed,
            3 => Command::Measurement,
            4 => Command::PlatformFailed,
            5 => Command::Done,
            6 => Command::Exception,
            _ => return None,
        })
    }
}

/// Which portable operation a platform failure belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum PlatformOp {
    /// The platform prologue ([`GuestPlatform::prologue`](super::GuestPlatform::prologue)).
    Prologue = 0,
    /// `Op::Share`.
    Share = 1,
    /// `Op::Unshare`.
    Unshare = 2,
    /// `Op::ReadMeasurement`.
    ReadMeasurement = 3,
    /// `Op::ReadEntropy`.
    ReadEntropy = 4,
    /// `Op::HostCall`.
    HostCall = 5,
    /// `Op::SystemOff` (only seen if powering off returns and fails an `Expect`).
    SystemOff = 6,
    /// `Op::StartVcpu`.
    StartVcpu = 7,
    /// `Op::StopVcpu`.
    StopVcpu = 8,
}

impl PlatformOp {
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => PlatformOp::Prologue,
            1 => PlatformOp::Share,
            2 => PlatformOp::Unshare,
            3 => PlatformOp::ReadMeasurement,
            4 => PlatformOp::ReadEntropy,
            5 => PlatformOp::HostCall,
            6 => PlatformOp::SystemOff,
            7 => PlatformOp::StartVcpu,
            8 => PlatformOp::StopVcpu,
            _ => return None,
        })
    }
}

/// Builds a command word.
pub const fn encode(command: Command, a: u8, b: u16, c: u16) -> u64 {
    MAGIC | (c as u64) << 32 | (b as u64) << 16 | (a as u64) << 8 | command as u64
}

/// Splits a command word into (command, a, b, c); `None` if the magic or the code is wrong.
pub fn decode(word: u64) -> Option<(Command, u8, u16, u16)> {
    if word & (0xff << 56) != MAGIC || word & 0x00ff_0000_0000_0000 != 0 {
        return None;
    }
    let command = Command::from_code(word as u8)?;
    Some((
        command,
        (word >> 8) as u8,
        (word >> 16) as u16,
        (word >> 32) as u16,
    ))
}

/// What a program reported through the doorbell, decoded by the [`Runner`](super::Runner).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Report {
    /// `Op::Report`.
    Value {
        /// The slot.
        slot: Slot,
        /// Its value.
        value: u64,
    },
    /// An `Op::Expect` failed.
    ExpectFailed {
        /// The slot.
        slot: Slot,
        /// What the program expected.
        expected: u64,
        /// What the slot held.
        actual: u64,
    },
    /// `Op::ReadMeasurement`: all bytes of one register.
    Measurement {
        /// Platform register index.
        index: u8,
        /// The register's bytes.
        bytes: Vec<u8>,
    },
    /// A platform step's check failed.
    PlatformFailed {
        /// The portable operation.
        op: PlatformOp,
        /// Index of the failing step in the platform's step list.
        step: u16,
        /// Pre-order position of the op in the program ([`PROLOGUE`] for the prologue).
        position: u16,
        /// What the platform expected ([`ENTROPY_EXHAUSTED`] for an entropy loop).
        expected: u64,
        /// What the register held.
        actual: u64,
    },
    /// The guest took an exception and powered off.
    Exception {
        /// ESR_EL1 / scause.
        syndrome: u64,
        /// ELR_EL1 / sepc.
        pc: u64,
        /// FAR_EL1 / stval.
        address: u64,
    },
}

impl Report {
    /// Whether this report is a failure (anything but `Value` and `Measurement`).
    pub fn is_failure(&self) -> bool {
        !matches!(self, Report::Value { .. } | Report::Measurement { .. })
    }
}

/// Why a doorbell write could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DoorbellError {
    /// A write to an offset that is not a doorbell register, or not 8 bytes wide.
    #[error(
        "doorbell write of {size} bytes at offset {offset:#x} (registers are 8 bytes at 0x0..0x18)"
    )]
    BadRegister {
        /// Offset in the doorbell page.
        offset: u64,
        /// Access width.
        size: u8,
    },
    /// A command word with a wrong magic, code or argument.
    #[error("bad doorbell command word {0:#x}")]
    BadCommand(u64),
    /// Measurement words out of order.
    #[error("measurement word {word} of register {index} arrived out of order")]
    MeasurementOrder {
        /// Register.
        index: u8,
        /// The word that arrived.
        word: u16,
    },
}

/// The host side of the doorbell: latches operands and turns command words into [`Report`]s.
#[derive(Debug, Default, Clone)]
pub struct DoorbellState {
    value: u64,
    aux: u64,
    aux2: u64,
    measurement: Option<(u8, Vec<u8>)>,
    /// Reports decoded so far.
    pub reports: Vec<Report>,
    /// Whether `Done` was received.
    pub done: bool,
}

impl DoorbellState {
    /// Handles a write of `value` (`size` bytes) at `offset` in the doorbell page.
    pub fn write(&mut self, offset: u64, size: u8, value: u64) -> Result<(), DoorbellError> {
        if size != 8 {
            return Err(DoorbellError::BadRegister { offset, size });
        }
        match offset {
            VALUE => self.value = value,
            AUX => self.aux = value,
            AUX2 => self.aux2 = value,
            CMD => self.command(value)?,
            _ => return Err(DoorbellError::BadRegister { offset, size }),
        }
        Ok(())
    }

    fn command(&mut self, word: u64) -> Result<(), DoorbellError> {
        let (command, a, b, c) = decode(word).ok_or(DoorbellError::BadCommand(word))?;
        let (value, aux, aux2) = (self.value, self.aux, self.aux2);
        (self.value, self.aux, self.aux2) = (0, 0, 0);
        let report = match command {
            Command::Report => Report::Value {
                slot: Slot(a),
                value,
            },
            Command::ExpectFailed => Report::ExpectFailed {
                slot: Slot(a),
                expected: aux,
                actual: value,
            },
            Command::Measurement => return self.measurement_word(a, b, c, value),
            Command::PlatformFailed => Report::PlatformFailed {
                op: PlatformOp::from_code(a).ok_or(DoorbellError::BadCommand(word))?,
                step: b,
                position: c,
                expected: aux,
                actual: value,
            },
            Command::Done => {
                self.done = true;
                return Ok(());
            }
            Command::Exception => Report::Exception {
                syndrome: value,
                pc: aux,
                address: aux2,
            },
        };
        self.reports.push(report);
        Ok(())
    }

    fn measurement_word(
        &mut self,
        index: u8,
        word: u16,
        len: u16,
        value: u64,
    ) -> Result<(), DoorbellError> {
        let mut bytes = match self.measurement.take() {
            None if word == 0 => Vec::with_capacity(usize::from(len)),
            Some((i, bytes)) if i == index && bytes.len() == usize::from(word) * 8 => bytes,
            _ => return Err(DoorbellError::MeasurementOrder { index, word }),
        };
        bytes.extend_from_slice(&value.to_le_bytes());
        if bytes.len() >= usize::from(len) {
            bytes.truncate(usize::from(len));
            self.reports.push(Report::Measurement { index, bytes });
        } else {
            self.measurement = Some((index, bytes));
        }
        Ok(())
    }
}
