//! What a backend offers ([`BackendInfo`]) and what a VMM asks for ([`VmConfig`], [`VcpuInit`]).

use serde::{Deserialize, Serialize};

use crate::measure::HashAlgorithm;

/// Guest instruction-set architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// x86-64 (long mode).
    X86_64,
    /// AArch64.
    Aarch64,
    /// RV64.
    Riscv64,
}

impl Arch {
    /// The architecture this library was compiled for.
    pub fn host() -> Self {
        if cfg!(target_arch = "aarch64") {
            Arch::Aarch64
        } else if cfg!(target_arch = "riscv64") {
            Arch::Riscv64
        } else {
            Arch::X86_64
        }
    }
}

/// Which confidential-computing architecture protects the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidentiality {
    /// None: an ordinary VM.
    None,
    /// An Arm CCA realm.
    ArmCca,
    /// A RISC-V CoVE TVM.
    RiscvCove,
}

/// What actually runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Implementation {
    /// Linux KVM on this host.
    Kvm,
    /// Confidential-computing hardware and firmware.
    Hardware,
    /// The in-process model of the firmware and guest CPU (no isolation; for development, tests and comparison).
    Model,
}

/// One probed capability, reported whether present or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capability {
    /// Name, e.g. `guest_memfd`, `KVM_CAP_MEMORY_ATTRIBUTES.PRIVATE`.
    pub name: String,
    /// Whether the host provides it.
    pub present: bool,
    /// Value or explanation.
    pub detail: String,
}

/// What a backend is and can do on this host. Probing never fails: a missing capability is a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendInfo {
    /// Short name (`kvm`, `arm-cca`, `riscv-cove`).
    pub name: String,
    /// Guest ISA.
    pub arch: Arch,
    /// Confidentiality kind of the VMs it creates.
    pub confidentiality: Confidentiality,
    /// KVM, hardware or model.
    pub implementation: Implementation,
    /// Whether VMs can be created on this host now.
    pub available: bool,
    /// Why not, when unavailable.
    pub unavailable_reason: Option<String>,
    /// Whether `MemoryKind::Private` regions can be added.
    pub private_memory: bool,
    /// Whether private↔shared conversions work.
    pub conversions: bool,
    /// Measurement algorithms offered (first = default).
    pub measurement: Vec<HashAlgorithm>,
    /// Maximum vCPUs per VM.
    pub max_vcpus: u32,
    /// Usable guest-physical address bits for RAM and devices (device view).
    pub addr_bits: u8,
    /// Named guest features (ISA extensions, ID-register fields) the backend exposes.
    pub features: Vec<String>,
    /// Everything probed, present or not.
    pub capabilities: Vec<Capability>,
}

/// Where guest entropy requests (CoVE SEED CSR) are answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntropyPolicy {
    /// The trusted firmware answers from its own entropy source (the host is untrusted).
    #[default]
    Firmware,
    /// Forward to the VMM as `VmExit::SysReg`; only when the VMM opts in.
    ForwardToVmm,
}

/// Arm CCA realm parameters (RMM encodings are derived from these plain values).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CcaConfig {
    /// SVE vector length in bits (0 = SVE disabled; else a multiple of 128).
    pub sve_vl_bits: u32,
    /// Breakpoints (≥ 1).
    pub num_bps: u8,
    /// Watchpoints (≥ 1).
    pub num_wps: u8,
    /// PMU counters (0 = PMU disabled).
    pub pmu_num_ctrs: u8,
    /// Realm Personalization Value (≤ 64 bytes, not measured).
    #[serde(with = "crate::measure::hex_bytes")]
    pub rpv: Vec<u8>,
}

impl Default for CcaConfig {
    fn default() -> Self {
        Self {
            sve_vl_bits: 0,
            num_bps: 2,
            num_wps: 2,
            pmu_num_ctrs: 0,
            rpv: Vec::new(),
        }
    }
}

/// RISC-V CoVE TVM parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CoveConfig {
    /// ISA extensions to hide from the guest (KVM names, lower case, e.g. `zkr`, `smnpm`).
    pub disable_extensions: Vec<String>,
}

/// What the VMM asks for when creating a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct VmConfig {
    /// The confidentiality required. Selection fails closed: a backend that cannot provide it
    /// refuses the VM; asking for a confidential VM never yields a plain one.
    pub confidentiality: Confidentiality,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Guest-physical address width; 0 = the backend's default.
    pub addr_bits: u8,
    /// Measurement algorithm; `None` = the backend's default.
    pub measurement: Option<HashAlgorithm>,
    /// Guest entropy policy.
    pub entropy: EntropyPolicy,
    /// CCA parameters.
    pub cca: CcaConfig,
    /// CoVE parameters.
    pub cove: CoveConfig,
}

impl Default for VmConfig {
    fn default() -> Self {
        Self {
            confidentiality: Confidentiality::None,
            vcpus: 1,
            addr_bits: 0,
            measurement: None,
            entropy: EntropyPolicy::Firmware,
            cca: CcaConfig::default(),
            cove: CoveConfig::default(),
        }
    }
}

impl VmConfig {
    /// A config for `confidentiality` with defaults elsewhere.
    pub fn new(confidentiality: Confidentiality) -> Self {
        Self {
            confidentiality,
            ..Self::default()
        }
    }
}

/// A vCPU's initial state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcpuInit {
    /// Entry PC (for a secondary, where it starts if the guest does not say otherwise).
    pub entry: u64,
    /// Argument registers (x0.. / a0.. / rdi, rsi, …); at most 8.
    pub args: Vec<u64>,
    /// Whether it may run at once (`true` for the boot vCPU); others wait to be started by the
    /// guest (PSCI CPU_ON, SBI HSM HART_START).
    pub runnable: bool,
}

impl VcpuInit {
    /// The boot vCPU entering at `entry` with `args`.
    pub fn boot(entry: u64, args: &[u64]) -> Self {
        Self {
            entry,
            args: args.to_vec(),
            runnable: true,
        }
    }

    /// A secondary vCPU that the guest starts.
    pub fn secondary() -> Self {
        Self::default()
    }
}

/// Whether a load enters the launch measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// Measured (CCA DATA_CREATE with MEASURE_CONTENT, CoVE ADD_MEASURED_PAGES).
    Yes,
    /// Not measured.
    No,
}
