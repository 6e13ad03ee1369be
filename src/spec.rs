//! The launch spec: one TOML file that says how to build a VM on any backend, for `cvm run`
//! and `cvm measure SPEC.toml`.
//!
//! ```toml
//! # examples/specs/hello-cca.toml
//! backend = "arm-cca"            # kvm | arm-cca | riscv-cove
//! # addr_bits = 40               # guest-physical address width; 0 or absent = backend default
//!
//! [[memory]]                     # one table per region, 4 KiB aligned, non-overlapping
//! gpa = 0x8000_0000
//! size = 0x40_0000
//! kind = "private"               # private | shared
//!
//! [[image]]                      # loaded in this order
//! path = "hello-cca.bin"         # relative to this file; or `hex = "d503201f..."` inline
//! gpa = 0x8000_0000
//! measure = true                 # default true
//!
//! [vcpus]
//! count = 1                      # default 1; vCPU 0 boots, the others wait for the guest
//! entry = 0x8000_0000            # default: the first image's gpa
//! args = []                      # x0.. / a0.. / rdi, rsi, … (at most 8)
//!
//! [cca]                          # arm-cca only; every key optional
//! measurement = "sha256"         # sha256 | sha512
//! sve_vl_bits = 0
//! num_bps = 2
//! num_wps = 2
//! pmu_num_ctrs = 0
//! rpv = ""                       # hex, at most 64 bytes, not measured
//!
//! # [cove]                       # riscv-cove only
//! # disable_extensions = ["zkr"]
//! # entropy = "firmware"         # firmware | forward_to_vmm
//!
//! [devices.uart]                 # a 16550 (vm-superio) whose output is the console
//! base = 0x1000_0000
//!
//! [devices.doorbell]             # the doorbell portable guest programs report through
//! base = 0x0900_0000
//!
//! # [devices.test_device]        # a bank of MMIO registers (reads: programmed values)
//! # base = 0x0a00_0000
//! # size = 0x1000
//! # reads = [[0x0, 0x1234]]      # [offset, value] pairs
//! ```
//!
//! Device addresses are the device view, the same number on every backend (CCA's
//! unprotected-IPA alias is the guest's business; exits arrive with the bit stripped).
//!
//! [`LaunchSpec::load`] parses and validates a spec into a [`Launch`]: images are read, every
//! rule below is checked, and each failure is one [`SpecError`] line, never a panic:
//! unknown backend, misaligned/empty/overflowing/overlapping regions, an image outside RAM or
//! missing, a measured image that is not page aligned or not in private memory on a
//! confidential VM, images sharing a private page, devices overlapping RAM or each other, a
//! `[cca]`/`[cove]` table on another backend, bad realm parameters.
//!
//! [`Launch::measurement_log`] predicts, offline and without creating a VM, the
//! [`MeasurementLog`] the backend records when `cvm run` builds the VM ([`crate::run`] calls
//! `add_memory` per region, `load` per image, `create_vcpu` per vCPU, `finalize`), following
//! each backend's host flow:
//!
//! | backend | events, in order |
//! |---|---|
//! | `arm-cca` | `ripas` per RTT entry of each private region (the host's block policy, see `backend-arm-cca/src/host.rs`); at `finalize`: `data` per measured private load by ascending IPA, `rec` per vCPU, `data` per unmeasured private load by ascending IPA |
//! | `riscv-cove` | `measured_pages` per page of each measured private load, in load order (coalesced as the host records them); `finalize` with vCPU 0's entry and `args[1]` |
//! | `kvm` | `load` per measured load, in order; `vcpu` for vCPU 0 |
//!
//! [`Launch::measurement`] replays it with the backend's own pure measurer
//! ([`crate::cca::replay`], [`crate::cove::replay`], [`crate::kvm::measure::measurement`]) and
//! keeps the registers the backend's `Vm::measurement` reports (CCA: the RIM; CoVE: PCR0..3 and
//! the TCI; KVM: `LAUNCH`), so `cvm measure SPEC` prints what `cvm run SPEC` reports.
//!
//! [`samples`] is the generator of the sample guest images in `examples/specs/`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use cvm_core::{
    Confidentiality, Content, EntropyPolicy, HashAlgorithm, Measurement, MeasurementEvent,
    MeasurementLog, MemoryKind, MemoryRegion, RegionError, RegionSet, VcpuInit, VmConfig,
    PAGE_SIZE,
};

/// Registers of a 16550 UART (reg-shift 0): the MMIO range `cvm run` decodes at the UART base.
pub const UART_SIZE: u64 = 8;
/// Size of the doorbell page.
pub const DOORBELL_SIZE: u64 = PAGE_SIZE;

/// The three backends a spec can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// Plain KVM (`kvm`).
    Kvm,
    /// Arm CCA realms (`arm-cca`, also `cca`).
    ArmCca,
    /// RISC-V CoVE TVMs (`riscv-cove`, also `cove`).
    RiscvCove,
}

impl BackendKind {
    /// Parses a backend name (`kvm`, `arm-cca`/`cca`, `riscv-cove`/`cove`).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "kvm" => BackendKind::Kvm,
            "arm-cca" | "cca" => BackendKind::ArmCca,
            "riscv-cove" | "cove" => BackendKind::RiscvCove,
            _ => return None,
        })
    }

    /// The canonical name, as [`crate::backend`] takes it.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Kvm => "kvm",
            BackendKind::ArmCca => "arm-cca",
            BackendKind::RiscvCove => "riscv-cove",
        }
    }

    /// The confidentiality its VMs have.
    pub fn confidentiality(self) -> Confidentiality {
        match self {
            BackendKind::Kvm => Confidentiality::None,
            BackendKind::ArmCca => Confidentiality::ArmCca,
            BackendKind::RiscvCove => Confidentiality::RiscvCove,
        }
    }
}

/// A launch spec as written in TOML (see the module docs). [`LaunchSpec::load`] validates it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchSpec {
    /// `kvm`, `arm-cca` or `riscv-cove`.
    pub backend: String,
    /// Guest-physical address width; 0 = the backend's default.
    #[serde(default)]
    pub addr_bits: u8,
    /// Memory regions (`[[memory]]`).
    #[serde(default)]
    pub memory: Vec<MemorySpec>,
    /// Images (`[[image]]`), loaded in order.
    #[serde(default, rename = "image")]
    pub images: Vec<ImageSpec>,
    /// vCPUs.
    #[serde(default)]
    pub vcpus: VcpuSpec,
    /// Arm CCA realm parameters (`arm-cca` only).
    #[serde(default)]
    pub cca: Option<CcaSpec>,
    /// RISC-V CoVE parameters (`riscv-cove` only).
    #[serde(default)]
    pub cove: Option<CoveSpec>,
    /// Emulated devices.
    #[serde(default)]
    pub devices: DevicesSpec,
}

/// One `[[memory]]` region.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemorySpec {
    /// First guest-physical address (4 KiB aligned).
    pub gpa: u64,
    /// Size in bytes (a non-zero multiple of 4 KiB).
    pub size: u64,
    /// `private` or `shared`.
    pub kind: MemoryKind,
}

/// One `[[image]]`: exactly one of `path` and `hex`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    /// A file, relative to the spec file.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Inline bytes as hex (an optional `0x`; whitespace and `_` are ignored).
    #[serde(default)]
    pub hex: Option<String>,
    /// Where it is loaded.
    pub gpa: u64,
    /// Whether it enters the launch measurement (default `true`).
    #[serde(default = "yes")]
    pub measure: bool,
}

fn yes() -> bool {
    true
}

fn one() -> u32 {
    1
}

/// The `[vcpus]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VcpuSpec {
    /// Number of vCPUs (default 1). vCPU 0 boots; the others are created not runnable.
    #[serde(default = "one")]
    pub count: u32,
    /// vCPU 0's entry address (default: the first image's gpa).
    #[serde(default)]
    pub entry: Option<u64>,
    /// vCPU 0's argument registers (at most 8). On CoVE the TSM passes `args[1]` in a1 (a0 is
    /// the hart id), as Salus does.
    #[serde(default)]
    pub args: Vec<u64>,
}

impl Default for VcpuSpec {
    fn default() -> Self {
        Self {
            count: 1,
            entry: None,
            args: Vec::new(),
        }
    }
}

/// The `[cca]` table: realm parameters (defaults as [`cvm_core::CcaConfig`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CcaSpec {
    /// `sha256` (default) or `sha512`.
    #[serde(default = "sha256")]
    pub measurement: HashAlgorithm,
    /// SVE vector length in bits (0 = SVE disabled; else a multiple of 128).
    #[serde(default)]
    pub sve_vl_bits: u32,
    /// Breakpoints (≥ 2).
    #[serde(default = "two")]
    pub num_bps: u8,
    /// Watchpoints (≥ 2).
    #[serde(default = "two")]
    pub num_wps: u8,
    /// PMU counters (0 = PMU disabled).
    #[serde(default)]
    pub pmu_num_ctrs: u8,
    /// Realm Personalization Value as hex (at most 64 bytes; not measured).
    #[serde(default)]
    pub rpv: String,
}

fn sha256() -> HashAlgorithm {
    HashAlgorithm::Sha256
}

fn two() -> u8 {
    2
}

impl Default for CcaSpec {
    fn default() -> Self {
        Self {
            measurement: HashAlgorithm::Sha256,
            sve_vl_bits: 0,
            num_bps: 2,
            num_wps: 2,
            pmu_num_ctrs: 0,
            rpv: String::new(),
        }
    }
}

/// The `[cove]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoveSpec {
    /// ISA extensions to hide from the guest (lower case, e.g. `zkr`).
    #[serde(default)]
    pub disable_extensions: Vec<String>,
    /// Who answers guest entropy reads: `firmware` (default) or `forward_to_vmm`.
    #[serde(default)]
    pub entropy: EntropyPolicy,
}

/// The `[devices]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicesSpec {
    /// A 16550 UART (`[devices.uart]`).
    #[serde(default)]
    pub uart: Option<UartSpec>,
    /// The portable-program doorbell (`[devices.doorbell]`).
    #[serde(default)]
    pub doorbell: Option<DoorbellSpec>,
    /// A test device bank (`[devices.test_device]`).
    #[serde(default)]
    pub test_device: Option<TestDeviceSpec>,
}

/// A 16550 UART at an MMIO base (8 one-byte registers).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UartSpec {
    /// MMIO base (device view).
    pub base: u64,
}

/// The doorbell page of portable guest programs ([`cvm_core::guest::doorbell`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoorbellSpec {
    /// MMIO base (device view, 4 KiB aligned).
    pub base: u64,
}

/// A bank of MMIO registers ([`cvm_core::guest::TestDevice`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestDeviceSpec {
    /// MMIO base (device view).
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
    /// `[offset, value]` pairs that reads return (other offsets read 0).
    #[serde(default)]
    pub reads: Vec<[u64; 2]>,
}

/// Why a spec was refused. `Display` is one line.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The spec or an image file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML does not match the spec format.
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        /// The file (`<spec>` for text).
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// `backend` names no backend.
    #[error("unknown backend {0:?}: expected kvm, arm-cca or riscv-cove")]
    UnknownBackend(String),
    /// A `[cca]` or `[cove]` table on another backend.
    #[error("the [{table}] table applies to {applies_to} only, not {backend}")]
    WrongTable {
        /// `cca` or `cove`.
        table: &'static str,
        /// The backend the table is for.
        applies_to: &'static str,
        /// The spec's backend.
        backend: &'static str,
    },
    /// No memory at all.
    #[error("the spec has no [[memory]] region")]
    NoMemory,
    /// A region is malformed or overlaps another.
    #[error("memory region {index}: {source}")]
    Region {
        /// Index in `[[memory]]`.
        index: usize,
        /// What is wrong.
        #[source]
        source: RegionError,
    },
    /// Private memory the backend cannot place there (e.g. above CCA's protected range).
    #[error("memory region {index} ({gpa:#x}+{size:#x}): {reason}")]
    RegionPlacement {
        /// Index in `[[memory]]`.
        index: usize,
        /// Start.
        gpa: u64,
        /// Size.
        size: u64,
        /// Why.
        reason: String,
    },
    /// An image has both or neither of `path` and `hex`, or bad hex, or no bytes.
    #[error("image {index}: {reason}")]
    ImageSource {
        /// Index in `[[image]]`.
        index: usize,
        /// Why.
        reason: String,
    },
    /// An image does not lie inside one memory region.
    #[error(
        "image {index} ({gpa:#x}+{len:#x}) is outside RAM: no single [[memory]] region holds it"
    )]
    ImageOutsideRam {
        /// Index in `[[image]]`.
        index: usize,
        /// Start.
        gpa: u64,
        /// Length.
        len: u64,
    },
    /// An image breaks a loading rule of the backend.
    #[error("image {index} at {gpa:#x}: {reason}")]
    ImageRule {
        /// Index in `[[image]]`.
        index: usize,
        /// Start.
        gpa: u64,
        /// Why.
        reason: String,
    },
    /// Two images overlap.
    #[error("images {first} and {second} overlap{what}")]
    ImagesOverlap {
        /// The earlier image.
        first: usize,
        /// The later image.
        second: usize,
        /// " in a private page" when they only share a page.
        what: &'static str,
    },
    /// Bad `[vcpus]`.
    #[error("[vcpus]: {0}")]
    Vcpus(String),
    /// A device overlaps RAM or another device, or is misplaced.
    #[error("device {device} at {base:#x}: {reason}")]
    Device {
        /// `uart`, `doorbell` or `test_device`.
        device: &'static str,
        /// Its base.
        base: u64,
        /// Why.
        reason: String,
    },
    /// Bad `[cca]` / `[cove]` parameters or address width.
    #[error("{backend} parameters: {reason}")]
    Params {
        /// The backend.
        backend: &'static str,
        /// Why.
        reason: String,
    },
    /// The backend's measurer refused the predicted log.
    #[error("predicting the {backend} measurement: {reason}")]
    Predict {
        /// The backend.
        backend: &'static str,
        /// Why.
        reason: String,
    },
}

/// One validated image with its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Where it is loaded.
    pub gpa: u64,
    /// Its bytes (non-empty).
    pub bytes: Vec<u8>,
    /// Whether it is measured.
    pub measure: bool,
}

/// The validated devices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Devices {
    /// The 16550 base, if any.
    pub uart: Option<u64>,
    /// The doorbell base, if any.
    pub doorbell: Option<u64>,
    /// The test device, if any (size non-zero, read offsets inside it).
    pub test_device: Option<TestDeviceSpec>,
}

/// A validated spec: everything `cvm run` needs, images read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// The backend.
    pub backend: BackendKind,
    /// The VM configuration passed to `create_vm`.
    pub config: VmConfig,
    /// Regions, in spec order (the order of `add_memory`).
    pub regions: Vec<MemoryRegion>,
    /// Images, in spec order (the order of `load`).
    pub images: Vec<Image>,
    /// vCPU 0's initial state (runnable).
    pub boot: VcpuInit,
    /// Devices.
    pub devices: Devices,
}

/// Reads a whole TOML error as one line with its position.
fn parse_error(path: &Path, text: &str, e: &toml::de::Error) -> SpecError {
    let (line, column) = match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            (line, column)
        }
        None => (1, 1),
    };
    SpecError::Parse {
        path: path.to_owned(),
        line,
        column,
        message: e.message().trim().replace('\n', " "),
    }
}

fn decode_hex(text: &str) -> Result<Vec<u8>, String> {
    let cleaned: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '_')
        .collect();
    let body = cleaned.strip_prefix("0x").unwrap_or(&cleaned);
    hex::decode(body).map_err(|e| format!("bad hex: {e}"))
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.0.saturating_add(b.1) && b.0 < a.0.saturating_add(a.1)
}

impl LaunchSpec {
    /// Parses TOML (`path` only names the source in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, SpecError> {
        toml::from_str(text).map_err(|e| parse_error(path, text, &e))
    }

    /// Reads, parses and validates the spec at `path`; image paths are relative to its directory.
    pub fn load(path: &Path) -> Result<Launch, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_owned(),
            source,
        })?;
        let spec = Self::parse(&text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        spec.validate(base)
    }

    /// Validates the spec, reading image files relative to `base`.
    pub fn validate(&self, base: &Path) -> Result<Launch, SpecError> {
        let backend = BackendKind::from_name(&self.backend)
            .ok_or_else(|| SpecError::UnknownBackend(self.backend.clone()))?;
        if self.cca.is_some() && backend != BackendKind::ArmCca {
            return Err(SpecError::WrongTable {
                table: "cca",
                applies_to: "arm-cca",
                backend: backend.name(),
            });
        }
        if self.cove.is_some() && backend != BackendKind::RiscvCove {
            return Err(SpecError::WrongTable {
                table: "cove",
                applies_to: "riscv-cove",
                backend: backend.name(),
            });
        }
        let config = self.vm_config(backend)?;
        let addr_bits = self.device_addr_bits(backend, &config)?;
        let regions = self.regions(backend, addr_bits)?;
        let images = self.images(backend, base, &regions)?;
        let boot = self.boot(&images, &regions)?;
        let devices = self.devices(&regions, addr_bits)?;
        Ok(Launch {
            backend,
            config,
            regions,
            images,
            boot,
            devices,
        })
    }

    fn vm_config(&self, backend: BackendKind) -> Result<VmConfig, SpecError> {
        let mut config = VmConfig::new(backend.confidentiality());
        config.vcpus = self.vcpus.count;
        config.addr_bits = self.addr_bits;
        let params = |reason: String| SpecError::Params {
            backend: backend.name(),
            reason,
        };
        match backend {
            BackendKind::Kvm => {}
            BackendKind::ArmCca => {
                let cca = self.cca.clone().unwrap_or_default();
                config.measurement = Some(cca.measurement);
                config.cca.sve_vl_bits = cca.sve_vl_bits;
                config.cca.num_bps = cca.num_bps;
                config.cca.num_wps = cca.num_wps;
                config.cca.pmu_num_ctrs = cca.pmu_num_ctrs;
                config.cca.rpv = decode_hex(&cca.rpv).map_err(|e| params(format!("rpv: {e}")))?;
                crate::cca::RealmSetup::from_config(&config).map_err(|e| params(e.to_string()))?;
            }
            BackendKind::RiscvCove => {
                let cove = self.cove.clone().unwrap_or_default();
                config.entropy = cove.entropy;
                let defs =
                    crate::cove::features::feature_defs(&crate::cove::features::HostIsa::default());
                for name in &cove.disable_extensions {
                    match defs.iter().find(|d| d.name == *name) {
                        None => {
                            let known: Vec<&str> = defs.iter().map(|d| d.name.as_str()).collect();
                            return Err(params(format!(
                                "unknown ISA extension {name:?} in disable_extensions; known: {}",
                                known.join(", ")
                            )));
                        }
                        Some(d) if !d.can_disable => {
                            return Err(params(format!("extension {name:?} cannot be disabled")))
                        }
                        Some(_) => {}
                    }
                }
                config.cove.disable_extensions = cove.disable_extensions;
                let max = crate::cove::model::tvm::GPA_BITS;
                if self.addr_bits > max {
                    return Err(params(format!(
                        "{} address bits requested; Sv48x4 gives {max}",
                        self.addr_bits
                    )));
                }
            }
        }
        Ok(config)
    }

    /// The width of the device view every region and device must fit in.
    fn device_addr_bits(&self, backend: BackendKind, config: &VmConfig) -> Result<u8, SpecError> {
        Ok(match backend {
            // x86-64 guests are identity mapped below 4 GiB in long mode; KVM itself accepts
            // more, so only the architectural 52-bit limit is checked offline.
            BackendKind::Kvm => match self.addr_bits {
                0 => 52,
                b => b,
            },
            BackendKind::ArmCca => {
                let setup =
                    crate::cca::RealmSetup::from_config(config).map_err(|e| SpecError::Params {
                        backend: backend.name(),
                        reason: e.to_string(),
                    })?;
                // The protected half of the IPA space; devices live at its unprotected alias.
                setup.s2sz - 1
            }
            BackendKind::RiscvCove => match self.addr_bits {
                0 => crate::cove::model::tvm::GPA_BITS,
                b => b,
            },
        })
    }

    fn regions(&self, backend: BackendKind, bits: u8) -> Result<Vec<MemoryRegion>, SpecError> {
        if self.memory.is_empty() {
            return Err(SpecError::NoMemory);
        }
        let mut set = RegionSet::new();
        let mut out = Vec::new();
        for (index, m) in self.memory.iter().enumerate() {
            let region = MemoryRegion {
                gpa: m.gpa,
                size: m.size,
                kind: m.kind,
                read_only: false,
            };
            set.validate(&region, bits)
                .map_err(|source| SpecError::Region { index, source })?;
            if backend == BackendKind::ArmCca && m.kind == MemoryKind::Private {
                // RMI_RTT_INIT_RIPAS refuses `top` at the end of the protected range.
                if region.end() >= 1u64 << bits {
                    return Err(SpecError::RegionPlacement {
                        index,
                        gpa: m.gpa,
                        size: m.size,
                        reason: format!(
                            "private realm memory must end below {:#x} (the protected IPA range)",
                            1u64 << bits
                        ),
                    });
                }
            }
            set.insert(region);
            out.push(region);
        }
        Ok(out)
    }

    fn images(
        &self,
        backend: BackendKind,
        base: &Path,
        regions: &[MemoryRegion],
    ) -> Result<Vec<Image>, SpecError> {
        let confidential = backend != BackendKind::Kvm;
        let mut out: Vec<Image> = Vec::new();
        for (index, spec) in self.images.iter().enumerate() {
            let source = |reason: &str| SpecError::ImageSource {
                index,
                reason: reason.into(),
            };
            let bytes = match (&spec.path, &spec.hex) {
                (Some(p), None) => {
                    let full = base.join(p);
                    std::fs::read(&full).map_err(|source| SpecError::Read { path: full, source })?
                }
                (None, Some(h)) => decode_hex(h).map_err(|e| source(&e))?,
                (Some(_), Some(_)) => return Err(source("give `path` or `hex`, not both")),
                (None, None) => return Err(source("give `path` (a file) or `hex` (inline bytes)")),
            };
            if bytes.is_empty() {
                return Err(source("the image is empty"));
            }
            let gpa = spec.gpa;
            let len = bytes.len() as u64;
            let region = regions
                .iter()
                .find(|r| r.contains(gpa, len))
                .ok_or(SpecError::ImageOutsideRam { index, gpa, len })?;
            let rule = |reason: &str| SpecError::ImageRule {
                index,
                gpa,
                reason: reason.into(),
            };
            if spec.measure && gpa % PAGE_SIZE != 0 {
                return Err(rule("measured images start on a 4 KiB boundary"));
            }
            if confidential && spec.measure && region.kind != MemoryKind::Private {
                return Err(rule(
                    "measured images go to private memory on a confidential VM",
                ));
            }
            if backend == BackendKind::RiscvCove
                && !spec.measure
                && region.kind == MemoryKind::Private
            {
                return Err(rule(
                    "CoVE measures every private page added before finalize; \
                     use measure = true or shared memory",
                ));
            }
            let private = confidential && region.kind == MemoryKind::Private;
            for (first, earlier) in out.iter().enumerate() {
                let a = (earlier.gpa, earlier.bytes.len() as u64);
                if overlaps(a, (gpa, len)) {
                    return Err(SpecError::ImagesOverlap {
                        first,
                        second: index,
                        what: "",
                    });
                }
                let page = |(g, l): (u64, u64)| {
                    let start = g & !(PAGE_SIZE - 1);
                    (start, (g + l).next_multiple_of(PAGE_SIZE) - start)
                };
                if private && overlaps(page(a), page((gpa, len))) {
                    return Err(SpecError::ImagesOverlap {
                        first,
                        second: index,
                        what: " in a private page (private pages are populated once)",
                    });
                }
            }
            out.push(Image {
                gpa,
                bytes,
                measure: spec.measure,
            });
        }
        Ok(out)
    }

    fn boot(&self, images: &[Image], regions: &[MemoryRegion]) -> Result<VcpuInit, SpecError> {
        let v = &self.vcpus;
        if v.count == 0 {
            return Err(SpecError::Vcpus("count must be at least 1".into()));
        }
        if v.args.len() > 8 {
            return Err(SpecError::Vcpus(format!(
                "{} arguments given, at most 8",
                v.args.len()
            )));
        }
        let entry = match (v.entry, images.first()) {
            (Some(e), _) => e,
            (None, Some(i)) => i.gpa,
            (None, None) => {
                return Err(SpecError::Vcpus(
                    "no entry given and no image to default it to".into(),
                ))
            }
        };
        if !regions.iter().any(|r| r.contains(entry, 1)) {
            return Err(SpecError::Vcpus(format!(
                "entry {entry:#x} is outside every memory region"
            )));
        }
        Ok(VcpuInit::boot(entry, &v.args))
    }

    fn devices(&self, regions: &[MemoryRegion], bits: u8) -> Result<Devices, SpecError> {
        let d = &self.devices;
        let mut ranges: Vec<(&'static str, u64, u64)> = Vec::new();
        if let Some(u) = &d.uart {
            ranges.push(("uart", u.base, UART_SIZE));
        }
        if let Some(b) = &d.doorbell {
            if b.base % PAGE_SIZE != 0 {
                return Err(SpecError::Device {
                    device: "doorbell",
                    base: b.base,
                    reason: "the doorbell page is 4 KiB aligned".into(),
                });
            }
            ranges.push(("doorbell", b.base, DOORBELL_SIZE));
        }
        if let Some(t) = &d.test_device {
            if t.size == 0 {
                return Err(SpecError::Device {
                    device: "test_device",
                    base: t.base,
                    reason: "size is zero".into(),
                });
            }
            if let Some([offset, _]) = t.reads.iter().find(|[o, _]| *o >= t.size) {
                return Err(SpecError::Device {
                    device: "test_device",
                    base: t.base,
                    reason: format!("read offset {offset:#x} is beyond its size {:#x}", t.size),
                });
            }
            ranges.push(("test_device", t.base, t.size));
        }
        for (i, &(device, base, size)) in ranges.iter().enumerate() {
            let err = |reason: String| SpecError::Device {
                device,
                base,
                reason,
            };
            let end = base
                .checked_add(size)
                .ok_or_else(|| err("the range overflows".into()))?;
            if u128::from(end) > 1u128 << bits {
                return Err(err(format!("beyond the {bits}-bit device address space")));
            }
            if let Some(r) = regions
                .iter()
                .find(|r| overlaps((r.gpa, r.size), (base, size)))
            {
                return Err(err(format!("overlaps the memory region at {:#x}", r.gpa)));
            }
            if let Some((other, ..)) = ranges[..i]
                .iter()
                .find(|(_, b, s)| overlaps((*b, *s), (base, size)))
            {
                return Err(err(format!("overlaps the {other}")));
            }
        }
        Ok(Devices {
            uart: d.uart.as_ref().map(|u| u.base),
            doorbell: d.doorbell.as_ref().map(|b| b.base),
            test_device: d.test_device.clone(),
        })
    }
}

/// Bytes one CCA RTT entry maps at `level` (−1 = the span of a whole starting-level table).
fn cca_span(level: i8) -> u64 {
    if level < 0 {
        crate::cca::model::rtt::map_size(0).saturating_mul(512)
    } else {
        crate::cca::model::rtt::map_size(level)
    }
}

/// The RIPAS descriptors the CCA host flow logs for the private regions, in order: the host's
/// RTT policy (KVM `find_map_level`: the largest aligned block that fits, never above the start
/// level) and the RMM's RTT_INIT_RIPAS (one descriptor per entry at the walk level, stopping at
/// the end of the table), see `backend-arm-cca/src/host.rs`.
fn cca_ripas(s2sz: u8, regions: &[MemoryRegion]) -> Vec<(u64, u64)> {
    let (sl, _) = crate::cca::model::rtt::start_level(s2sz);
    // Tables that exist, by (level, base of the range they cover).
    let mut tables = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for r in regions.iter().filter(|r| r.kind == MemoryKind::Private) {
        let (mut ipa, end) = (r.gpa, r.end());
        while ipa < end {
            let mut level = 3;
            while level > sl {
                let size = cca_span(level - 1);
                if ipa % size != 0 || ipa.checked_add(size).is_none_or(|e| e > end) {
                    break;
                }
                level -= 1;
            }
            for l in sl + 1..=level {
                tables.insert((l, ipa & !(cca_span(l - 1) - 1)));
            }
            let mut walk = sl;
            while walk < 3 && tables.contains(&(walk + 1, ipa & !(cca_span(walk) - 1))) {
                walk += 1;
            }
            let size = cca_span(walk);
            let table_span = cca_span(walk - 1);
            let table_end = (ipa & !(table_span - 1)).saturating_add(table_span);
            let start = ipa;
            while ipa.saturating_add(size) <= end.min(table_end) {
                out.push((ipa, ipa + size));
                ipa += size;
            }
            if ipa == start {
                // Unreachable for validated regions (they are page aligned); never loop.
                break;
            }
        }
    }
    out
}

impl Launch {
    /// Reads and validates a spec file (same as [`LaunchSpec::load`]).
    pub fn from_path(path: &Path) -> Result<Self, SpecError> {
        LaunchSpec::load(path)
    }

    /// The measurement log the backend records when `cvm run` builds this VM, predicted
    /// offline (no VM, no KVM, no model).
    pub fn measurement_log(&self) -> Result<MeasurementLog, SpecError> {
        let private = |gpa: u64| {
            self.regions
                .iter()
                .any(|r| r.kind == MemoryKind::Private && r.contains(gpa, 1))
        };
        match self.backend {
            BackendKind::Kvm => {
                let mut log = crate::kvm::measure::new_log();
                for i in self.images.iter().filter(|i| i.measure) {
                    log.events.push(MeasurementEvent::Load {
                        gpa: i.gpa,
                        content: Content::bytes(i.bytes.clone()),
                    });
                }
                log.events.push(MeasurementEvent::Vcpu {
                    id: 0,
                    pc: self.boot.entry,
                    args: self.boot.args.clone(),
                });
                Ok(log)
            }
            BackendKind::ArmCca => {
                let setup = crate::cca::RealmSetup::from_config(&self.config).map_err(|e| {
                    SpecError::Params {
                        backend: "arm-cca",
                        reason: e.to_string(),
                    }
                })?;
                let mut log = MeasurementLog {
                    algorithm: setup.algorithm,
                    realm: Some(setup.params),
                    events: Vec::new(),
                };
                for (base, top) in cca_ripas(setup.s2sz, &self.regions) {
                    log.events.push(MeasurementEvent::Ripas { base, top });
                }
                // Loads into private memory are buffered and issued at `finalize` in CRM's
                // reference order: measured ones by ascending IPA, the RECs in vCPU order,
                // then the unmeasured ones by ascending IPA; one DATA event per load, from
                // its first page (zero-filled up to the load's offset).
                let data = |measured: bool| {
                    let mut loads: Vec<(u64, Vec<u8>)> = self
                        .images
                        .iter()
                        .filter(|i| i.measure == measured && private(i.gpa))
                        .map(|i| {
                            let first = i.gpa & !(PAGE_SIZE - 1);
                            let mut bytes = vec![0u8; (i.gpa - first) as usize];
                            bytes.extend_from_slice(&i.bytes);
                            (first, bytes)
                        })
                        .collect();
                    loads.sort_by_key(|(first, _)| *first);
                    loads
                        .into_iter()
                        .map(move |(ipa, bytes)| MeasurementEvent::Data {
                            ipa,
                            measured,
                            content: Content::bytes(bytes),
                        })
                };
                log.events.extend(data(true));
                log.events.push(MeasurementEvent::Rec {
                    runnable: true,
                    pc: self.boot.entry,
                    gprs: self.boot.args.clone(),
                });
                for _ in 1..self.config.vcpus {
                    let s = VcpuInit::secondary();
                    log.events.push(MeasurementEvent::Rec {
                        runnable: s.runnable,
                        pc: s.entry,
                        gprs: s.args,
                    });
                }
                log.events.extend(data(false));
                Ok(log)
            }
            BackendKind::RiscvCove => {
                let predict = |e: crate::cove::MeasureError| SpecError::Predict {
                    backend: "riscv-cove",
                    reason: e.to_string(),
                };
                let mut log = MeasurementLog::new(HashAlgorithm::Sha384);
                let mut m = crate::cove::TvmMeasurement::new();
                for i in self.images.iter().filter(|i| i.measure && private(i.gpa)) {
                    for (k, chunk) in i.bytes.chunks(PAGE_SIZE as usize).enumerate() {
                        let mut page = vec![0u8; PAGE_SIZE as usize];
                        page[..chunk.len()].copy_from_slice(chunk);
                        let event = MeasurementEvent::MeasuredPages {
                            gpa: i.gpa + k as u64 * PAGE_SIZE,
                            content: Content::bytes(page),
                        };
                        crate::cove::measure::record(&mut log, &mut m, event).map_err(predict)?;
                    }
                }
                let event = MeasurementEvent::Finalize {
                    entry_pc: self.boot.entry,
                    entry_arg: self.boot.args.get(1).copied().unwrap_or(0),
                };
                crate::cove::measure::record(&mut log, &mut m, event).map_err(predict)?;
                Ok(log)
            }
        }
    }

    /// The measurement `cvm run` reports for this spec (the registers the backend's
    /// `Vm::measurement` returns), computed offline from [`Launch::measurement_log`].
    pub fn measurement(&self) -> Result<Measurement, SpecError> {
        let log = self.measurement_log()?;
        let backend = self.backend.name();
        let predict = |reason: String| SpecError::Predict { backend, reason };
        match self.backend {
            BackendKind::Kvm => {
                crate::kvm::measure::measurement(&log).map_err(|e| predict(e.to_string()))
            }
            BackendKind::ArmCca => {
                let m = crate::cca::replay(&log).map_err(|e| predict(e.to_string()))?;
                // The host reports the RIM only (REMs are the realm's, at run time).
                Ok(Measurement {
                    algorithm: m.algorithm,
                    registers: vec![cvm_core::MeasurementRegister {
                        name: "RIM".into(),
                        value: m.rim,
                    }],
                })
            }
            // The host knows the static registers only (PCR0..3 and the TCI).
            BackendKind::RiscvCove => crate::cove::replay(&log)
                .map(|m| m.to_host_measurement())
                .map_err(|e| predict(e.to_string())),
        }
    }
}

/// A measurement as `cvm measure` prints it: one `NAME hex` line per register.
pub fn format_measurement(m: &Measurement) -> String {
    m.registers
        .iter()
        .map(|r| format!("{} {}\n", r.name, hex::encode(&r.value)))
        .collect()
}

/// The generator of the sample guest images in `examples/specs/` (`hello-<backend>.bin`).
///
/// Each image is the portable program [`hello_program`](samples::hello_program) lowered for
/// one backend's platform with [`layout`](samples::layout). The committed `.bin` files are
/// checked against this generator by `tests/cli.rs` (run it with `CVM_REGENERATE_SAMPLES=1`
/// to rewrite them after a deliberate change).
pub mod samples {
    use cvm_core::guest::{lower, GuestPlatform, Layout, LowerError, Program};
    use cvm_core::HashAlgorithm;

    use super::BackendKind;

    /// The UART base of the samples (the 16550 of QEMU's RISC-V `virt`), on every backend.
    pub const UART_BASE: u64 = 0x1000_0000;
    /// The doorbell of the samples ([`Layout::standard`]'s).
    pub const DOORBELL_BASE: u64 = 0x0900_0000;
    /// The RAM the samples use ([`Layout::STANDARD_RAM_BASE`], 4 MiB).
    pub const RAM_BASE: u64 = Layout::STANDARD_RAM_BASE;
    /// Size of the samples' RAM.
    pub const RAM_SIZE: u64 = Layout::STANDARD_RAM_SIZE;

    /// The layout the samples are lowered at: code at the RAM base, the standard data page and
    /// doorbell, and the UART page as the one device range (CoVE registers it with
    /// COVG_ADD_MMIO_REGION in the prologue).
    pub fn layout() -> Layout {
        Layout {
            devices: vec![(UART_BASE, 0x1000)],
            ..Layout::standard()
        }
    }

    /// Writes `text` byte by byte to the UART's transmit holding register (offset 0) and
    /// powers off.
    pub fn hello_program(text: &str, uart_base: u64) -> Program {
        let mut p = Program::new();
        for b in text.bytes() {
            p.mmio_write(uart_base, 1, u64::from(b));
        }
        p.system_off();
        p
    }

    /// The line a sample prints on `backend`.
    pub fn hello_text(backend: BackendKind) -> String {
        format!("hello from {}\n", backend.name())
    }

    /// The platform the sample image for `backend` is lowered for: x86-64 plain KVM (neither
    /// RDRAND nor VMCALL needed), a realm with the default 40-bit IPA space, a CoVE TVM.
    pub fn platform(backend: BackendKind) -> Box<dyn GuestPlatform> {
        match backend {
            BackendKind::Kvm => Box::new(crate::kvm::platform::X86Platform {
                rdrand: false,
                hypercalls: false,
            }),
            BackendKind::ArmCca => Box::new(crate::cca::CcaPlatform::new(
                crate::cca::host::DEFAULT_S2SZ,
                HashAlgorithm::Sha256,
            )),
            BackendKind::RiscvCove => Box::new(crate::cove::CovePlatform),
        }
    }

    /// The machine code of `examples/specs/hello-<backend>.bin`.
    pub fn hello_image(backend: BackendKind) -> Result<Vec<u8>, LowerError> {
        let program = hello_program(&hello_text(backend), UART_BASE);
        let image = lower(&program, platform(backend).as_ref(), &layout())?;
        Ok(image.code)
    }

    /// The file name of the sample image for `backend` (`hello-kvm.bin`, `hello-cca.bin`,
    /// `hello-cove.bin`).
    pub fn image_file(backend: BackendKind) -> &'static str {
        match backend {
            BackendKind::Kvm => "hello-kvm.bin",
            BackendKind::ArmCca => "hello-cca.bin",
            BackendKind::RiscvCove => "hello-cove.bin",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CCA: &str = r#"
backend = "arm-cca"
[[memory]]
gpa = 0x8000_0000
size = 0x40_0000
kind = "private"
[[image]]
hex = "1f2003d5"
gpa = 0x8000_0000
[devices.uart]
base = 0x1000_0000
"#;

    fn launch(text: &str) -> Result<Launch, SpecError> {
        LaunchSpec::parse(text, Path::new("t.toml"))?.validate(Path::new("."))
    }

    fn err(text: &str) -> String {
        let e = launch(text).unwrap_err().to_string();
        assert!(!e.contains('\n'), "one line: {e}");
        e
    }

    #[test]
    fn parses_the_example() {
        let l = launch(CCA).unwrap();
        assert_eq!(l.backend, BackendKind::ArmCca);
        assert_eq!(
            l.regions,
            vec![MemoryRegion::private(0x8000_0000, 0x40_0000)]
        );
        assert_eq!(l.images[0].bytes, vec![0x1f, 0x20, 0x03, 0xd5]);
        assert_eq!(l.boot, VcpuInit::boot(0x8000_0000, &[]));
        assert_eq!(l.devices.uart, Some(0x1000_0000));
        assert_eq!(l.config.measurement, Some(HashAlgorithm::Sha256));
    }

    #[test]
    fn validation_errors_are_typed_one_liners() {
        let e = err(&CCA.replace("arm-cca", "xen"));
        assert!(e.contains("unknown backend \"xen\""), "{e}");
        let e = err(&format!(
            "{CCA}\n[[memory]]\ngpa = 0x8020_0000\nsize = 0x1000\nkind = \"shared\"\n"
        ));
        assert!(e.contains("overlaps"), "{e}");
        let e = err(&CCA.replace("gpa = 0x8000_0000\n[devices", "gpa = 0x9000_0000\n[devices"));
        assert!(e.contains("outside RAM"), "{e}");
        let e = err(&CCA.replace("hex = \"1f2003d5\"", "path = \"definitely-missing.bin\""));
        assert!(e.contains("definitely-missing.bin"), "{e}");
        let e = err(&format!("{CCA}\nbogus = 1\n"));
        assert!(e.contains("bogus") && e.starts_with("t.toml:"), "{e}");
        let e = err(&format!("{CCA}\n[cove]\n"));
        assert!(e.contains("[cove]"), "{e}");
        let e = err(&CCA.replace("size = 0x40_0000", "size = 0x40_0001"));
        assert!(e.contains("aligned"), "{e}");
        let e = err(&CCA.replace("base = 0x1000_0000", "base = 0x8000_0000"));
        assert!(e.contains("uart"), "{e}");
        let e = err(&format!("{CCA}\n[cca]\nnum_bps = 1\n"));
        assert!(e.contains("breakpoints"), "{e}");
        let e = err(&format!("{CCA}\n[cca]\nmeasurement = \"sha384\"\n"));
        assert!(e.contains("sha384"), "{e}");
        let e = err(&CCA.replace("kind = \"private\"", "kind = \"shared\""));
        assert!(e.contains("private memory"), "{e}");
        let e = err("backend = \"kvm\"\n");
        assert!(e.contains("no [[memory]]"), "{e}");
        let e = err("backend = \n");
        assert!(e.starts_with("t.toml:1:"), "{e}");
    }

    #[test]
    fn ripas_follows_the_block_policy() {
        // 4 MiB at 2 MiB alignment: two level-2 entries.
        let r = [MemoryRegion::private(0x8000_0000, 0x40_0000)];
        assert_eq!(
            cca_ripas(40, &r),
            vec![(0x8000_0000, 0x8020_0000), (0x8020_0000, 0x8040_0000)]
        );
        // A page, then a 2 MiB-aligned block: level-3 entries up to the block.
        let r = [MemoryRegion::private(0x801f_f000, 0x20_1000)];
        assert_eq!(
            cca_ripas(40, &r),
            vec![(0x801f_f000, 0x8020_0000), (0x8020_0000, 0x8040_0000)]
        );
    }
}
