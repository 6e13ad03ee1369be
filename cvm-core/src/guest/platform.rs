//! What differs per platform, described as data so that lowering has no platform knowledge.
//!
//! Each backend implements [`GuestPlatform`]. It answers in [`PlatformStep`]s expressed in the
//! ISA's own register numbers (AArch64 x0–x30; RV64 x0–x31, so a0 = 10; x86-64 in the
//! `X86_*` numbering below), and the ISA lowering turns each step into instructions.

use serde::{Deserialize, Serialize};

use crate::config::Arch;

/// x86-64 register numbers used in [`PlatformStep`]s (the ModRM numbering).
pub mod x86_reg {
    /// rax
    pub const RAX: u8 = 0;
    /// rcx
    pub const RCX: u8 = 1;
    /// rdx
    pub const RDX: u8 = 2;
    /// rbx
    pub const RBX: u8 = 3;
    /// rsi
    pub const RSI: u8 = 6;
    /// rdi
    pub const RDI: u8 = 7;
}

/// How a call leaves the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Conduit {
    /// AArch64 `SMC #imm` (RSI, PSCI in realms).
    Smc(u16),
    /// AArch64 `HVC #imm` (PSCI on KVM).
    Hvc(u16),
    /// RISC-V `ECALL` (SBI).
    Ecall,
    /// x86 `VMCALL` (KVM hypercalls).
    Vmcall,
    /// x86 `OUT dx, al`-free halt: `HLT`.
    Hlt,
}

/// An entropy instruction to lower natively.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntropySource {
    /// AArch64 `MRS Xt, RNDR` (FEAT_RNG), retried while it reports failure (NZCV.Z = 1).
    Rndr,
    /// RISC-V `CSRRW rd, seed, x0` polled until OPST = ES16; the 16 entropy bits are kept.
    Seed,
    /// x86 `RDRAND r64`, retried while CF = 0.
    Rdrand,
}

/// One platform-specific step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlatformStep {
    /// Put each immediate in its register, then leave through `conduit`.
    Call {
        /// The conduit.
        conduit: Conduit,
        /// (register, value) pairs.
        args: Vec<(u8, u64)>,
    },
    /// Unless register `reg` equals `value`, report a platform failure (with the register's
    /// value) through the doorbell and continue.
    Expect {
        /// Register.
        reg: u8,
        /// Expected value.
        value: u64,
    },
    /// Save register `reg` as result word `result` of the op (0 = the op's slot; measurement
    /// words 0..7 for `ReadMeasurement`).
    Save {
        /// Register.
        reg: u8,
        /// Result word.
        result: u8,
    },
    /// Load the 8 bytes at `gpa` (RAM) as result word `result`.
    LoadResult {
        /// Address.
        gpa: u64,
        /// Result word.
        result: u8,
    },
    /// Read entropy into result word 0.
    Entropy(EntropySource),
    /// A store of `value` (low `size` bytes) to RAM at `gpa` (e.g. a host-call argument block).
    Store {
        /// Address.
        gpa: u64,
        /// 1, 2, 4 or 8.
        size: u8,
        /// Value.
        value: u64,
    },
}

/// Why a platform cannot express an op.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{op} is not available on {platform}: {reason}")]
pub struct NotSupported {
    /// The op.
    pub op: &'static str,
    /// The platform.
    pub platform: &'static str,
    /// Why.
    pub reason: &'static str,
}

/// Guest-physical addresses a lowered program uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// Where the code is loaded and entered.
    pub code: u64,
    /// A RAM page for slots and scratch (the program's first 4 KiB of data).
    pub data: u64,
    /// The doorbell page (device view, before aliasing).
    pub doorbell: u64,
    /// Device MMIO ranges the program touches (device view), as (base, size).
    pub devices: Vec<(u64, u64)>,
}

/// A backend's platform conventions, as data.
pub trait GuestPlatform {
    /// Short platform name for errors (`kvm-x86_64`, `arm-cca`, `riscv-cove`).
    fn name(&self) -> &'static str;
    /// The guest ISA.
    fn arch(&self) -> Arch;
    /// The address the guest must use to reach device address `gpa` (CCA: set the
    /// unprotected-IPA bit). Identity by default.
    fn device_address(&self, gpa: u64) -> u64 {
        gpa
    }
    /// Steps run once at program start (CoVE: COVG_ADD_MMIO_REGION for the doorbell and each
    /// device range).
    fn prologue(&self, layout: &Layout) -> Vec<PlatformStep> {
        let _ = layout;
        Vec::new()
    }
    /// Steps that ask the host to share `[gpa, gpa + len)`.
    fn share(&self, gpa: u64, len: u64) -> Result<Vec<PlatformStep>, NotSupported>;
    /// Steps that make `[gpa, gpa + len)` private again.
    fn unshare(&self, gpa: u64, len: u64) -> Result<Vec<PlatformStep>, NotSupported>;
    /// Steps that leave the `len()` bytes of register `index` in result words 0.. (little-endian
    /// words), and the register's length in bytes.
    fn read_measurement(
        &self,
        index: u8,
        layout: &Layout,
    ) -> Result<(Vec<PlatformStep>, usize), NotSupported>;
    /// Steps that stop the calling vCPU without powering the VM off (PSCI CPU_OFF, SBI HSM
    /// HART_STOP); the VMM then sees `VmExit::Halt`. They must not return.
    fn stop_vcpu(&self) -> Result<Vec<PlatformStep>, NotSupported> {
        Err(NotSupported {
            op: "stop_vcpu",
            platform: self.name(),
            reason: "the platform does not describe how a vCPU stops itself",
        })
    }
    /// The `read_measurement` index of the register that holds the launch (image) measurement:
    /// CCA 0 (the RIM); CoVE 2 (TCG PCR2, the TVM pages). Default 0.
    fn launch_measurement_index(&self) -> u8 {
        0
    }
    /// Steps that leave entropy in result word 0.
    fn read_entropy(&self) -> Result<Vec<PlatformStep>, NotSupported>;
    /// Steps for a host call with up to 6 args; the first return value in result word 0.
    fn host_call(&self, nr: u64, args: &[u64]) -> Result<Vec<PlatformStep>, NotSupported>;
    /// Steps that power the system off (must not return).
    fn system_off(&self) -> Vec<PlatformStep>;
    /// Steps that start secondary vCPU `vcpu` at `entry` with `arg` (PSCI CPU_ON, SBI HSM
    /// HART_START). An empty list means the host starts secondaries itself (plain KVM).
    fn start_vcpu(
        &self,
        vcpu: u32,
        entry: u64,
        arg: u64,
    ) -> Result<Vec<PlatformStep>, NotSupported> {
        let _ = (vcpu, entry, arg);
        Err(NotSupported {
            op: "start_vcpu",
            platform: self.name(),
            reason: "the platform does not describe how a guest starts a secondary vCPU",
        })
    }
}

impl Layout {
    /// Base of the RAM region of [`Layout::standard`].
    pub const STANDARD_RAM_BASE: u64 = 0x8000_0000;
    /// Size of the RAM region of [`Layout::standard`] (4 MiB).
    pub const STANDARD_RAM_SIZE: u64 = 4 << 20;

    /// The layout every portable test uses unless it says otherwise:
    ///
    /// | what | guest-physical |
    /// |---|---|
    /// | RAM | `0x8000_0000`, 4 MiB ([`Layout::standard_ram`]) |
    /// | code (entry) | `0x8000_0000` (RAM base) |
    /// | data page | `0x8010_0000` (RAM base + 1 MiB) |
    /// | doorbell page | `0x0900_0000` |
    /// | test device | `0x0a00_0000`, 4 KiB |
    ///
    /// On x86-64 everything lies below 4 GiB, so an identity map of `[0, 4 GiB)` covers it.
    pub fn standard() -> Self {
        Self {
            code: Self::STANDARD_RAM_BASE,
            data: Self::STANDARD_RAM_BASE + 0x10_0000,
            doorbell: 0x0900_0000,
            devices: vec![(0x0a00_0000, 0x1000)],
        }
    }

    /// The RAM region of [`Layout::standard`] (`launch` picks private or shared).
    pub fn standard_ram() -> crate::memory::MemoryRegion {
        crate::memory::MemoryRegion::private(Self::STANDARD_RAM_BASE, Self::STANDARD_RAM_SIZE)
    }
}
