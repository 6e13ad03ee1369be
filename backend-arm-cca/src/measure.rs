//! The pure RIM/REM calculator (spec/cca.md §2), used both by the RMM model and offline.
//!
//! * `RIM0 = H(4096-byte RmiRealmParams holding only flags, s2sz, sve_vl, num_bps, num_wps,
//!   pmu_num_ctrs, hash_algo)` — TF-RMM `lib/measurement/src/rim.c`
//!   `measurement_realm_params_measure`; SPEC B4.3.9.4.
//! * Each extension is `RIM = H(256-byte descriptor embedding the old RIM zero-padded to 64
//!   bytes)` — TF-RMM `measurement_descs.h`; SPEC C1.1.2. DATA (each RMI_DATA_CREATE; content
//!   hash only when flags == RMI_MEASURE_CONTENT exactly), REC (RMI_REC_CREATE, only when
//!   RUNNABLE; TF-RMM `runtime/rmi/rec.c`), RIPAS (each RTT entry RMI_RTT_INIT_RIPAS processes;
//!   TF-RMM `runtime/rmi/rtt.c` `smc_rtt_init_ripas`).
//! * `REM[i] = H(REM[i][..hash_len] || value[..size])`, i in 1..=4, size ≤ 64 — TF-RMM
//!   `runtime/rsi/realm_attest.c`, `lib/measurement/src/measurement.c do_extend`.
//!
//! The model's realm holds a [`Rim`] and [`Rems`]; [`replay`] drives the same types from a
//! [`MeasurementLog`], so an offline prediction equals what the model computes at launch.

use cvm_core::{
    Content, HashAlgorithm, LogError, MeasurementEvent, MeasurementLog, RealmParamsLog,
};
use rayon::prelude::*;
use zerocopy::IntoBytes;

use crate::abi::{
    desc_type, MeasurementDescData, MeasurementDescRec, MeasurementDescRipas, RealmParams,
    RecParams, RmiHashAlgorithm, GRANULE_SIZE, MAX_MEASUREMENT_SIZE, REC_CREATE_NR_GPRS,
    REC_FLAG_RUNNABLE, RMI_MEASURE_CONTENT, RMI_NO_MEASURE_CONTENT,
};

/// A measurement value: 64 bytes of which the first `algorithm.len()` are meaningful; the rest
/// stay zero (RD slots are zero-initialised, spec/cca.md §2.1).
pub type Slot = [u8; MAX_MEASUREMENT_SIZE];

/// Granules above which a `data` event's contents are hashed in parallel.
const PARALLEL_GRANULES: usize = 8;

/// The RMM encoding of a measurement algorithm; CCA supports SHA-256 and SHA-512 only.
pub fn rmi_algorithm(algorithm: HashAlgorithm) -> Option<RmiHashAlgorithm> {
    match algorithm {
        HashAlgorithm::Sha256 => Some(RmiHashAlgorithm::Sha256),
        HashAlgorithm::Sha512 => Some(RmiHashAlgorithm::Sha512),
        HashAlgorithm::Sha384 => None,
    }
}

/// The algorithm of an RmiHashAlgorithm value (0 SHA-256, 1 SHA-512; anything else is invalid).
pub fn algorithm_from_rmi(v: u8) -> Option<HashAlgorithm> {
    match v {
        0 => Some(HashAlgorithm::Sha256),
        1 => Some(HashAlgorithm::Sha512),
        _ => None,
    }
}

fn hash_into(algorithm: HashAlgorithm, parts: &[&[u8]]) -> Slot {
    let mut out = [0u8; MAX_MEASUREMENT_SIZE];
    let d = algorithm.digest(parts);
    let n = d.len().min(MAX_MEASUREMENT_SIZE);
    out[..n].copy_from_slice(&d[..n]);
    out
}

/// Hash of one 4 KiB granule (the content field of a DATA descriptor).
pub fn granule_hash(algorithm: HashAlgorithm, granule: &[u8]) -> Slot {
    hash_into(algorithm, &[granule])
}

/// The measured view of RmiRealmParams: a zero-filled 4096-byte page with only the measured
/// fields (spec/cca.md §2.2).
pub fn measured_realm_params(params: &RealmParamsLog, algorithm: RmiHashAlgorithm) -> RealmParams {
    let mut p = RealmParams::zeroed();
    p.flags = params.flags;
    p.s2sz = params.s2sz;
    p.sve_vl = params.sve_vl;
    p.num_bps = params.num_bps;
    p.num_wps = params.num_wps;
    p.pmu_num_ctrs = params.pmu_num_ctrs;
    p.hash_algo = algorithm as u8;
    p
}

/// A Realm Initial Measurement being built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rim {
    algorithm: HashAlgorithm,
    value: Slot,
}

impl Rim {
    /// RIM0 for `params` (RMI_REALM_CREATE). `None` if the algorithm is not a CCA one.
    pub fn new(algorithm: HashAlgorithm, params: &RealmParamsLog) -> Option<Self> {
        let rmi = rmi_algorithm(algorithm)?;
        let page = measured_realm_params(params, rmi);
        Some(Self {
            algorithm,
            value: hash_into(algorithm, &[page.as_bytes()]),
        })
    }

    /// The algorithm.
    pub fn algorithm(&self) -> HashAlgorithm {
        self.algorithm
    }

    /// The digest (its own length).
    pub fn value(&self) -> &[u8] {
        &self.value[..self.algorithm.len()]
    }

    /// The 64-byte slot (zero-padded).
    pub fn slot(&self) -> &Slot {
        &self.value
    }

    /// RMI_DATA_CREATE of the granule at `ipa` with `flags`, whose content hash is
    /// `content_hash` (used only when `flags == RMI_MEASURE_CONTENT`).
    pub fn extend_data_hashed(&mut self, ipa: u64, flags: u64, content_hash: &Slot) {
        let mut d = MeasurementDescData::zeroed();
        d.desc_type = desc_type::DATA;
        d.len = 0x100;
        d.rim = self.value;
        d.ipa = ipa;
        d.flags = flags;
        // TF-RMM rmi/data.c data_granule_measure: content hashed only for an exact
        // RMI_MEASURE_CONTENT flag; otherwise the field stays zero.
        if flags == RMI_MEASURE_CONTENT {
            d.content = *content_hash;
        }
        self.value = hash_into(self.algorithm, &[d.as_bytes()]);
    }

    /// RMI_DATA_CREATE of `granule` (4096 bytes) at `ipa` with `flags`.
    pub fn extend_data(&mut self, ipa: u64, flags: u64, granule: &[u8]) {
        let h = if flags == RMI_MEASURE_CONTENT {
            granule_hash(self.algorithm, granule)
        } else {
            [0; MAX_MEASUREMENT_SIZE]
        };
        self.extend_data_hashed(ipa, flags, &h);
    }

    /// RMI_REC_CREATE with `flags`, `pc` and `gprs` (X0..X7). Measured only if RUNNABLE
    /// (TF-RMM 1.0 `runtime/rmi/rec.c`); returns whether the RIM changed.
    pub fn extend_rec(&mut self, flags: u64, pc: u64, gprs: &[u64; REC_CREATE_NR_GPRS]) -> bool {
        if flags & REC_FLAG_RUNNABLE == 0 {
            return false;
        }
        // SPEC B4.3.12.4: only flags, pc and gprs of the params enter the hash.
        let mut p = RecParams::zeroed();
        p.flags = flags;
        p.pc = pc;
        p.gprs = *gprs;
        let content = hash_into(self.algorithm, &[p.as_bytes()]);
        let mut d = MeasurementDescRec::zeroed();
        d.desc_type = desc_type::REC;
        d.len = 0x100;
        d.rim = self.value;
        d.content = content;
        self.value = hash_into(self.algorithm, &[d.as_bytes()]);
        true
    }

    /// One RTT entry `[base, top)` processed by RMI_RTT_INIT_RIPAS.
    pub fn extend_ripas(&mut self, base: u64, top: u64) {
        let mut d = MeasurementDescRipas::zeroed();
        d.desc_type = desc_type::RIPAS;
        d.len = 0x100;
        d.rim = self.value;
        d.base = base;
        d.top = top;
        self.value = hash_into(self.algorithm, &[d.as_bytes()]);
    }
}

/// Why a REM extension was refused (RSI_ERROR_INPUT in the RMM).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RemError {
    /// Index outside 1..=4.
    #[error("REM index {0} is outside 1..=4")]
    Index(u64),
    /// More than 64 bytes.
    #[error("REM extension of {0} bytes exceeds 64")]
    Size(u64),
}

/// The four Realm Extensible Measurements (initially zero).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rems {
    algorithm: HashAlgorithm,
    values: [Slot; 4],
}

impl Rems {
    /// Zeroed REMs.
    pub fn new(algorithm: HashAlgorithm) -> Self {
        Self {
            algorithm,
            values: [[0; MAX_MEASUREMENT_SIZE]; 4],
        }
    }

    /// `REM[index] = H(REM[index] || value)` (index 1..=4, value ≤ 64 bytes).
    pub fn extend(&mut self, index: u64, value: &[u8]) -> Result<(), RemError> {
        if !(1..=4).contains(&index) {
            return Err(RemError::Index(index));
        }
        if value.len() > MAX_MEASUREMENT_SIZE {
            return Err(RemError::Size(value.len() as u64));
        }
        let slot = &mut self.values[(index - 1) as usize];
        let len = self.algorithm.len();
        *slot = hash_into(self.algorithm, &[&slot[..len], value]);
        Ok(())
    }

    /// REM `index` (1..=4) as a 64-byte slot.
    pub fn slot(&self, index: usize) -> Option<&Slot> {
        index.checked_sub(1).and_then(|i| self.values.get(i))
    }

    /// REM `index` (1..=4), digest length.
    pub fn value(&self, index: usize) -> Option<&[u8]> {
        self.slot(index).map(|s| &s[..self.algorithm.len()])
    }
}

/// A CCA realm's measurements: the RIM and REM1..REM4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CcaMeasurement {
    /// The algorithm.
    pub algorithm: HashAlgorithm,
    /// The RIM (digest length).
    pub rim: Vec<u8>,
    /// REM1..REM4 (digest length).
    pub rems: [Vec<u8>; 4],
}

impl CcaMeasurement {
    /// As cvm-core registers: `RIM`, `REM1`..`REM4`.
    pub fn to_measurement(&self) -> cvm_core::Measurement {
        let mut registers = vec![cvm_core::MeasurementRegister {
            name: "RIM".into(),
            value: self.rim.clone(),
        }];
        for (i, r) in self.rems.iter().enumerate() {
            registers.push(cvm_core::MeasurementRegister {
                name: format!("REM{}", i + 1),
                value: r.clone(),
            });
        }
        cvm_core::Measurement {
            algorithm: self.algorithm,
            registers,
        }
    }
}

fn invalid(msg: impl Into<String>) -> LogError {
    LogError::Invalid(msg.into())
}

/// The granules of a `data` event: `ceil(len / 4096)` granules, the last zero-padded.
pub fn data_granules(bytes: &[u8]) -> impl Iterator<Item = [u8; GRANULE_SIZE as usize]> + '_ {
    bytes.chunks(GRANULE_SIZE as usize).map(|c| {
        let mut g = [0u8; GRANULE_SIZE as usize];
        g[..c.len()].copy_from_slice(c);
        g
    })
}

/// Content hashes of every granule of `bytes`, in parallel when there are many.
fn content_hashes(algorithm: HashAlgorithm, bytes: &[u8]) -> Vec<Slot> {
    let page = GRANULE_SIZE as usize;
    let hash_chunk = |c: &[u8]| {
        if c.len() == page {
            granule_hash(algorithm, c)
        } else {
            let mut g = vec![0u8; page];
            g[..c.len()].copy_from_slice(c);
            granule_hash(algorithm, &g)
        }
    };
    if bytes.len() / page >= PARALLEL_GRANULES {
        bytes.par_chunks(page).map(hash_chunk).collect()
    } else {
        bytes.chunks(page).map(hash_chunk).collect()
    }
}

/// Replays a CCA measurement log: RIM from REALM_CREATE and the RIPAS/DATA/REC events, REMs from
/// the REM events. Every rule violation is a [`LogError::Invalid`] naming the event.
pub fn replay(log: &MeasurementLog) -> Result<CcaMeasurement, LogError> {
    let algorithm = log.algorithm;
    if rmi_algorithm(algorithm).is_none() {
        return Err(invalid(format!(
            "algorithm {} is not a CCA measurement algorithm (sha256 or sha512)",
            algorithm.name()
        )));
    }
    let params = log
        .realm
        .as_ref()
        .ok_or_else(|| invalid("a CCA log needs the \"realm\" parameters"))?;
    let mut rim =
        Rim::new(algorithm, params).ok_or_else(|| invalid("unsupported measurement algorithm"))?;
    let mut rems = Rems::new(algorithm);
    for (i, event) in log.events.iter().enumerate() {
        let at = |msg: String| invalid(format!("event {i}: {msg}"));
        match event {
            MeasurementEvent::Ripas { base, top } => {
                if base % GRANULE_SIZE != 0 || top % GRANULE_SIZE != 0 || top <= base {
                    return Err(at(format!(
                        "ripas range {base:#x}..{top:#x} is not a non-empty 4 KiB-aligned range"
                    )));
                }
                rim.extend_ripas(*base, *top);
            }
            MeasurementEvent::Data {
                ipa,
                measured,
                content,
            } => {
                if ipa % GRANULE_SIZE != 0 {
                    return Err(at(format!("data ipa {ipa:#x} is not 4 KiB aligned")));
                }
                let bytes = content_bytes(content).map_err(|m| at(m.into()))?;
                if bytes.is_empty() {
                    return Err(at("data event without bytes".into()));
                }
                let flags = if *measured {
                    RMI_MEASURE_CONTENT
                } else {
                    RMI_NO_MEASURE_CONTENT
                };
                let n = bytes.len().div_ceil(GRANULE_SIZE as usize) as u64;
                if ipa.checked_add(n * GRANULE_SIZE).is_none() {
                    return Err(at(
                        "data event runs past the end of the address space".into()
                    ));
                }
                // Content hashes are independent (parallel); the chain itself is sequential.
                let hashes = if *measured {
                    content_hashes(algorithm, bytes)
                } else {
                    vec![[0; MAX_MEASUREMENT_SIZE]; n as usize]
                };
                for (k, h) in hashes.iter().enumerate() {
                    rim.extend_data_hashed(ipa + k as u64 * GRANULE_SIZE, flags, h);
                }
            }
            MeasurementEvent::Rec { runnable, pc, gprs } => {
                if gprs.len() > REC_CREATE_NR_GPRS {
                    return Err(at(format!(
                        "rec has {} gprs, at most {REC_CREATE_NR_GPRS}",
                        gprs.len()
                    )));
                }
                let mut regs = [0u64; REC_CREATE_NR_GPRS];
                regs[..gprs.len()].copy_from_slice(gprs);
                let flags = if *runnable { REC_FLAG_RUNNABLE } else { 0 };
                rim.extend_rec(flags, *pc, &regs);
            }
            MeasurementEvent::Rem { index, content } => {
                let bytes = content_bytes(content).map_err(|m| at(m.into()))?;
                rems.extend(u64::from(*index), bytes)
                    .map_err(|e| at(e.to_string()))?;
            }
            other => {
                return Err(at(format!(
                    "{} events do not belong in a CCA log",
                    other.name()
                )))
            }
        }
    }
    let len = algorithm.len();
    let rem = |i: usize| rems.values[i][..len].to_vec();
    Ok(CcaMeasurement {
        algorithm,
        rim: rim.value().to_vec(),
        rems: [rem(0), rem(1), rem(2), rem(3)],
    })
}

fn content_bytes(content: &Content) -> Result<&[u8], &'static str> {
    content
        .as_bytes()
        .ok_or("the event's file was not read (load the log with MeasurementLog::from_path)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v0() -> RealmParamsLog {
        RealmParamsLog {
            flags: 0,
            s2sz: 48,
            sve_vl: 0,
            num_bps: 1,
            num_wps: 1,
            pmu_num_ctrs: 0,
        }
    }

    #[test]
    fn public_vector_v0_sha256() {
        // spec/cca.md §2.5 V0 (CRM src/realm_config.rs test_rim).
        let rim = Rim::new(HashAlgorithm::Sha256, &v0()).map(|r| hex::encode(r.value()));
        assert_eq!(
            rim.as_deref(),
            Some("6739dfb22b75ee1268d08dfa8369f501bc0b066243553f069f560d1fa1172973")
        );
        let r = Rim::new(HashAlgorithm::Sha256, &v0()).map(|r| *r.slot());
        assert_eq!(r.map(|s| s[32..] == [0u8; 32]), Some(true));
    }

    #[test]
    fn public_vector_v0_sha512() {
        let rim = Rim::new(HashAlgorithm::Sha512, &v0()).map(|r| hex::encode(r.value()));
        assert_eq!(
            rim.as_deref(),
            Some(
                "799e434048fb57eb9d4f0e2a2b98158720377252deab2bdfcd69b5a8f82237f4\
                 34bd6bb1c75bf160a2d49382f733b3439a3ff769e4ea5dd9a6f72239d44bbbab"
            )
        );
    }

    #[test]
    fn replay_of_realm_only_log_is_v0() {
        let mut log = MeasurementLog::new(HashAlgorithm::Sha256);
        log.realm = Some(v0());
        let m = replay(&log).map(|m| hex::encode(m.rim));
        assert_eq!(
            m.ok().as_deref(),
            Some("6739dfb22b75ee1268d08dfa8369f501bc0b066243553f069f560d1fa1172973")
        );
    }

    #[test]
    fn sha384_is_refused() {
        assert!(Rim::new(HashAlgorithm::Sha384, &v0()).is_none());
    }

    #[test]
    fn rec_not_runnable_is_not_measured() {
        let mut a = Rim::new(HashAlgorithm::Sha256, &v0()).into_iter().next();
        let before = a.clone();
        if let Some(r) = a.as_mut() {
            assert!(!r.extend_rec(0, 0x1000, &[0; 8]));
        }
        assert_eq!(a, before);
    }

    #[test]
    fn data_flags_other_than_one_do_not_hash_content() {
        let base = Rim::new(HashAlgorithm::Sha256, &v0());
        let (Some(mut a), Some(mut b)) = (base.clone(), base) else {
            unreachable!()
        };
        a.extend_data(0x1000, 0, &[0xAA; 4096]);
        b.extend_data(0x1000, 0, &[0x55; 4096]);
        assert_eq!(a, b);
    }

    #[test]
    fn parallel_and_sequential_content_hashes_agree() {
        let bytes: Vec<u8> = (0..(20 * 4096 + 17)).map(|i| (i % 251) as u8).collect();
        let par = content_hashes(HashAlgorithm::Sha512, &bytes);
        let seq: Vec<Slot> = data_granules(&bytes)
            .map(|g| granule_hash(HashAlgorithm::Sha512, &g))
            .collect();
        assert_eq!(par, seq);
    }

    #[test]
    fn rem_extension_chains_the_previous_value() {
        let mut r = Rems::new(HashAlgorithm::Sha256);
        assert!(r.extend(1, b"abc").is_ok());
        let first = HashAlgorithm::Sha256.digest(&[&[0u8; 32], b"abc"]);
        assert_eq!(r.value(1), Some(first.as_slice()));
        assert!(r.extend(1, b"def").is_ok());
        let second = HashAlgorithm::Sha256.digest(&[&first, b"def"]);
        assert_eq!(r.value(1), Some(second.as_slice()));
        assert_eq!(r.extend(0, b""), Err(RemError::Index(0)));
        assert_eq!(r.extend(5, b""), Err(RemError::Index(5)));
        assert_eq!(r.extend(2, &[0; 65]), Err(RemError::Size(65)));
    }
}
