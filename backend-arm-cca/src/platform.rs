//! [`GuestPlatform`] for realms: how portable guest programs reach devices, memory conversion,
//! the measurement, entropy, host calls and power-off on Arm CCA.
//!
//! | op | realm code |
//! |---|---|
//! | device access | the device's IPA with the unprotected bit `1 << (s2sz − 1)` set |
//! | share / unshare | `SMC` RSI_IPA_STATE_SET(base, top, EMPTY / RAM, 0); expects X0 = RSI_SUCCESS, X1 = top, X2 = ACCEPT |
//! | read measurement | `SMC` RSI_MEASUREMENT_READ(index); X1..X8 → result words 0..7; digest length per algorithm |
//! | entropy | `MRS Xt, RNDR` (FEAT_RNG; the model answers from its DRBG) |
//! | host call | RsiHostCall block at data page + 0x800 (imm, X0..X5 stored), `SMC` RSI_HOST_CALL(block); result = block.gprs\[0\] |
//! | power off | `SMC` PSCI_SYSTEM_OFF |

use std::sync::atomic::{AtomicU64, Ordering};

use cvm_core::guest::{Conduit, EntropySource, GuestPlatform, Layout, NotSupported, PlatformStep};
use cvm_core::{Arch, HashAlgorithm};

use crate::abi::{psci, rec_idx_to_mpidr, rsi, Ripas};

const NAME: &str = "arm-cca";

/// Offset of the RsiHostCall block in the program's data page (the lowering's platform
/// scratch area, 256-byte aligned as RSI_HOST_CALL requires).
pub const HOST_CALL_BLOCK: u64 = 0x800;

/// The CCA platform of one realm.
#[derive(Debug)]
pub struct CcaPlatform {
    s2sz: u8,
    algorithm: HashAlgorithm,
    data_page: AtomicU64,
}

impl CcaPlatform {
    /// A realm with IPA width `s2sz` measuring with `algorithm`.
    pub fn new(s2sz: u8, algorithm: HashAlgorithm) -> Self {
        Self {
            s2sz,
            algorithm,
            data_page: AtomicU64::new(u64::MAX),
        }
    }

    /// The unprotected-IPA bit.
    pub fn unprotected_bit(&self) -> u64 {
        1u64 << (self.s2sz - 1)
    }

    fn ipa_state_set(&self, gpa: u64, len: u64, ripas: Ripas) -> Vec<PlatformStep> {
        let top = gpa.saturating_add(len);
        vec![
            PlatformStep::Call {
                conduit: Conduit::Smc(0),
                args: vec![
                    (0, rsi::IPA_STATE_SET),
                    (1, gpa),
                    (2, top),
                    (3, ripas as u64),
                    (4, 0),
                ],
            },
            PlatformStep::Expect {
                reg: 0,
                value: rsi::SUCCESS,
            },
            PlatformStep::Expect { reg: 1, value: top },
            PlatformStep::Expect {
                reg: 2,
                value: rsi::ACCEPT,
            },
        ]
    }
}

impl GuestPlatform for CcaPlatform {
    fn name(&self) -> &'static str {
        NAME
    }

    fn arch(&self) -> Arch {
        Arch::Aarch64
    }

    fn device_address(&self, gpa: u64) -> u64 {
        gpa | self.unprotected_bit()
    }

    fn prologue(&self, layout: &Layout) -> Vec<PlatformStep> {
        // Remember the data page: host calls place their RsiHostCall block in it.
        self.data_page.store(layout.data, Ordering::Release);
        Vec::new()
    }

    fn share(&self, gpa: u64, len: u64) -> Result<Vec<PlatformStep>, NotSupported> {
        Ok(self.ipa_state_set(gpa, len, Ripas::Empty))
    }

    fn unshare(&self, gpa: u64, len: u64) -> Result<Vec<PlatformStep>, NotSupported> {
        Ok(self.ipa_state_set(gpa, len, Ripas::Ram))
    }

    fn read_measurement(
        &self,
        index: u8,
        _layout: &Layout,
    ) -> Result<(Vec<PlatformStep>, usize), NotSupported> {
        if index > 4 {
            return Err(NotSupported {
                op: "read_measurement",
                platform: NAME,
                reason: "CCA has the RIM (0) and REM1..REM4 (1..4)",
            });
        }
        let mut steps = vec![
            PlatformStep::Call {
                conduit: Conduit::Smc(0),
                args: vec![(0, rsi::MEASUREMENT_READ), (1, u64::from(index))],
            },
            PlatformStep::Expect {
                reg: 0,
                value: rsi::SUCCESS,
            },
        ];
        steps.extend((0..8u8).map(|w| PlatformStep::Save {
            reg: w + 1,
            result: w,
        }));
        Ok((steps, self.algorithm.len()))
    }

    /// The RIM: RSI_MEASUREMENT_READ index 0 is the Realm Initial Measurement, 1..=4 the REMs
    /// (spec/cca.md §2.1, TF-RMM `runtime/rsi/realm_attest.c`). Same as the default, stated so.
    fn launch_measurement_index(&self) -> u8 {
        0
    }

    fn read_entropy(&self) -> Result<Vec<PlatformStep>, NotSupported> {
        Ok(vec![PlatformStep::Entropy(EntropySource::Rndr)])
    }

    fn host_call(&self, nr: u64, args: &[u64]) -> Result<Vec<PlatformStep>, NotSupported> {
        if args.len() > 6 {
            return Err(NotSupported {
                op: "host_call",
                platform: NAME,
                reason: "at most 6 arguments",
            });
        }
        if nr > u64::from(u16::MAX) {
            return Err(NotSupported {
                op: "host_call",
                platform: NAME,
                reason: "the RSI_HOST_CALL immediate is 16 bits",
            });
        }
        let data = self.data_page.load(Ordering::Acquire);
        if data == u64::MAX {
            return Err(NotSupported {
                op: "host_call",
                platform: NAME,
                reason: "the data page is unknown (prologue not lowered first)",
            });
        }
        let block = data + HOST_CALL_BLOCK;
        let mut steps = vec![PlatformStep::Store {
            gpa: block,
            size: 8,
            value: nr,
        }];
        for i in 0..6 {
            steps.push(PlatformStep::Store {
                gpa: block + 8 + 8 * i as u64,
                size: 8,
                value: args.get(i).copied().unwrap_or(0),
            });
        }
        steps.push(PlatformStep::Call {
            conduit: Conduit::Smc(0),
            args: vec![(0, rsi::HOST_CALL), (1, block)],
        });
        steps.push(PlatformStep::Expect {
            reg: 0,
            value: rsi::SUCCESS,
        });
        steps.push(PlatformStep::LoadResult {
            gpa: block + 8,
            result: 0,
        });
        Ok(steps)
    }

    fn system_off(&self) -> Vec<PlatformStep> {
        vec![PlatformStep::Call {
            conduit: Conduit::Smc(0),
            args: vec![(0, psci::SYSTEM_OFF)],
        }]
    }

    /// PSCI CPU_OFF through the RMM: it forwards the PSCI exit to the host, which maps it to
    /// `VmExit::Halt` and leaves the REC not runnable (TF-RMM `runtime/rsi/psci.c`).
    fn stop_vcpu(&self) -> Result<Vec<PlatformStep>, NotSupported> {
        Ok(vec![PlatformStep::Call {
            conduit: Conduit::Smc(0),
            args: vec![(0, psci::CPU_OFF)],
        }])
    }

    fn start_vcpu(
        &self,
        vcpu: u32,
        entry: u64,
        arg: u64,
    ) -> Result<Vec<PlatformStep>, NotSupported> {
        // PSCI CPU_ON through the RMM; the host completes it with RMI_PSCI_COMPLETE.
        Ok(vec![
            PlatformStep::Call {
                conduit: Conduit::Smc(0),
                args: vec![
                    (0, psci::CPU_ON_64),
                    (1, rec_idx_to_mpidr(u64::from(vcpu))),
                    (2, entry),
                    (3, arg),
                ],
            },
            PlatformStep::Expect {
                reg: 0,
                value: psci::SUCCESS,
            },
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_addresses_carry_the_unprotected_bit() {
        let p = CcaPlatform::new(40, HashAlgorithm::Sha256);
        assert_eq!(p.device_address(0x0900_0000), 0x80_0900_0000);
        assert!(p.host_call(1, &[]).is_err(), "needs the data page first");
        p.prologue(&Layout::standard());
        let steps = p.host_call(1, &[7]).unwrap();
        assert!(steps.contains(&PlatformStep::Store {
            gpa: Layout::standard().data + HOST_CALL_BLOCK + 8,
            size: 8,
            value: 7
        }));
        let (steps, len) = p.read_measurement(0, &Layout::standard()).unwrap();
        assert_eq!((steps.len(), len), (10, 32));
        assert!(p.read_measurement(5, &Layout::standard()).is_err());
        assert_eq!(p.launch_measurement_index(), 0, "the RIM");
        let on = p.start_vcpu(17, 0x8000_0000, 5).unwrap();
        assert!(matches!(&on[0], PlatformStep::Call { args, .. } if args[1] == (1, 0x101)));
    }
}
