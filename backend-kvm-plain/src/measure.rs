//! The plain-KVM software launch digest, for parity with the confidential backends.
//!
//! **Not hardware-rooted.** Plain KVM has no firmware that measures anything: the host process
//! computes this digest over what it loaded, and the guest cannot read it. It exists so that a
//! test or a VMM can compare "what was launched" the same way on every backend, and so that
//! `cvm measure` can predict it offline from a [`MeasurementLog`].
//!
//! The log holds, in call order, one [`MeasurementEvent::Load`] per measured `load` and one
//! [`MeasurementEvent::Vcpu`] for vCPU 0's entry state. The digest, reported as register
//! `LAUNCH`, is a SHA-256 hash chain:
//!
//! ```text
//! D_0     = 32 zero bytes
//! D_(i+1) = SHA-256(D_i || enc(event_i))
//! LAUNCH  = D_n
//!
//! enc(Load { gpa, bytes })    = 0x01 || le64(gpa) || le64(len(bytes)) || bytes
//! enc(Vcpu { id, pc, args })  = 0x02 || le32(id) || le64(pc) || le32(len(args)) || le64(arg)...
//! ```
//!
//! The leading byte is the event tag; all integers are little-endian. Any other event kind, an
//! unresolved `file` content, or an algorithm other than SHA-256 is an error.

use cvm_core::{
    Error, HashAlgorithm, Measurement, MeasurementEvent, MeasurementLog, MeasurementRegister,
    Result,
};
use sha2::{Digest, Sha256};

/// The name of the one register this backend reports.
pub const LAUNCH_REGISTER: &str = "LAUNCH";
/// Tag byte of a `Load` event in the digest encoding.
pub const TAG_LOAD: u8 = 0x01;
/// Tag byte of a `Vcpu` event in the digest encoding.
pub const TAG_VCPU: u8 = 0x02;

/// An empty plain-KVM log.
pub fn new_log() -> MeasurementLog {
    MeasurementLog {
        algorithm: HashAlgorithm::Sha256,
        realm: None,
        events: Vec::new(),
    }
}

/// The software launch digest of `log` (see the module docs for the exact chain). Pure: no KVM.
pub fn launch_digest(log: &MeasurementLog) -> Result<Vec<u8>> {
    if log.algorithm != HashAlgorithm::Sha256 {
        return Err(Error::InvalidArgument(format!(
            "the plain-KVM launch digest is SHA-256, the log says {}",
            log.algorithm.name()
        )));
    }
    if log.realm.is_some() {
        return Err(Error::InvalidArgument(
            "a plain-KVM log has no CCA realm parameters".into(),
        ));
    }
    let mut d = [0u8; 32];
    for (i, event) in log.events.iter().enumerate() {
        let mut h = Sha256::new();
        h.update(d);
        match event {
            MeasurementEvent::Load { gpa, content } => {
                let bytes = content.as_bytes().ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "event {i}: file content must be resolved before measuring"
                    ))
                })?;
                h.update([TAG_LOAD]);
                h.update(gpa.to_le_bytes());
                h.update((bytes.len() as u64).to_le_bytes());
                h.update(bytes);
            }
            MeasurementEvent::Vcpu { id, pc, args } => {
                let n = u32::try_from(args.len()).map_err(|_| {
                    Error::InvalidArgument(format!("event {i}: too many vCPU arguments"))
                })?;
                h.update([TAG_VCPU]);
                h.update(id.to_le_bytes());
                h.update(pc.to_le_bytes());
                h.update(n.to_le_bytes());
                for a in args {
                    h.update(a.to_le_bytes());
                }
            }
            other => {
                return Err(Error::InvalidArgument(format!(
                    "event {i} ({}) is not a plain-KVM event (only load and vcpu are)",
                    other.name()
                )))
            }
        }
        d = h.finalize().into();
    }
    Ok(d.to_vec())
}

/// The measurement of `log`: one register, `LAUNCH`.
pub fn measurement(log: &MeasurementLog) -> Result<Measurement> {
    Ok(Measurement {
        algorithm: HashAlgorithm::Sha256,
        registers: vec![MeasurementRegister {
            name: LAUNCH_REGISTER.into(),
            value: launch_digest(log)?,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cvm_core::Content;

    #[test]
    fn empty_log_is_zero() {
        assert_eq!(launch_digest(&new_log()).unwrap(), vec![0u8; 32]);
    }

    #[test]
    fn chain_matches_hand_computation() {
        let mut log = new_log();
        log.events.push(MeasurementEvent::Load {
            gpa: 0x1000,
            content: Content::bytes(vec![0xf4]),
        });
        log.events.push(MeasurementEvent::Vcpu {
            id: 0,
            pc: 0x1000,
            args: vec![7],
        });
        let mut e1 = vec![TAG_LOAD];
        e1.extend(0x1000u64.to_le_bytes());
        e1.extend(1u64.to_le_bytes());
        e1.push(0xf4);
        let d1: [u8; 32] = Sha256::new()
            .chain_update([0u8; 32])
            .chain_update(&e1)
            .finalize()
            .into();
        let mut e2 = vec![TAG_VCPU];
        e2.extend(0u32.to_le_bytes());
        e2.extend(0x1000u64.to_le_bytes());
        e2.extend(1u32.to_le_bytes());
        e2.extend(7u64.to_le_bytes());
        let d2: [u8; 32] = Sha256::new()
            .chain_update(d1)
            .chain_update(&e2)
            .finalize()
            .into();
        assert_eq!(launch_digest(&log).unwrap(), d2.to_vec());
        // Known-answer vector (computed independently with Python's hashlib), so the encoding
        // cannot drift silently.
        assert_eq!(
            hex(&d2),
            "e9c8a372c43eeb5b450f67c6a54499b7b82ced86c6fef8f381ade92a7cdac012"
        );
    }

    #[test]
    fn order_matters_and_foreign_events_fail() {
        let a = MeasurementEvent::Load {
            gpa: 0,
            content: Content::bytes(vec![1]),
        };
        let b = MeasurementEvent::Load {
            gpa: 0x1000,
            content: Content::bytes(vec![2]),
        };
        let mut l1 = new_log();
        l1.events = vec![a.clone(), b.clone()];
        let mut l2 = new_log();
        l2.events = vec![b, a];
        assert_ne!(launch_digest(&l1).unwrap(), launch_digest(&l2).unwrap());

        let mut bad = new_log();
        bad.events.push(MeasurementEvent::Rem {
            index: 1,
            content: Content::bytes(vec![0]),
        });
        assert!(matches!(
            launch_digest(&bad),
            Err(Error::InvalidArgument(_))
        ));
        let mut l384 = new_log();
        l384.algorithm = HashAlgorithm::Sha384;
        assert!(launch_digest(&l384).is_err());
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
