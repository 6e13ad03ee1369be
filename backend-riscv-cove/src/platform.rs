//! [`GuestPlatform`] for CoVE TVMs: how portable guest programs reach the TSM and the VMM.
//!
//! | portable op | RV64 lowering on CoVE |
//! |---|---|
//! | prologue | `ecall` COVG ADD_MMIO_REGION (a7 = COVG, a6 = 0, a0 = gpa, a1 = len) for the doorbell page and each device range, then expect a0 == 0 (only registered regions are MMIO, spec/cove.md §4.2) |
//! | share / unshare | COVG SHARE_MEMORY (a6 = 2) / UNSHARE_MEMORY (a6 = 3), a0 = gpa, a1 = len; expect a0 == 0 |
//! | read measurement | ATST ReadMeasurement (a7 = ATST, a6 = 3, a0 = buffer, a1 = 48, a2 = TCG PCR index) into the data page at [`MEASUREMENT_BUFFER_OFFSET`], expect a0 == 0, then the 6 words |
//! | read entropy | `csrrw rd, seed, x0` polled until OPST = ES16 ([`EntropySource::Seed`]) |
//! | host call | ECALL to [`EID_CVM_HOSTCALL`] (SBI experimental range): a6 = call number, a0..a5 = args; a0 returned |
//! | system off | SBI SRST (EID 0x53525354, FID 0, a0 = 0 shutdown, a1 = 0 no reason) |

use cvm_core::guest::{Conduit, EntropySource, GuestPlatform, Layout, NotSupported, PlatformStep};
use cvm_core::Arch;

use crate::abi::{
    atst, covg, reg, srst, EID_ATST, EID_COVG, EID_CVM_HOSTCALL, EID_SRST, PAGE_SIZE,
};
use crate::measure::MEASUREMENT_LEN;

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

    fn system_off(&self) -> Vec<PlatformStep> {
        vec![ecall(
            EID_SRST,
            srst::SYSTEM_RESET,
            &[srst::TYPE_SHUTDOWN, 0],
        )]
    }
}
