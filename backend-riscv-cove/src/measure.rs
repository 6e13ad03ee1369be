//! The Salus TVM measurement, as a pure replay of a [`MeasurementLog`].
//!
//! Rules (spec/cove.md §3.2, from Salus `attestation/src/measurement.rs`,
//! `attestation/src/lib.rs`, `src/vm.rs`, `src/vm_pages.rs`):
//!
//! * SHA-384; every register starts as 48 zero bytes (`GenericArray::default()`).
//! * `extend(bytes, address)`: `digest = SHA384(digest || [le64(address)] || bytes)`.
//! * Registers: TCG PCR 0 (platform code, never extended by Salus), 1 (platform config),
//!   2 (TVM pages), 3 (TVM configuration) are static; PCR 17..20 are runtime registers the
//!   guest extends (ATST ExtendMeasurement, 48-byte values).
//! * TVM_ADD_MEASURED_PAGES: per 4 KiB page, in call order, extend PCR2 with
//!   `le64(gpa) || page bytes` (`MeasuredPagesMapper::map_page`); host addresses are not
//!   measured.
//! * FINALIZE_TVM: extend PCR3 with `le64(entry_pc)`, then with `le64(entry_arg)`; static
//!   registers are then locked.
//! * Attestation TCI = `SHA384(PCR0 || PCR1 || PCR2 || PCR3)`.
//!
//! The TSM model ([`crate::model`]) builds each TVM's measurement by appending events to a log
//! and applying them with [`TvmMeasurement::apply`], the same code [`replay`] runs, so an
//! offline prediction and a launch agree by construction.

use std::path::Path;

use cvm_core::{
    Content, HashAlgorithm, LogError, Measurement, MeasurementEvent, MeasurementLog,
    MeasurementRegister,
};
use sha2::{Digest, Sha384};

/// Length of every register (SHA-384).
pub const MEASUREMENT_LEN: usize = 48;
/// Page size of measured pages.
const PAGE: usize = 4096;
/// The TCG PCR index of each register, in Salus' array order (`TVM_MSMT_REGISTERS`).
pub const PCR_INDICES: [u8; 8] = [0, 1, 2, 3, 17, 18, 19, 20];
/// The static registers (TCG PCR 0..3): everything the host measures, locked at FINALIZE.
/// These (and the TCI over them) are the only registers a host can know: COVH has no call
/// that reads a TVM's registers, and the runtime PCRs 17..20 change only through the guest's
/// own ATST ExtendMeasurement.
pub const STATIC_PCRS: [u8; 4] = [0, 1, 2, 3];
/// PCR holding the TVM pages.
pub const PCR_TVM_PAGES: u8 = 2;
/// PCR holding the TVM configuration (entry pc and argument).
pub const PCR_TVM_CONFIG: u8 = 3;

/// Whether `pcr` is a guest-extensible runtime register (17..=20).
pub fn is_runtime_pcr(pcr: u8) -> bool {
    (17..=20).contains(&pcr)
}

/// A register value.
pub type Digest384 = [u8; MEASUREMENT_LEN];

/// Why a log cannot be replayed (each a rule of spec/cove.md §1.2 / §3.2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeasureError {
    /// CoVE measurements are SHA-384 only (Salus `AttestationSha384`).
    #[error("CoVE (Salus) measurements use sha384, not {0}")]
    Algorithm(&'static str),
    /// The log carries CCA realm parameters.
    #[error("the log has CCA realm parameters; CoVE logs have none")]
    RealmParams,
    /// An event of another architecture.
    #[error(
        "event {index}: {kind} is not a CoVE event (expected measured_pages, finalize or extend)"
    )]
    ForeignEvent {
        /// Event index.
        index: usize,
        /// The event's kind.
        kind: &'static str,
    },
    /// measured_pages at a GPA that is not 4 KiB aligned.
    #[error("event {index}: measured_pages gpa {gpa:#x} is not 4 KiB aligned")]
    Misaligned {
        /// Event index.
        index: usize,
        /// The GPA.
        gpa: u64,
    },
    /// measured_pages with no bytes.
    #[error("event {index}: measured_pages has no bytes")]
    Empty {
        /// Event index.
        index: usize,
    },
    /// measured_pages running past the top of the address space.
    #[error("event {index}: measured_pages at {gpa:#x} runs past the end of the address space")]
    Overflow {
        /// Event index.
        index: usize,
        /// The GPA.
        gpa: u64,
    },
    /// Content given as a file that was not inlined.
    #[error("event {index}: file content was not resolved (read the log with MeasurementLog::from_path)")]
    Unresolved {
        /// Event index.
        index: usize,
    },
    /// An event that needs an initializing TVM after FINALIZE.
    #[error("event {index}: {kind} after finalize (the TVM is no longer initializing)")]
    AfterFinalize {
        /// Event index.
        index: usize,
        /// The event's kind.
        kind: &'static str,
    },
    /// Extend of a register that is not a runtime PCR.
    #[error("event {index}: extend index {pcr} is not a runtime PCR (17..=20)")]
    NotRuntime {
        /// Event index.
        index: usize,
        /// The index given.
        pcr: u8,
    },
    /// Extend value of the wrong length (ATST ExtendMeasurement: len must equal 48).
    #[error("event {index}: extend value is {len} bytes, must be 48")]
    ExtendLength {
        /// Event index.
        index: usize,
        /// The length given.
        len: usize,
    },
}

/// A TVM's measurement registers (Salus `AttestationManager<Sha384>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TvmMeasurement {
    regs: [Digest384; 8],
    finalized: bool,
}

impl Default for TvmMeasurement {
    fn default() -> Self {
        Self::new()
    }
}

fn slot(pcr: u8) -> Option<usize> {
    PCR_INDICES.iter().position(|&p| p == pcr)
}

impl TvmMeasurement {
    /// All registers 48 zero bytes, not finalized.
    pub fn new() -> Self {
        Self {
            regs: [[0; MEASUREMENT_LEN]; 8],
            finalized: false,
        }
    }

    /// Whether FINALIZE has been measured (static registers locked).
    pub fn is_finalized(&self) -> bool {
        self.finalized
    }

    /// The register with TCG PCR index `pcr`.
    pub fn register(&self, pcr: u8) -> Option<&Digest384> {
        slot(pcr).and_then(|i| self.regs.get(i))
    }

    /// `MeasurementRegister::extend` (Salus `attestation/src/measurement.rs`).
    fn extend(&mut self, pcr: u8, address: Option<u64>, bytes: &[u8]) {
        if let Some(r) = slot(pcr).and_then(|i| self.regs.get_mut(i)) {
            let mut h = Sha384::new();
            h.update(&r[..]);
            if let Some(a) = address {
                h.update(a.to_le_bytes());
            }
            h.update(bytes);
            r.copy_from_slice(&h.finalize());
        }
    }

    /// The attestation TCI: `SHA384(PCR0 || PCR1 || PCR2 || PCR3)` (Salus
    /// `AttestationManager::finalize`, static register digests in fwid order).
    pub fn tci(&self) -> Digest384 {
        let mut h = Sha384::new();
        for r in &self.regs[..4] {
            h.update(r);
        }
        let mut out = [0; MEASUREMENT_LEN];
        out.copy_from_slice(&h.finalize());
        out
    }

    /// Applies event `index` of a log. The model and [`replay`] both call this.
    pub fn apply(&mut self, index: usize, event: &MeasurementEvent) -> Result<(), MeasureError> {
        match event {
            MeasurementEvent::MeasuredPages { gpa, content } => {
                let bytes = content
                    .as_bytes()
                    .ok_or(MeasureError::Unresolved { index })?;
                if self.finalized {
                    return Err(MeasureError::AfterFinalize {
                        index,
                        kind: "measured_pages",
                    });
                }
                if gpa % PAGE as u64 != 0 {
                    return Err(MeasureError::Misaligned { index, gpa: *gpa });
                }
                if bytes.is_empty() {
                    return Err(MeasureError::Empty { index });
                }
                let pages = bytes.len().div_ceil(PAGE) as u64;
                if gpa.checked_add(pages * PAGE as u64 - 1).is_none() {
                    return Err(MeasureError::Overflow { index, gpa: *gpa });
                }
                // A file covers ceil(len / 4096) pages, the last zero-padded; each page is
                // extended separately, in order (Salus `MeasuredPagesMapper::map_page`).
                let mut page = [0u8; PAGE];
                for (i, chunk) in bytes.chunks(PAGE).enumerate() {
                    page.fill(0);
                    page[..chunk.len()].copy_from_slice(chunk);
                    self.extend(PCR_TVM_PAGES, Some(gpa + (i * PAGE) as u64), &page);
                }
                Ok(())
            }
            MeasurementEvent::Finalize {
                entry_pc,
                entry_arg,
            } => {
                if self.finalized {
                    return Err(MeasureError::AfterFinalize {
                        index,
                        kind: "finalize",
                    });
                }
                // Salus `Vm::finalize`: set_epc then set_arg, each an extend of PCR3 without
                // an address.
                self.extend(PCR_TVM_CONFIG, None, &entry_pc.to_le_bytes());
                self.extend(PCR_TVM_CONFIG, None, &entry_arg.to_le_bytes());
                self.finalized = true;
                Ok(())
            }
            MeasurementEvent::Extend {
                index: pcr,
                content,
            } => {
                let bytes = content
                    .as_bytes()
                    .ok_or(MeasureError::Unresolved { index })?;
                if !is_runtime_pcr(*pcr) {
                    return Err(MeasureError::NotRuntime { index, pcr: *pcr });
                }
                // sbi-rs `src/attestation.rs` ExtendMeasurement: len must equal 48.
                if bytes.len() != MEASUREMENT_LEN {
                    return Err(MeasureError::ExtendLength {
                        index,
                        len: bytes.len(),
                    });
                }
                self.extend(*pcr, None, bytes);
                Ok(())
            }
            other => Err(MeasureError::ForeignEvent {
                index,
                kind: other.name(),
            }),
        }
    }

    /// The registers a host can know, as cvm-core registers: `PCR0`..`PCR3` then `TCI`
    /// ([`STATIC_PCRS`]). This is what `Vm::measurement` returns on CoVE: the runtime PCRs
    /// 17..20 are left out rather than shown as the zeros a host-side replay would give.
    pub fn to_host_measurement(&self) -> Measurement {
        let mut m = self.to_measurement();
        m.registers
            .retain(|r| r.name == "TCI" || STATIC_PCRS.iter().any(|p| r.name == format!("PCR{p}")));
        m
    }

    /// Every register, as cvm-core registers: `PCR0`, `PCR1`, `PCR2`, `PCR3`,
    /// `PCR17`..`PCR20`, then `TCI` (the TSM's view, or a verifier's replay of a log that
    /// includes the guest's runtime extends).
    pub fn to_measurement(&self) -> Measurement {
        let mut registers: Vec<MeasurementRegister> = PCR_INDICES
            .iter()
            .zip(self.regs.iter())
            .map(|(p, r)| MeasurementRegister {
                name: format!("PCR{p}"),
                value: r.to_vec(),
            })
            .collect();
        registers.push(MeasurementRegister {
            name: "TCI".into(),
            value: self.tci().to_vec(),
        });
        Measurement {
            algorithm: HashAlgorithm::Sha384,
            registers,
        }
    }
}

/// Replays a CoVE measurement log (pure: no model, no TSM).
pub fn replay(log: &MeasurementLog) -> Result<TvmMeasurement, MeasureError> {
    if log.algorithm != HashAlgorithm::Sha384 {
        return Err(MeasureError::Algorithm(log.algorithm.name()));
    }
    if log.realm.is_some() {
        return Err(MeasureError::RealmParams);
    }
    let mut m = TvmMeasurement::new();
    for (i, e) in log.events.iter().enumerate() {
        m.apply(i, e)?;
    }
    Ok(m)
}

/// Appends `event` to `log` and applies it to `m`, coalescing a `measured_pages` event that
/// directly follows the previous one (whole pages) so logs stay short. Coalescing does not
/// change the replay: pages are extended one by one either way.
pub fn record(
    log: &mut MeasurementLog,
    m: &mut TvmMeasurement,
    event: MeasurementEvent,
) -> Result<(), MeasureError> {
    m.apply(log.events.len(), &event)?;
    if let (
        Some(MeasurementEvent::MeasuredPages {
            gpa: prev_gpa,
            content: Content::Hex { hex: prev },
        }),
        MeasurementEvent::MeasuredPages {
            gpa,
            content: Content::Hex { hex },
        },
    ) = (log.events.last_mut(), &event)
    {
        if prev.len() % PAGE == 0 && prev_gpa.checked_add(prev.len() as u64) == Some(*gpa) {
            prev.extend_from_slice(hex);
            return Ok(());
        }
    }
    log.events.push(event);
    Ok(())
}

/// Why `cvm measure cove` failed.
#[derive(Debug, thiserror::Error)]
pub enum MeasureCliError {
    /// The log could not be read or parsed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The log breaks a CoVE rule.
    #[error("{path}: {source}")]
    Measure {
        /// The log file.
        path: String,
        /// The rule broken.
        #[source]
        source: MeasureError,
    },
    /// JSON output failed.
    #[error("cannot write JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// `cvm measure cove [--json] LOG.json`: reads the log (inlining files relative to it),
/// replays it and returns the output text: one line per register `PCR<n> <hex>` (n = TCG PCR
/// index 0, 1, 2, 3, 17, 18, 19, 20), then `TCI <hex>`; with `json`, the whole
/// [`Measurement`] as pretty JSON. Every failure is one error value, never a panic.
pub fn measure_log_cli(path: &Path, json: bool) -> Result<String, MeasureCliError> {
    let log = MeasurementLog::from_path(path)?;
    let m = replay(&log).map_err(|source| MeasureCliError::Measure {
        path: path.display().to_string(),
        source,
    })?;
    let measurement = m.to_measurement();
    if json {
        let mut s = serde_json::to_string_pretty(&measurement)?;
        s.push('\n');
        return Ok(s);
    }
    let mut out = String::new();
    for r in &measurement.registers {
        out.push_str(&r.name);
        out.push(' ');
        out.push_str(&hex::encode(&r.value));
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha384(parts: &[&[u8]]) -> Digest384 {
        let mut h = Sha384::new();
        for p in parts {
            h.update(p);
        }
        let mut o = [0; 48];
        o.copy_from_slice(&h.finalize());
        o
    }

    fn log(events: Vec<MeasurementEvent>) -> MeasurementLog {
        MeasurementLog {
            algorithm: HashAlgorithm::Sha384,
            realm: None,
            events,
        }
    }

    fn pages(gpa: u64, bytes: &[u8]) -> MeasurementEvent {
        MeasurementEvent::MeasuredPages {
            gpa,
            content: Content::bytes(bytes.to_vec()),
        }
    }

    #[test]
    fn empty_log_is_all_zero_and_tci_of_zeros() {
        let m = replay(&log(vec![])).unwrap();
        for p in PCR_INDICES {
            assert_eq!(m.register(p).unwrap(), &[0u8; 48]);
        }
        assert_eq!(m.tci(), sha384(&[&[0u8; 48 * 4]]));
    }

    #[test]
    fn measured_pages_extend_pcr2_page_by_page_with_padding() {
        // 4097 bytes = two pages, the second zero-padded.
        let mut data = vec![0xA5u8; 4097];
        data[4096] = 0x5A;
        let m = replay(&log(vec![pages(0x8000_0000, &data)])).unwrap();
        let mut p1 = [0u8; 4096];
        p1.fill(0xA5);
        let mut p2 = [0u8; 4096];
        p2[0] = 0x5A;
        let r1 = sha384(&[&[0; 48], &0x8000_0000u64.to_le_bytes(), &p1]);
        let r2 = sha384(&[&r1, &0x8000_1000u64.to_le_bytes(), &p2]);
        assert_eq!(m.register(2).unwrap(), &r2);
        assert_eq!(m.register(3).unwrap(), &[0; 48]);
        // Splitting the same pages into two events changes nothing; order does.
        let split = replay(&log(vec![
            pages(0x8000_0000, &data[..4096]),
            pages(0x8000_1000, &data[4096..]),
        ]))
        .unwrap();
        assert_eq!(split, m);
        let swapped = replay(&log(vec![
            pages(0x8000_1000, &data[4096..]),
            pages(0x8000_0000, &data[..4096]),
        ]))
        .unwrap();
        assert_ne!(swapped.register(2), m.register(2));
    }

    #[test]
    fn finalize_extends_pcr3_with_pc_then_arg_and_extend_runtime() {
        let v = [7u8; 48];
        let m = replay(&log(vec![
            MeasurementEvent::Finalize {
                entry_pc: 0x8000_0000,
                entry_arg: 0x8220_0000,
            },
            MeasurementEvent::Extend {
                index: 18,
                content: Content::bytes(v.to_vec()),
            },
        ]))
        .unwrap();
        let a = sha384(&[&[0; 48], &0x8000_0000u64.to_le_bytes()]);
        let b = sha384(&[&a, &0x8220_0000u64.to_le_bytes()]);
        assert_eq!(m.register(3).unwrap(), &b);
        assert_eq!(m.register(18).unwrap(), &sha384(&[&[0; 48], &v]));
        assert_eq!(m.register(17).unwrap(), &[0; 48]);
        let tci = sha384(&[&[0; 48], &[0; 48], &[0; 48], &b]);
        assert_eq!(m.tci(), tci);
        assert!(m.is_finalized());
    }

    #[test]
    fn bad_logs_are_errors() {
        let fin = MeasurementEvent::Finalize {
            entry_pc: 0,
            entry_arg: 0,
        };
        let mut l = log(vec![]);
        l.algorithm = HashAlgorithm::Sha256;
        assert_eq!(replay(&l), Err(MeasureError::Algorithm("sha256")));
        assert!(matches!(
            replay(&log(vec![pages(0x8000_0800, &[1])])),
            Err(MeasureError::Misaligned { .. })
        ));
        assert!(matches!(
            replay(&log(vec![fin.clone(), pages(0x8000_0000, &[1])])),
            Err(MeasureError::AfterFinalize { index: 1, .. })
        ));
        assert!(matches!(
            replay(&log(vec![fin.clone(), fin.clone()])),
            Err(MeasureError::AfterFinalize { index: 1, .. })
        ));
        assert!(matches!(
            replay(&log(vec![MeasurementEvent::Extend {
                index: 2,
                content: Content::bytes(vec![0; 48])
            }])),
            Err(MeasureError::NotRuntime { pcr: 2, .. })
        ));
        assert!(matches!(
            replay(&log(vec![MeasurementEvent::Extend {
                index: 17,
                content: Content::bytes(vec![0; 47])
            }])),
            Err(MeasureError::ExtendLength { len: 47, .. })
        ));
        assert!(matches!(
            replay(&log(vec![MeasurementEvent::Load {
                gpa: 0,
                content: Content::bytes(vec![0])
            }])),
            Err(MeasureError::ForeignEvent { .. })
        ));
        assert!(matches!(
            replay(&log(vec![pages(0, &[])])),
            Err(MeasureError::Empty { .. })
        ));
        assert!(matches!(
            replay(&log(vec![pages(!0xfff, &[0; 8192])])),
            Err(MeasureError::Overflow { .. })
        ));
    }

    #[test]
    fn record_coalesces_without_changing_the_digest() {
        let mut l = log(vec![]);
        let mut m = TvmMeasurement::new();
        record(&mut l, &mut m, pages(0x1000, &[1; 4096])).unwrap();
        record(&mut l, &mut m, pages(0x2000, &[2; 4096])).unwrap();
        record(&mut l, &mut m, pages(0x5000, &[3; 4096])).unwrap();
        assert_eq!(l.events.len(), 2);
        assert_eq!(replay(&l).unwrap(), m);
    }

    #[test]
    fn cli_text_json_and_errors() {
        let dir = std::env::temp_dir().join(format!("cvm-cove-measure-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("image.bin"), [0x13u8, 0, 0, 0]).unwrap();
        let good = dir.join("good.json");
        std::fs::write(
            &good,
            format!(
                r#"{{"algorithm":"sha384","events":[{{"measured_pages":{{"gpa":"0x80000000","file":"image.bin"}}}},{{"finalize":{{"entry_pc":"0x80000000","entry_arg":"0x82200000"}}}},{{"extend":{{"index":17,"hex":"{}"}}}}]}}"#,
                "ab".repeat(48)
            ),
        )
        .unwrap();
        let text = measure_log_cli(&good, false).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 9);
        let names: Vec<&str> = lines.iter().map(|l| l.split(' ').next().unwrap()).collect();
        assert_eq!(
            names,
            ["PCR0", "PCR1", "PCR2", "PCR3", "PCR17", "PCR18", "PCR19", "PCR20", "TCI"]
        );
        let mut page = [0u8; 4096];
        page[0] = 0x13;
        let pcr2 = sha384(&[&[0; 48], &0x8000_0000u64.to_le_bytes(), &page]);
        assert_eq!(lines[2], format!("PCR2 {}", hex::encode(pcr2)));
        let json = measure_log_cli(&good, true).unwrap();
        let back: Measurement = serde_json::from_str(&json).unwrap();
        assert_eq!(back.registers.len(), 9);

        for (name, body) in [
            ("alg", r#"{"algorithm":"sha256","events":[]}"#.to_string()),
            (
                "mis",
                r#"{"algorithm":"sha384","events":[{"measured_pages":{"gpa":"0x80000004","hex":"00"}}]}"#
                    .into(),
            ),
            (
                "missing",
                r#"{"algorithm":"sha384","events":[{"measured_pages":{"gpa":"0x80000000","file":"nope.bin"}}]}"#
                    .into(),
            ),
            (
                "idx",
                format!(
                    r#"{{"algorithm":"sha384","events":[{{"extend":{{"index":4,"hex":"{}"}}}}]}}"#,
                    "00".repeat(48)
                ),
            ),
            (
                "twice",
                r#"{"algorithm":"sha384","events":[{"finalize":{"entry_pc":0,"entry_arg":0}},{"finalize":{"entry_pc":0,"entry_arg":0}}]}"#
                    .into(),
            ),
            ("garbage", "{".into()),
        ] {
            let p = dir.join(format!("{name}.json"));
            std::fs::write(&p, body).unwrap();
            let e = measure_log_cli(&p, false).unwrap_err().to_string();
            assert!(!e.contains('\n'), "{name}: one line: {e}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
