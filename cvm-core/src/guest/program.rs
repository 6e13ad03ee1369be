//! The portable description of guest behaviour.
//!
//! A [`Program`] is a list of [`Op`]s built with a small builder. It knows nothing about any
//! ISA or platform: [`crate::guest::lower`] turns it into machine code for one ISA, asking a
//! [`crate::guest::GuestPlatform`] for everything platform-specific.

use serde::{Deserialize, Serialize};

/// A 64-bit result cell in guest memory (at most [`Program::MAX_SLOTS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Slot(pub u8);

/// One step of a guest program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Store `value` (low `size` bytes) to device address `addr`.
    MmioWrite {
        /// Device address (the platform may alias it, e.g. CCA's unprotected bit).
        addr: u64,
        /// 1, 2, 4 or 8.
        size: u8,
        /// The value.
        value: u64,
    },
    /// Load `size` bytes from device address `addr` into `slot`, sign- or zero-extended.
    MmioRead {
        /// Device address.
        addr: u64,
        /// 1, 2, 4 or 8.
        size: u8,
        /// Sign-extend (LDRSB/LB/movsx) instead of zero-extend.
        signed: bool,
        /// Destination.
        slot: Slot,
    },
    /// Store to guest RAM (no device alias).
    MemWrite {
        /// Guest-physical address.
        gpa: u64,
        /// 1, 2, 4 or 8.
        size: u8,
        /// The value.
        value: u64,
    },
    /// Load from guest RAM into `slot` (zero-extended).
    MemRead {
        /// Guest-physical address.
        gpa: u64,
        /// 1, 2, 4 or 8.
        size: u8,
        /// Destination.
        slot: Slot,
    },
    /// Report a failure through the doorbell unless `slot == value` (never hangs).
    Expect {
        /// The slot.
        slot: Slot,
        /// The expected value.
        value: u64,
    },
    /// Report `slot`'s value through the doorbell.
    Report {
        /// The slot.
        slot: Slot,
    },
    /// Run `body` `count` times.
    Repeat {
        /// Iterations (0 runs nothing).
        count: u32,
        /// The body.
        body: Vec<Op>,
    },
    /// Ask the host to make `[gpa, gpa + len)` shared.
    Share {
        /// Start (4 KiB aligned).
        gpa: u64,
        /// Length (4 KiB multiple).
        len: u64,
    },
    /// Ask the host to make `[gpa, gpa + len)` private again.
    Unshare {
        /// Start.
        gpa: u64,
        /// Length.
        len: u64,
    },
    /// Read launch-measurement register `index` and report all of its bytes.
    ReadMeasurement {
        /// Platform register index (CCA: 0 = RIM, 1..4 = REM; CoVE: TCG PCR index).
        index: u8,
    },
    /// Read the architectural entropy source into `slot`.
    ReadEntropy {
        /// Destination.
        slot: Slot,
    },
    /// Call the VMM; the first return value lands in `slot`.
    HostCall {
        /// Call number.
        nr: u64,
        /// Up to 6 arguments.
        args: Vec<u64>,
        /// Destination of the first return value.
        slot: Slot,
    },
    /// Start secondary vCPU `vcpu` at `entry` with `arg` in its first argument register
    /// (PSCI CPU_ON on CCA, SBI HSM HART_START on CoVE; nothing on platforms where the host
    /// starts secondaries itself).
    StartVcpu {
        /// The vCPU index (its MPIDR / hart id).
        vcpu: u32,
        /// Entry address.
        entry: u64,
        /// First argument.
        arg: u64,
    },
    /// Stop this vCPU only (PSCI CPU_OFF, SBI HSM HART_STOP, HLT); the program ends here and
    /// the rest of the VM keeps running. Ends a secondary vCPU's program.
    StopVcpu,
    /// Power the system off (the program ends).
    SystemOff,
}

/// A portable guest program.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Program {
    /// The ops, in order. A `SystemOff` is appended by lowering if missing.
    pub ops: Vec<Op>,
    #[serde(skip)]
    next_slot: u8,
}

fn max_slot(ops: &[Op]) -> Option<u8> {
    ops.iter()
        .filter_map(|op| match op {
            Op::MmioRead { slot, .. }
            | Op::MemRead { slot, .. }
            | Op::Expect { slot, .. }
            | Op::Report { slot }
            | Op::ReadEntropy { slot }
            | Op::HostCall { slot, .. } => Some(slot.0),
            Op::Repeat { body, .. } => max_slot(body),
            _ => None,
        })
        .max()
}

impl Program {
    /// Slots available to one program.
    pub const MAX_SLOTS: u8 = 64;

    /// An empty program.
    pub fn new() -> Self {
        Self::default()
    }

    fn slot(&mut self) -> Slot {
        let s = Slot(self.next_slot);
        self.next_slot = self.next_slot.saturating_add(1);
        s
    }

    /// A program made of `ops` (e.g. read from JSON); its slots are those the ops name.
    pub fn from_ops(ops: Vec<Op>) -> Self {
        Self { ops, next_slot: 0 }
    }

    /// Number of slots used: those allocated by the builder or named by an op.
    pub fn slots(&self) -> u8 {
        let named = max_slot(&self.ops).map_or(0, |m| m.saturating_add(1));
        self.next_slot.max(named)
    }

    /// Appends a raw op (slots in it must come from this program's builder methods or be
    /// below [`Program::slots`]; lowering checks).
    pub fn push(&mut self, op: Op) -> &mut Self {
        self.ops.push(op);
        self
    }

    /// MMIO store.
    pub fn mmio_write(&mut self, addr: u64, size: u8, value: u64) -> &mut Self {
        self.push(Op::MmioWrite { addr, size, value })
    }

    /// MMIO load into a new slot.
    pub fn mmio_read(&mut self, addr: u64, size: u8, signed: bool) -> Slot {
        let slot = self.slot();
        self.push(Op::MmioRead {
            addr,
            size,
            signed,
            slot,
        });
        slot
    }

    /// RAM store.
    pub fn mem_write(&mut self, gpa: u64, size: u8, value: u64) -> &mut Self {
        self.push(Op::MemWrite { gpa, size, value })
    }

    /// RAM load into a new slot.
    pub fn mem_read(&mut self, gpa: u64, size: u8) -> Slot {
        let slot = self.slot();
        self.push(Op::MemRead { gpa, size, slot });
        slot
    }

    /// Report a failure unless `slot == value`.
    pub fn expect(&mut self, slot: Slot, value: u64) -> &mut Self {
        self.push(Op::Expect { slot, value })
    }

    /// Report a slot.
    pub fn report(&mut self, slot: Slot) -> &mut Self {
        self.push(Op::Report { slot })
    }

    /// Repeat what `body` builds `count` times. Slots allocated inside are shared by iterations.
    pub fn repeat(&mut self, count: u32, body: impl FnOnce(&mut Program)) -> &mut Self {
        let mut inner = Program {
            ops: Vec::new(),
            next_slot: self.next_slot,
        };
        body(&mut inner);
        self.next_slot = inner.next_slot;
        self.push(Op::Repeat {
            count,
            body: inner.ops,
        })
    }

    /// Share a range with the host.
    pub fn share(&mut self, gpa: u64, len: u64) -> &mut Self {
        self.push(Op::Share { gpa, len })
    }

    /// Make a range private again.
    pub fn unshare(&mut self, gpa: u64, len: u64) -> &mut Self {
        self.push(Op::Unshare { gpa, len })
    }

    /// Read and report measurement register `index`.
    pub fn read_measurement(&mut self, index: u8) -> &mut Self {
        self.push(Op::ReadMeasurement { index })
    }

    /// Read entropy into a new slot.
    pub fn read_entropy(&mut self) -> Slot {
        let slot = self.slot();
        self.push(Op::ReadEntropy { slot });
        slot
    }

    /// Host call; its first return value lands in a new slot.
    pub fn host_call(&mut self, nr: u64, args: &[u64]) -> Slot {
        let slot = self.slot();
        self.push(Op::HostCall {
            nr,
            args: args.to_vec(),
            slot,
        });
        slot
    }

    /// Start secondary vCPU `vcpu` at `entry` with `arg`.
    pub fn start_vcpu(&mut self, vcpu: u32, entry: u64, arg: u64) -> &mut Self {
        self.push(Op::StartVcpu { vcpu, entry, arg })
    }

    /// Stop this vCPU (the program ends; the VM keeps running).
    pub fn stop_vcpu(&mut self) -> &mut Self {
        self.push(Op::StopVcpu)
    }

    /// Power off.
    pub fn system_off(&mut self) -> &mut Self {
        self.push(Op::SystemOff)
    }
}
