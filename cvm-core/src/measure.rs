//! Launch measurements and the ordered logs that build them.
//!
//! A [`MeasurementLog`] is the public, serialisable record of every measured launch event. Each
//! confidential backend has a pure measurer that replays a log; its firmware model runs the same
//! code, so an offline prediction and a launch agree by construction. The JSON form is what
//! `cvm measure` reads: numbers may be integers or `"0x…"` strings, byte strings are hex, and a
//! `file` is read relative to the log.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest;

/// A launch-measurement hash algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HashAlgorithm {
    /// SHA-256 (CCA RmiHashAlgorithm 0; plain KVM's software digest).
    Sha256,
    /// SHA-384 (CoVE/Salus).
    Sha384,
    /// SHA-512 (CCA RmiHashAlgorithm 1).
    Sha512,
}

impl HashAlgorithm {
    /// Digest length in bytes.
    pub fn len(self) -> usize {
        match self {
            HashAlgorithm::Sha256 => 32,
            HashAlgorithm::Sha384 => 48,
            HashAlgorithm::Sha512 => 64,
        }
    }

    /// Never true; present for symmetry with `len`.
    pub fn is_empty(self) -> bool {
        false
    }

    /// Hashes the concatenation of `parts`.
    pub fn digest(self, parts: &[&[u8]]) -> Vec<u8> {
        fn run<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut d = D::new();
            for p in parts {
                d.update(p);
            }
            d.finalize().to_vec()
        }
        match self {
            HashAlgorithm::Sha256 => run::<sha2::Sha256>(parts),
            HashAlgorithm::Sha384 => run::<sha2::Sha384>(parts),
            HashAlgorithm::Sha512 => run::<sha2::Sha512>(parts),
        }
    }

    /// The name used in logs and output (`sha256`, …).
    pub fn name(self) -> &'static str {
        match self {
            HashAlgorithm::Sha256 => "sha256",
            HashAlgorithm::Sha384 => "sha384",
            HashAlgorithm::Sha512 => "sha512",
        }
    }
}

/// One measurement register (RIM, REM1, PCR2, launch digest…).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeasurementRegister {
    /// Its name, e.g. `RIM`, `REM1`, `PCR2`, `TCI`, `LAUNCH`.
    pub name: String,
    /// Its value.
    #[serde(with = "hex_bytes")]
    pub value: Vec<u8>,
}

/// A VM's measurement registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measurement {
    /// The hash algorithm of every register.
    pub algorithm: HashAlgorithm,
    /// The registers, in the architecture's order.
    pub registers: Vec<MeasurementRegister>,
}

impl Measurement {
    /// The register called `name`.
    pub fn register(&self, name: &str) -> Option<&[u8]> {
        self.registers
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.value.as_slice())
    }
}

/// Bytes carried by a log event: inline hex or a file relative to the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Inline bytes.
    Hex {
        /// The bytes, hex encoded.
        #[serde(with = "hex_bytes")]
        hex: Vec<u8>,
    },
    /// A file, relative to the log.
    File {
        /// Its path.
        file: PathBuf,
    },
}

impl Content {
    /// Inline bytes.
    pub fn bytes(bytes: impl Into<Vec<u8>>) -> Self {
        Content::Hex { hex: bytes.into() }
    }

    /// The bytes, if they are inline (after [`MeasurementLog::resolve_files`] they all are).
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Content::Hex { hex } => Some(hex),
            Content::File { .. } => None,
        }
    }
}

/// CCA realm parameters that enter the RIM, in RMI encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealmParamsLog {
    /// RmiRealmFlags (LPA2 bit 0, SVE bit 1, PMU bit 2).
    #[serde(default, with = "hex_or_int")]
    pub flags: u64,
    /// IPA width.
    #[serde(with = "hex_or_int_u8")]
    pub s2sz: u8,
    /// SVE vector length, encoded VQ−1.
    #[serde(default, with = "hex_or_int_u8")]
    pub sve_vl: u8,
    /// Breakpoints, "minus one".
    #[serde(with = "hex_or_int_u8")]
    pub num_bps: u8,
    /// Watchpoints, "minus one".
    #[serde(with = "hex_or_int_u8")]
    pub num_wps: u8,
    /// PMU counters.
    #[serde(default, with = "hex_or_int_u8")]
    pub pmu_num_ctrs: u8,
}

/// One measured launch event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeasurementEvent {
    /// CCA RMI_RTT_INIT_RIPAS: one RIPAS descriptor `[base, top)`.
    Ripas {
        /// Entry base IPA.
        #[serde(with = "hex_or_int")]
        base: u64,
        /// Entry top IPA.
        #[serde(with = "hex_or_int")]
        top: u64,
    },
    /// CCA RMI_DATA_CREATE of one or more granules from `ipa` upward.
    Data {
        /// First granule's IPA.
        #[serde(with = "hex_or_int")]
        ipa: u64,
        /// RMI_MEASURE_CONTENT (true) or RMI_NO_MEASURE_CONTENT.
        measured: bool,
        /// Granule contents (the last granule zero-padded).
        #[serde(flatten)]
        content: Content,
    },
    /// CCA RMI_REC_CREATE.
    Rec {
        /// RmiRecCreateFlags.RUNNABLE.
        runnable: bool,
        /// Entry PC.
        #[serde(with = "hex_or_int")]
        pc: u64,
        /// X0..X7 (missing ones are zero).
        #[serde(default, with = "hex_or_int_vec")]
        gprs: Vec<u64>,
    },
    /// CCA RSI_MEASUREMENT_EXTEND of REM `index` (1..=4).
    Rem {
        /// REM index.
        index: u8,
        /// The extension value (at most 64 bytes).
        #[serde(flatten)]
        content: Content,
    },
    /// CoVE TVM_ADD_MEASURED_PAGES from `gpa` upward.
    MeasuredPages {
        /// First page's GPA.
        #[serde(with = "hex_or_int")]
        gpa: u64,
        /// Page contents (the last page zero-padded).
        #[serde(flatten)]
        content: Content,
    },
    /// CoVE FINALIZE_TVM.
    Finalize {
        /// Boot vCPU entry sepc.
        #[serde(with = "hex_or_int")]
        entry_pc: u64,
        /// Boot vCPU a1.
        #[serde(with = "hex_or_int")]
        entry_arg: u64,
    },
    /// CoVE/ATST runtime extension of TCG PCR `index`.
    Extend {
        /// TCG PCR index.
        index: u8,
        /// The extension value.
        #[serde(flatten)]
        content: Content,
    },
    /// Plain KVM: bytes loaded at `gpa` (software digest only).
    Load {
        /// First byte's GPA.
        #[serde(with = "hex_or_int")]
        gpa: u64,
        /// The bytes.
        #[serde(flatten)]
        content: Content,
    },
    /// Plain KVM: a vCPU's initial entry state (software digest only).
    Vcpu {
        /// vCPU index.
        id: u32,
        /// Entry PC.
        #[serde(with = "hex_or_int")]
        pc: u64,
        /// Entry arguments.
        #[serde(default, with = "hex_or_int_vec")]
        args: Vec<u64>,
    },
}

impl MeasurementEvent {
    /// The event's name as it appears in a log (`ripas`, `data`, `measured_pages`, …).
    pub fn name(&self) -> &'static str {
        match self {
            MeasurementEvent::Ripas { .. } => "ripas",
            MeasurementEvent::Data { .. } => "data",
            MeasurementEvent::Rec { .. } => "rec",
            MeasurementEvent::Rem { .. } => "rem",
            MeasurementEvent::MeasuredPages { .. } => "measured_pages",
            MeasurementEvent::Finalize { .. } => "finalize",
            MeasurementEvent::Extend { .. } => "extend",
            MeasurementEvent::Load { .. } => "load",
            MeasurementEvent::Vcpu { .. } => "vcpu",
        }
    }
}

/// The ordered record of a launch's measured events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasurementLog {
    /// The hash algorithm.
    pub algorithm: HashAlgorithm,
    /// CCA realm parameters (absent for other architectures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realm: Option<RealmParamsLog>,
    /// The events, in order.
    pub events: Vec<MeasurementEvent>,
}

/// Why a log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The log file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The JSON does not match the log format.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// serde's message (with line and column).
        message: String,
    },
    /// The log is well-formed but violates a rule of its architecture.
    #[error("invalid log: {0}")]
    Invalid(String),
}

impl MeasurementLog {
    /// An empty log.
    pub fn new(algorithm: HashAlgorithm) -> Self {
        Self {
            algorithm,
            realm: None,
            events: Vec::new(),
        }
    }

    /// Reads a JSON log and inlines every `file` (relative to the log's directory).
    pub fn from_path(path: &Path) -> Result<Self, LogError> {
        let text = std::fs::read_to_string(path).map_err(|source| LogError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut log: MeasurementLog = serde_json::from_str(&text).map_err(|e| LogError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        log.resolve_files(path.parent().unwrap_or(Path::new(".")))?;
        Ok(log)
    }

    /// Replaces every `file` content with the file's bytes, reading relative to `base`.
    pub fn resolve_files(&mut self, base: &Path) -> Result<(), LogError> {
        for event in &mut self.events {
            let content = match event {
                MeasurementEvent::Data { content, .. }
                | MeasurementEvent::Rem { content, .. }
                | MeasurementEvent::MeasuredPages { content, .. }
                | MeasurementEvent::Extend { content, .. }
                | MeasurementEvent::Load { content, .. } => content,
                _ => continue,
            };
            if let Content::File { file } = content {
                let full = base.join(&*file);
                let bytes = std::fs::read(&full).map_err(|source| LogError::Read {
                    path: full.clone(),
                    source,
                })?;
                *content = Content::Hex { hex: bytes };
            }
        }
        Ok(())
    }
}

/// Serde helpers: byte strings as lowercase hex.
pub mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises bytes as hex.
    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    /// Parses hex (an optional `0x` prefix is accepted).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        let t = s.strip_prefix("0x").unwrap_or(&s);
        hex::decode(t).map_err(|e| serde::de::Error::custom(format!("bad hex string: {e}")))
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum HexOrInt {
    Int(u64),
    Str(String),
}

fn parse_u64<E: serde::de::Error>(v: HexOrInt) -> Result<u64, E> {
    match v {
        HexOrInt::Int(i) => Ok(i),
        HexOrInt::Str(s) => {
            let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                Some(h) => u64::from_str_radix(&h.replace('_', ""), 16),
                None => s.replace('_', "").parse::<u64>(),
            };
            r.map_err(|_| E::custom(format!("not a number: {s:?}")))
        }
    }
}

/// Serde helpers: a u64 given as an integer or a `"0x…"` / decimal string; written as hex.
pub mod hex_or_int {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `"0x…"`.
    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:#x}"))
    }

    /// Reads an integer or a string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        super::parse_u64(super::HexOrInt::deserialize(d)?)
    }
}

/// Serde helpers: a u8 given as an integer or string.
pub mod hex_or_int_u8 {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes an integer.
    pub fn serialize<S: Serializer>(v: &u8, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(*v)
    }

    /// Reads an integer or a string, refusing values above 255.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
        let v = super::parse_u64(super::HexOrInt::deserialize(d)?)?;
        u8::try_from(v).map_err(|_| serde::de::Error::custom(format!("{v} does not fit in 8 bits")))
    }
}

/// Serde helpers: a list of u64 given as integers or strings.
pub mod hex_or_int_vec {
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `["0x…", …]`.
    pub fn serialize<S: Serializer>(v: &[u64], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for x in v {
            seq.serialize_element(&format!("{x:#x}"))?;
        }
        seq.end()
    }

    /// Reads a list of integers or strings.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
        Vec::<super::HexOrInt>::deserialize(d)?
            .into_iter()
            .map(super::parse_u64)
            .collect()
    }
}
