//! [`GuestPlatform`] for CoVE TVMs: how portable guest programs reach the TSM and the VMM.
//!
//! | portable op | RV64 lowering on CoVE |
//! |---|---|
//! | prologue | `ecall` COVG ADD_MMIO_REGION (a7 = COVG, a6 = 0, a0 = gpa, a1 = len) for the doorbell page and each device range, then expect a0 == 0 (only registered regions are MMIO, spec/cove.md §4.2) |
//! | share / unshare | COVG SHARE_MEMORY (a6 = 2) / UNSHARE_MEMORY (a6 = 3), a0 = gpa, a1 = len; expect a0 == 0 |
//! | read measurement | ATST ReadMeasurement (a7 = ATST, a6 = 3, a0 = buffer, a1 = 48, a2 = TCG PCR index) into the data page at [`MEASUREMENT_BUFFER_OFFSET`], expect a0 == 0, then the 6 words |
//! | launch measurement index | 2: TCG PCR2, the TVM pages (every TVM_ADD_MEASURED_PAGES page with its GPA; Salus `TcgPcrIndex`, spec/cove.md §3.2) |
//! | start vCPU | SBI HSM HART_START (a7 = 0x48534D, a6 = 0, a0 = hart id = vCPU index, a1 = start address, a2 = opaque → the started hart's a1); expect a0 == 0. The TSM forwards it to the host with a1/a2 masked and starts the hart itself once the host accepts (spec/cove.md §1.3) |
//! | read entropy | `csrrw rd, seed, x0` polled until OPST = ES16 ([`EntropySource::Seed`]) |
//! | host call | ECALL to [`EID_CVM_HOSTCALL`] (SBI experimental range): a6 = call number, a0..a5 = args; a0 returned |
//! | system off | SBI SRST (EID 0x53525354, FID 0, a0 = 0 shutdown, a1 = 0 no reason) |

use cvm_core::guest::{Conduit, EntropySource, GuestPlatform, Layout, NotSupported, PlatformStep};
use cvm_core::Arch;

use crate::abi::{
    atst, covg, hsm, reg, srst, EID_ATST, EID_COVG, EID_CVM_HOSTCALL, EID_HSM, EID_SRST, PAGE_SIZE,
};
use crate::measure::{MEASUREMENT_LEN, PCR_TVM_PAGES};

/// Where in the layout's data page ReadMeasurement writes its 48 bytes: the start of the
/// bytes lowering reserves for platform buffers ([`cvm_core::guest::DATA_PLATFORM_SCRATCH`]).
pub const MEASUREMENT_BUFFER_OFFSET: u64 = cvm_core::guest::DATA_PLATFORM_SCRATCH as u64;

/// The CoVE guest platform.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CovePlatform;

fn ecall(eid: u32, fid: u32, args: &[u64]) -> PlatformStep {
    let mut a = vec![(reg::A7, u64::from(eid)), (reg::A6, u64::from(fid))];
    a.extend(
        args.iter()
            .enumerate()
            .map(|(i, &v)| (reg::A0 + i as u8, v)),
    );
    PlatformStep::Call {
        conduit: Conduit::Ecall,
        args: a,
    }
}

fn expect_ok() -> PlatformStep {
    PlatformStep::Expect {
        reg: reg::A0,
        value: 0,
    }
}

fn page_span(gpa: u64, len: u64) -> (u64, u64) {
    let start = gpa & !(PAGE_SIZE - 1);
    let end = gpa.saturating_add(len.max(1)).next_multiple_of(PAGE_SIZE);
    (start, end - start)
}

impl GuestPlatform for CovePlatform {
    fn name(&self) -> &'static str {
        "riscv-cove"
    }

    fn arch(&self) -> Arch {
        Arch::Riscv64
    }

    fn prologue(&self, layout: &Layout) -> Vec<PlatformStep> {
        let mut steps = Vec::new();
        let mut ranges = vec![(layout.doorbell & !(PAGE_SIZE - 1), PAGE_SIZE)];
        ranges.extend(layout.devices.iter().map(|&(b, s)| page_span(b, s)));
        for (gpa, len) in ranges {
            steps.push(ecall(EID_COVG, covg::ADD_MMIO_REGION, &[gpa, len]));
            steps.push(expect_ok());
        }
        steps
    }

    fn share(&self, gpa: u64, len: u64) -> Result<Vec<PlatformStep>, NotSupported> {
        Ok(vec![
            ecall(EID_COVG, covg::SHARE_MEMORY, &[gpa, len]),
            expect_ok(),
        ])
    }

    fn unshare(&self, gpa: u64, len: u64) -> Result<Vec<PlatformStep>, NotSupported> {
        Ok(vec![
            ecall(EID_COVG, covg::UNSHARE_MEMORY, &[gpa, len]),
            expect_ok(),
        ])
    }

    fn read_measurement(
        &self,
        index: u8,
        layout: &Layout,
    ) -> Result<(Vec<PlatformStep>, usize), NotSupported> {
        let buf = layout.data + MEASUREMENT_BUFFER_OFFSET;
        let mut steps = vec![
            ecall(
                EID_ATST,
                atst::READ_MEASUREMENT,
                &[buf, MEASUREMENT_LEN as u64, u64::from(index)],
            ),
            expect_ok(),
        ];
        for i in 0..(MEASUREMENT_LEN / 8) as u8 {
            steps.push(PlatformStep::LoadResult {
                gpa: buf + 8 * u64::from(i),
                result: i,
            });
        }
        Ok((steps, MEASUREMENT_LEN))
    }

    /// TCG PCR2 (Salus `TcgPcrIndex`, spec/cove.md §3.2): the TVM pages, i.e. the image the
    /// host loaded with TVM_ADD_MEASURED_PAGES. PCR0/1 are never extended by Salus (zeros)
    /// and PCR3 holds the entry point and argument, not the image.
    fn launch_measurement_index(&self) -> u8 {
        PCR_TVM_PAGES
    }

    fn read_entropy(&self) -> Result<Vec<PlatformStep>, NotSupported> {
        Ok(vec![PlatformStep::Entropy(EntropySource::Seed)])
    }

    fn host_call(&self, nr: u64, args: &[u64]) -> Result<Vec<PlatformStep>, NotSupported> {
        if args.len() > 6 {
            return Err(NotSupported {
                op: "host_call",
                platform: "riscv-cove",
                reason: "an SBI call carries at most 6 arguments (a0..a5)",
            });
        }
        let Ok(fid) = u32::try_from(nr) else {
            return Err(NotSupported {
                op: "host_call",
                platform: "riscv-cove",
                reason: "the call number is the 32-bit SBI function id",
            });
        };
        Ok(vec![
            ecall(EID_CVM_HOSTCALL, fid, args),
            PlatformStep::Save {
                reg: reg::A0,
                result: 0,
            },
        ])
    }

    /// SBI HSM HART_START (SBI spec "Hart State Management Extension", EID 0x48534D FID 0:
    /// a0 = hartid, a1 = start_addr, a2 = opaque), expecting SBI_SUCCESS. On CoVE the vCPU
    /// index is the hart id (Salus: vCPU `a0` = its id).
    fn start_vcpu(
        &self,
        vcpu: u32,
        entry: u64,
        arg: u64,
    ) -> Result<Vec<PlatformStep>, NotSupported> {
        Ok(vec![
            ecall(EID_HSM, hsm::HART_START, &[u64::from(vcpu), entry, arg]),
            expect_ok(),
        ])
    }

    /// SBI HSM HART_STOP: the TSM powers the hart off and tells the host (`VmExit::Halt`).
    fn stop_vcpu(&self) -> Result<Vec<PlatformStep>, NotSupported> {
        Ok(vec![ecall(EID_HSM, hsm::HART_STOP, &[])])
    }

    fn system_off(&self) -> Vec<PlatformStep> {
        vec![ecall(
            EID_SRST,
            srst::SYSTEM_RESET,
            &[srst::TYPE_SHUTDOWN, 0],
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{hsm, EID_HSM};

    #[test]
    fn start_vcpu_is_hsm_hart_start_and_launch_index_is_pcr2() {
        let p = CovePlatform;
        assert_eq!(p.launch_measurement_index(), 2);
        let steps = p.start_vcpu(3, 0x8020_0000, 0x5EC0);
        assert_eq!(
            steps,
            Ok(vec![
                PlatformStep::Call {
                    conduit: Conduit::Ecall,
                    args: vec![
                        (reg::A7, u64::from(EID_HSM)),
                        (reg::A6, u64::from(hsm::HART_START)),
                        (reg::A0, 3),
                        (reg::A0 + 1, 0x8020_0000),
                        (reg::A0 + 2, 0x5EC0),
                    ],
                },
                PlatformStep::Expect {
                    reg: reg::A0,
                    value: 0,
                },
            ])
        );
    }
}
