//! The host's view of the RMM: the [`Rmi`] trait (one SMC entry point plus the host's own
//! physical memory) and [`RmiClient`], the typed, counted wrapper the host flow uses.
//!
//! Today the only implementation is the in-process model ([`crate::model::Rmm`]); on hardware
//! it would be an `SMC` issued by the kernel. Failure injection for tests wraps an `Rmi`
//! ([`FailNth`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cvm_core::vm_memory::MmapRegion;
use cvm_core::{FirmwareError, StatsRecorder};

use crate::abi::{self, rmi as fid, unpack_return, Ripas, RmiStatus, RttEntryState};

/// Why a host-memory operation failed (not an RMI status: the host's own RAM).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostMemError {
    /// The model's host physical memory is exhausted.
    #[error("host physical memory exhausted")]
    Exhausted,
    /// The address is not an NS granule the host owns.
    #[error("{pa:#x} is not a host-owned granule")]
    NotHostGranule {
        /// The address.
        pa: u64,
    },
    /// An access ran outside the granule or window.
    #[error("access at {pa:#x}+{len:#x} is out of range")]
    OutOfRange {
        /// The address.
        pa: u64,
        /// The length.
        len: usize,
    },
}

/// An RMI command that returned something other than RMI_SUCCESS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{call} returned {} (index {index})", status_name(*.code))]
pub struct RmiError {
    /// The command, e.g. `RMI_DATA_CREATE`.
    pub call: &'static str,
    /// The status byte of X0.
    pub code: u8,
    /// The index byte of X0 (e.g. the RTT level for RMI_ERROR_RTT).
    pub index: u8,
}

fn status_name(code: u8) -> &'static str {
    RmiStatus::from_code(code).map_or("RMI_ERROR_UNKNOWN", RmiStatus::name)
}

impl RmiError {
    /// The decoded status, if it is one RMM 1.0 defines.
    pub fn status(&self) -> Option<RmiStatus> {
        RmiStatus::from_code(self.code)
    }
}

impl From<RmiError> for FirmwareError {
    fn from(e: RmiError) -> Self {
        FirmwareError {
            call: e.call,
            code: i64::from(e.code),
            status_name: status_name(e.code),
            index: u64::from(e.index),
        }
    }
}

impl From<RmiError> for cvm_core::Error {
    fn from(e: RmiError) -> Self {
        cvm_core::Error::Firmware(e.into())
    }
}

impl From<HostMemError> for cvm_core::Error {
    fn from(e: HostMemError) -> Self {
        cvm_core::Error::backend(e)
    }
}

/// The RMM as the host sees it.
pub trait Rmi: Send + Sync {
    /// One RMI call: X0 = `fid`, X1.. = `args`; returns X0..X4.
    fn smc(&self, fid: u64, args: &[u64]) -> [u64; 5];

    /// Allocates `count` physically contiguous, zeroed NS granules of host RAM (what the host
    /// kernel's page allocator does); returns the first PA. Each is freed on its own.
    fn alloc_ns_granules(&self, count: u64) -> Result<u64, HostMemError>;
    /// Returns an NS granule to the host allocator (it must be undelegated).
    fn free_ns_granule(&self, pa: u64) -> Result<(), HostMemError>;
    /// Writes host RAM at `pa` (an NS granule or attached window).
    fn write_ns(&self, pa: u64, data: &[u8]) -> Result<(), HostMemError>;
    /// Reads host RAM at `pa`.
    fn read_ns(&self, pa: u64, buf: &mut [u8]) -> Result<(), HostMemError>;
    /// Makes `mapping` (VMM memory) host RAM at a PA congruent to `align_to` modulo 2 MiB, so
    /// block mappings of it are possible; returns the PA.
    fn attach_ns_memory(
        &self,
        mapping: Arc<MmapRegion>,
        align_to: u64,
    ) -> Result<u64, HostMemError>;
    /// Forgets the window attached at `pa`.
    fn detach_ns_memory(&self, pa: u64) -> Result<(), HostMemError>;
}

/// One RTT entry as RMI_RTT_READ_ENTRY reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RttEntry {
    /// Level at which the walk stopped.
    pub level: i8,
    /// Entry state.
    pub state: RttEntryState,
    /// Descriptor (PA of data/table, or the NS descriptor).
    pub desc: u64,
    /// RIPAS.
    pub ripas: Ripas,
}

/// Typed RMI calls, counted by name in a VM's [`StatsRecorder`].
#[derive(Clone, Copy)]
pub struct RmiClient<'a> {
    rmi: &'a dyn Rmi,
    stats: Option<&'a StatsRecorder>,
}

impl<'a> RmiClient<'a> {
    /// A client over `rmi`, counting into `stats` if given.
    pub fn new(rmi: &'a dyn Rmi, stats: Option<&'a StatsRecorder>) -> Self {
        Self { rmi, stats }
    }

    /// The underlying RMI.
    pub fn rmi(&self) -> &'a dyn Rmi {
        self.rmi
    }

    fn call(&self, f: u64, args: &[u64]) -> Result<[u64; 5], RmiError> {
        let name = fid::name(f);
        if let Some(s) = self.stats {
            s.call(name);
        }
        let r = self.rmi.smc(f, args);
        let (code, index) = unpack_return(r[0]);
        tracing::trace!(call = name, ?args, x0 = r[0], "rmi");
        if code == RmiStatus::Success as u8 {
            Ok(r)
        } else {
            Err(RmiError {
                call: name,
                code,
                index,
            })
        }
    }

    fn count(&self, name: &'static str, n: u64) {
        if let Some(s) = self.stats {
            s.add(name, n);
        }
    }

    /// RMI_VERSION(req) → (lower, higher).
    pub fn version(&self, req: u64) -> Result<(u64, u64), RmiError> {
        self.call(fid::VERSION, &[req]).map(|r| (r[1], r[2]))
    }
    /// RMI_FEATURES(index).
    pub fn features(&self, index: u64) -> Result<u64, RmiError> {
        self.call(fid::FEATURES, &[index]).map(|r| r[1])
    }
    /// RMI_GRANULE_DELEGATE.
    pub fn granule_delegate(&self, pa: u64) -> Result<(), RmiError> {
        self.call(fid::GRANULE_DELEGATE, &[pa])?;
        self.count("granules_delegated", 1);
        Ok(())
    }
    /// RMI_GRANULE_UNDELEGATE.
    pub fn granule_undelegate(&self, pa: u64) -> Result<(), RmiError> {
        self.call(fid::GRANULE_UNDELEGATE, &[pa])?;
        self.count("granules_undelegated", 1);
        Ok(())
    }
    /// RMI_REALM_CREATE.
    pub fn realm_create(&self, rd: u64, params: u64) -> Result<(), RmiError> {
        self.call(fid::REALM_CREATE, &[rd, params]).map(drop)
    }
    /// RMI_REALM_ACTIVATE.
    pub fn realm_activate(&self, rd: u64) -> Result<(), RmiError> {
        self.call(fid::REALM_ACTIVATE, &[rd]).map(drop)
    }
    /// RMI_REALM_DESTROY.
    pub fn realm_destroy(&self, rd: u64) -> Result<(), RmiError> {
        self.call(fid::REALM_DESTROY, &[rd]).map(drop)
    }
    /// RMI_REC_AUX_COUNT.
    pub fn rec_aux_count(&self, rd: u64) -> Result<u64, RmiError> {
        self.call(fid::REC_AUX_COUNT, &[rd]).map(|r| r[1])
    }
    /// RMI_REC_CREATE.
    pub fn rec_create(&self, rd: u64, rec: u64, params: u64) -> Result<(), RmiError> {
        self.call(fid::REC_CREATE, &[rd, rec, params]).map(drop)
    }
    /// RMI_REC_DESTROY.
    pub fn rec_destroy(&self, rec: u64) -> Result<(), RmiError> {
        self.call(fid::REC_DESTROY, &[rec]).map(drop)
    }
    /// RMI_REC_ENTER.
    pub fn rec_enter(&self, rec: u64, run: u64) -> Result<(), RmiError> {
        self.call(fid::REC_ENTER, &[rec, run]).map(drop)
    }
    /// RMI_PSCI_COMPLETE.
    pub fn psci_complete(&self, calling: u64, target: u64, status: u64) -> Result<(), RmiError> {
        self.call(fid::PSCI_COMPLETE, &[calling, target, status])
            .map(drop)
    }
    /// RMI_DATA_CREATE.
    pub fn data_create(
        &self,
        rd: u64,
        data: u64,
        ipa: u64,
        src: u64,
        flags: u64,
    ) -> Result<(), RmiError> {
        self.call(fid::DATA_CREATE, &[rd, data, ipa, src, flags])?;
        if flags == abi::RMI_MEASURE_CONTENT {
            self.count("pages_measured", 1);
        }
        Ok(())
    }
    /// RMI_DATA_CREATE_UNKNOWN.
    pub fn data_create_unknown(&self, rd: u64, data: u64, ipa: u64) -> Result<(), RmiError> {
        self.call(fid::DATA_CREATE_UNKNOWN, &[rd, data, ipa])
            .map(drop)
    }
    /// RMI_DATA_DESTROY → (data PA, top of the non-live region).
    pub fn data_destroy(&self, rd: u64, ipa: u64) -> Result<(u64, u64), RmiError> {
        self.call(fid::DATA_DESTROY, &[rd, ipa])
            .map(|r| (r[1], r[2]))
    }
    /// RMI_RTT_CREATE.
    pub fn rtt_create(&self, rd: u64, rtt: u64, ipa: u64, level: i8) -> Result<(), RmiError> {
        self.call(fid::RTT_CREATE, &[rd, rtt, ipa, level as u64])
            .map(drop)
    }
    /// RMI_RTT_DESTROY → (RTT PA, top of the non-live region).
    pub fn rtt_destroy(&self, rd: u64, ipa: u64, level: i8) -> Result<(u64, u64), RmiError> {
        self.call(fid::RTT_DESTROY, &[rd, ipa, level as u64])
            .map(|r| (r[1], r[2]))
    }
    /// RMI_RTT_FOLD → RTT PA.
    pub fn rtt_fold(&self, rd: u64, ipa: u64, level: i8) -> Result<u64, RmiError> {
        self.call(fid::RTT_FOLD, &[rd, ipa, level as u64])
            .map(|r| r[1])
    }
    /// RMI_RTT_MAP_UNPROTECTED.
    pub fn rtt_map_unprotected(
        &self,
        rd: u64,
        ipa: u64,
        level: i8,
        desc: u64,
    ) -> Result<(), RmiError> {
        self.call(fid::RTT_MAP_UNPROTECTED, &[rd, ipa, level as u64, desc])
            .map(drop)
    }
    /// RMI_RTT_UNMAP_UNPROTECTED → top of the non-live region.
    pub fn rtt_unmap_unprotected(&self, rd: u64, ipa: u64, level: i8) -> Result<u64, RmiError> {
        self.call(fid::RTT_UNMAP_UNPROTECTED, &[rd, ipa, level as u64])
            .map(|r| r[1])
    }
    /// RMI_RTT_READ_ENTRY.
    pub fn rtt_read_entry(&self, rd: u64, ipa: u64, level: i8) -> Result<RttEntry, RmiError> {
        let r = self.call(fid::RTT_READ_ENTRY, &[rd, ipa, level as u64])?;
        Ok(RttEntry {
            level: r[1] as i8,
            state: RttEntryState::from_u64(r[2]).unwrap_or(RttEntryState::Unassigned),
            desc: r[3],
            ripas: Ripas::from_u64(r[4]).unwrap_or(Ripas::Empty),
        })
    }
    /// RMI_RTT_INIT_RIPAS → top of the range updated.
    pub fn rtt_init_ripas(&self, rd: u64, base: u64, top: u64) -> Result<u64, RmiError> {
        self.call(fid::RTT_INIT_RIPAS, &[rd, base, top])
            .map(|r| r[1])
    }
    /// RMI_RTT_SET_RIPAS → top of the range updated.
    pub fn rtt_set_ripas(&self, rd: u64, rec: u64, base: u64, top: u64) -> Result<u64, RmiError> {
        self.call(fid::RTT_SET_RIPAS, &[rd, rec, base, top])
            .map(|r| r[1])
    }
}

/// An [`Rmi`] that fails its `n`-th SMC (1-based) with RMI_ERROR_INPUT without forwarding it,
/// for testing that every failure path releases what it delegated. Host-memory calls pass
/// through.
pub struct FailNth<R: Rmi + ?Sized> {
    inner: Arc<R>,
    fail_at: AtomicU64,
    calls: AtomicU64,
}

impl<R: Rmi + ?Sized> FailNth<R> {
    /// Fails call number `n` (0 = never).
    pub fn new(inner: Arc<R>, n: u64) -> Self {
        Self {
            inner,
            fail_at: AtomicU64::new(n),
            calls: AtomicU64::new(0),
        }
    }

    /// SMCs seen so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Fails call number `n` from now on (counting all calls so far; 0 = never).
    pub fn fail_at(&self, n: u64) {
        self.fail_at.store(n, Ordering::Relaxed);
    }

    /// Stops injecting failures.
    pub fn disarm(&self) {
        self.fail_at.store(0, Ordering::Relaxed);
    }
}

impl<R: Rmi + ?Sized> Rmi for FailNth<R> {
    fn smc(&self, f: u64, args: &[u64]) -> [u64; 5] {
        let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        if n == self.fail_at.load(Ordering::Relaxed) {
            return [abi::pack_return(RmiStatus::ErrorInput, 0), 0, 0, 0, 0];
        }
        self.inner.smc(f, args)
    }
    fn alloc_ns_granules(&self, count: u64) -> Result<u64, HostMemError> {
        self.inner.alloc_ns_granules(count)
    }
    fn free_ns_granule(&self, pa: u64) -> Result<(), HostMemError> {
        self.inner.free_ns_granule(pa)
    }
    fn write_ns(&self, pa: u64, data: &[u8]) -> Result<(), HostMemError> {
        self.inner.write_ns(pa, data)
    }
    fn read_ns(&self, pa: u64, buf: &mut [u8]) -> Result<(), HostMemError> {
        self.inner.read_ns(pa, buf)
    }
    fn attach_ns_memory(
        &self,
        mapping: Arc<MmapRegion>,
        align_to: u64,
    ) -> Result<u64, HostMemError> {
        self.inner.attach_ns_memory(mapping, align_to)
    }
    fn detach_ns_memory(&self, pa: u64) -> Result<(), HostMemError> {
        self.inner.detach_ns_memory(pa)
    }
}
