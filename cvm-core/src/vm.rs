//! The contract: [`Backend`] → [`Vm`] → [`Vcpu`], and the generic [`ManagedVm`] that enforces it.
//!
//! Backends do not implement [`Vm`] and [`Vcpu`] directly. They implement the narrower
//! [`VmOps`] / [`VcpuOps`], which are only called with validated input in an allowed state, and
//! wrap them in [`ManagedVm`]. So the launch lifecycle, region validation, resume validation,
//! the feature-register freeze and the statistics are one piece of code for every backend.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use vm_memory::GuestMemoryMmap;

use crate::config::{BackendInfo, Confidentiality, Measure, VcpuInit, VmConfig};
use crate::error::{Error, Result};
use crate::exit::{validate_resume, ExitDetail, Resume, VmExit};
use crate::features::{FeatureDef, FeatureRegisters, FeatureValue};
use crate::guest::GuestPlatform;
use crate::lifecycle::{LaunchState, Lifecycle, Op};
use crate::measure::{Measurement, MeasurementLog};
use crate::memory::{check_range, MemoryKind, MemoryRegion, RegionError, RegionSet, PAGE_SIZE};
use crate::stats::{Stats, StatsRecorder};

/// A way of running VMs: plain KVM, a CCA RMM, a CoVE TSM.
pub trait Backend: Send + Sync {
    /// What this backend is and can do here. Never fails.
    fn info(&self) -> BackendInfo;

    /// Creates a VM in `Building`. Fails closed: a backend that cannot give the requested
    /// confidentiality returns an error rather than a weaker VM.
    fn create_vm(&self, config: &VmConfig) -> Result<Box<dyn Vm>>;
}

/// A virtual machine. All methods take `&self`; a VM is shared between the VMM and vCPU threads.
pub trait Vm: Send + Sync {
    /// The configuration it was created with.
    fn config(&self) -> &VmConfig;
    /// The launch state.
    fn state(&self) -> LaunchState;
    /// Usable guest-physical address bits (device view).
    fn addr_bits(&self) -> u8;
    /// Adds a region. Private regions only while `Building`.
    fn add_memory(&self, region: MemoryRegion) -> Result<()>;
    /// Removes the region starting at `gpa`, releasing everything behind it.
    fn remove_memory(&self, gpa: u64) -> Result<MemoryRegion>;
    /// The regions, ascending.
    fn regions(&self) -> Vec<MemoryRegion>;
    /// The shared regions as vm-memory, for device crates. Private memory never appears here.
    fn shared_memory(&self) -> GuestMemoryMmap;
    /// Copies `bytes` to `gpa`. `Measure::Yes` (page-aligned, private memory on confidential VMs,
    /// `Building` only) extends the launch measurement.
    fn load(&self, gpa: u64, bytes: &[u8], measure: Measure) -> Result<()>;
    /// Creates the next vCPU (ids count from 0). `Building` only.
    fn create_vcpu(&self, init: VcpuInit) -> Result<Box<dyn Vcpu>>;
    /// Seals the launch: `Building` → `Finalized`.
    fn finalize(&self) -> Result<()>;
    /// The current measurement registers.
    fn measurement(&self) -> Result<Measurement>;
    /// The ordered log of measured events so far.
    fn measurement_log(&self) -> MeasurementLog;
    /// Host-initiated conversion of `[gpa, gpa + size)` to `to`, where the architecture allows it.
    fn convert(&self, gpa: u64, size: u64, to: MemoryKind) -> Result<()>;
    /// Feature-register definitions.
    fn feature_defs(&self) -> Vec<FeatureDef>;
    /// Current feature-register values.
    fn features(&self) -> Vec<FeatureValue>;
    /// Writes a feature register (see [`FeatureRegisters`]).
    fn set_feature(&self, name: &str, value: u64) -> Result<()>;
    /// VM-wide counters (all vCPUs' exits, firmware calls).
    fn stats(&self) -> Stats;
    /// Tears the VM down, releasing every page, granule, fd and memslot. Idempotent.
    fn destroy(&self) -> Result<()>;
    /// The platform conventions portable guest programs are lowered with for this VM.
    fn guest_platform(&self) -> Box<dyn GuestPlatform + Send + Sync>;
}

/// A virtual CPU, run by one thread at a time.
pub trait Vcpu: Send {
    /// Index within the VM.
    fn id(&self) -> u32;
    /// Answers the pending exit with `resume`, enters the guest and returns the next exit.
    /// A `resume` that does not answer the pending exit is [`Error::ResumeMismatch`] and the
    /// guest is not entered. If the backend fails, the pending exit stays pending. After the
    /// guest powered the VM off, a vCPU that has not seen it yet returns `SystemOff` once
    /// (without entering); every later run is [`Error::InvalidState`].
    fn run(&mut self, resume: Resume) -> Result<VmExit>;
    /// The exit waiting for an answer (`None` before the first run).
    fn pending(&self) -> Option<&VmExit>;
    /// This vCPU's counters.
    fn stats(&self) -> Stats;
    /// The native detail behind the last exit (syndromes, transfer channel), if the backend
    /// records it.
    fn exit_detail(&self) -> Option<ExitDetail>;
}

/// What a backend implements for a VM. [`ManagedVm`] calls these only in an allowed state and
/// with validated arguments; each must undo its own partial work when it fails.
pub trait VmOps: Send + Sync + 'static {
    /// Backs a validated, non-overlapping region.
    fn add_memory(&self, region: &MemoryRegion) -> Result<()>;
    /// Releases a region.
    fn remove_memory(&self, region: &MemoryRegion) -> Result<()>;
    /// The shared regions as vm-memory.
    fn shared_memory(&self) -> GuestMemoryMmap;
    /// Copies bytes into `region` (which contains the whole range).
    fn load(&self, region: &MemoryRegion, gpa: u64, bytes: &[u8], measure: Measure) -> Result<()>;
    /// Creates vCPU `id`.
    fn create_vcpu(&self, id: u32, init: &VcpuInit) -> Result<Box<dyn VcpuOps>>;
    /// Seals the launch.
    fn finalize(&self) -> Result<()>;
    /// Current measurement.
    fn measurement(&self) -> Result<Measurement>;
    /// The measured events so far.
    fn measurement_log(&self) -> MeasurementLog;
    /// Host-initiated conversion of a validated range inside one region.
    fn convert(&self, gpa: u64, size: u64, to: MemoryKind) -> Result<()>;
    /// The backend's rule for a feature write before the first run. The default allows
    /// lowering a value only if `can_disable` and raising it only if `can_enable`.
    fn check_feature(&self, def: &FeatureDef, current: u64, value: u64) -> Result<()> {
        let _ = current;
        let allowed = if value < def.default {
            def.can_disable
        } else {
            value == def.default || def.can_enable
        };
        if allowed {
            Ok(())
        } else {
            Err(Error::FeatureRejected {
                feature: def.name.clone(),
                value,
                reason: "not allowed by the backend's feature table".into(),
            })
        }
    }
    /// Releases everything. Called once.
    fn destroy(&self) -> Result<()>;
    /// The platform conventions for portable guest programs on this VM.
    fn guest_platform(&self) -> Box<dyn GuestPlatform + Send + Sync>;
}

/// What a backend implements for a vCPU.
pub trait VcpuOps: Send {
    /// Applies `resume` (already validated against `pending`) and enters the guest.
    fn run(&mut self, resume: Resume, pending: Option<&VmExit>) -> Result<VmExit>;
    /// The native detail behind the last exit (ESR/FAR/HPFAR, scause/htval/htinst, kvm_run
    /// fields) and the channel values travel through. Off the hot path: build it on demand.
    fn exit_detail(&self) -> Option<ExitDetail> {
        None
    }
}

static NEXT_VM_ID: AtomicU64 = AtomicU64::new(1);

/// State shared by a VM and its vCPUs; backends receive it at creation to count firmware calls
/// and read feature registers.
#[derive(Debug)]
pub struct VmShared {
    /// Process-unique id, used in tracing spans.
    pub id: u64,
    /// The configuration.
    pub config: VmConfig,
    /// Usable address bits.
    pub addr_bits: u8,
    /// The launch lifecycle.
    pub lifecycle: Lifecycle,
    /// VM-wide feature registers.
    pub features: FeatureRegisters,
    /// VM-wide counters.
    pub stats: StatsRecorder,
    /// The guest powered the VM off (as opposed to the VMM destroying it).
    powered_off_by_guest: AtomicBool,
}

impl VmShared {
    /// Whether the VM is confidential.
    pub fn confidential(&self) -> bool {
        self.config.confidentiality != Confidentiality::None
    }
}

/// The [`Vm`] every backend returns: the contract's checks around a backend's [`VmOps`].
pub struct ManagedVm<O: VmOps> {
    shared: Arc<VmShared>,
    regions: Mutex<RegionSet>,
    vcpus: AtomicU32,
    destroyed: AtomicBool,
    ops: O,
}

impl<O: VmOps> ManagedVm<O> {
    /// Builds a VM: `make` receives the shared state and returns the backend's ops.
    pub fn new(
        config: &VmConfig,
        addr_bits: u8,
        features: Vec<FeatureDef>,
        make: impl FnOnce(Arc<VmShared>) -> Result<O>,
    ) -> Result<Self> {
        if config.vcpus == 0 {
            return Err(Error::InvalidArgument(
                "a VM needs at least one vCPU".into(),
            ));
        }
        let shared = Arc::new(VmShared {
            id: NEXT_VM_ID.fetch_add(1, Ordering::Relaxed),
            config: config.clone(),
            addr_bits,
            lifecycle: Lifecycle::new(),
            features: FeatureRegisters::new(features),
            stats: StatsRecorder::new(),
            powered_off_by_guest: AtomicBool::new(false),
        });
        let ops = {
            let _span = tracing::debug_span!("create_vm", vm = shared.id).entered();
            make(Arc::clone(&shared))?
        };
        tracing::debug!(vm = shared.id, ?config.confidentiality, "vm created");
        Ok(Self {
            shared,
            regions: Mutex::new(RegionSet::new()),
            vcpus: AtomicU32::new(0),
            destroyed: AtomicBool::new(false),
            ops,
        })
    }

    /// The backend's ops.
    pub fn ops(&self) -> &O {
        &self.ops
    }

    /// The shared state.
    pub fn shared(&self) -> &Arc<VmShared> {
        &self.shared
    }

    fn regions(&self) -> std::sync::MutexGuard<'_, RegionSet> {
        self.regions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<O: VmOps> Vm for ManagedVm<O> {
    fn config(&self) -> &VmConfig {
        &self.shared.config
    }

    fn state(&self) -> LaunchState {
        self.shared.lifecycle.state()
    }

    fn addr_bits(&self) -> u8 {
        self.shared.addr_bits
    }

    fn add_memory(&self, region: MemoryRegion) -> Result<()> {
        let op = match region.kind {
            MemoryKind::Private => Op::AddPrivateMemory,
            MemoryKind::Shared => Op::AddSharedMemory,
        };
        let _permit = self.shared.lifecycle.begin(op)?;
        let mut regions = self.regions();
        regions.validate(&region, self.shared.addr_bits)?;
        if region.read_only && self.shared.confidential() {
            return Err(RegionError::ReadOnlyConfidential.into());
        }
        self.ops.add_memory(&region)?;
        regions.insert(region);
        Ok(())
    }

    fn remove_memory(&self, gpa: u64) -> Result<MemoryRegion> {
        let _permit = self.shared.lifecycle.begin(Op::RemoveMemory)?;
        let mut regions = self.regions();
        let region = *regions.get(gpa).ok_or(RegionError::NotFound { gpa })?;
        self.ops.remove_memory(&region)?;
        regions.remove(gpa)?;
        Ok(region)
    }

    fn regions(&self) -> Vec<MemoryRegion> {
        self.regions().iter().copied().collect()
    }

    fn shared_memory(&self) -> GuestMemoryMmap {
        self.ops.shared_memory()
    }

    fn load(&self, gpa: u64, bytes: &[u8], measure: Measure) -> Result<()> {
        let op = match measure {
            Measure::Yes => Op::LoadMeasured,
            Measure::No => Op::LoadUnmeasured,
        };
        let _permit = self.shared.lifecycle.begin(op)?;
        if bytes.is_empty() {
            return Err(Error::InvalidArgument("load of zero bytes".into()));
        }
        if measure == Measure::Yes && gpa % PAGE_SIZE != 0 {
            return Err(Error::InvalidArgument(format!(
                "measured loads start on a 4 KiB boundary, not {gpa:#x}"
            )));
        }
        let len = bytes.len() as u64;
        let region = *self.regions().find(gpa, len).ok_or(Error::NotMapped {
            gpa,
            len,
            what: "a memory region",
        })?;
        let confidential = self.shared.confidential();
        if confidential && measure == Measure::Yes && region.kind != MemoryKind::Private {
            return Err(Error::NotMapped {
                gpa,
                len,
                what: "private memory (measured loads on a confidential VM)",
            });
        }
        if confidential
            && region.kind == MemoryKind::Private
            && self.shared.lifecycle.state() != LaunchState::Building
        {
            return Err(Error::InvalidState {
                op: "load into private memory",
                state: self.shared.lifecycle.state(),
            });
        }
        self.ops.load(&region, gpa, bytes, measure)
    }

    fn create_vcpu(&self, init: VcpuInit) -> Result<Box<dyn Vcpu>> {
        let _permit = self.shared.lifecycle.begin(Op::CreateVcpu)?;
        let id = self.vcpus.load(Ordering::Acquire);
        if id >= self.shared.config.vcpus {
            return Err(Error::InvalidArgument(format!(
                "the VM was configured with {} vCPU(s)",
                self.shared.config.vcpus
            )));
        }
        if init.args.len() > 8 {
            return Err(Error::InvalidArgument(format!(
                "{} vCPU arguments given, at most 8",
                init.args.len()
            )));
        }
        let ops = self.ops.create_vcpu(id, &init)?;
        self.vcpus.store(id + 1, Ordering::Release);
        Ok(Box::new(ManagedVcpu {
            id,
            shared: Arc::clone(&self.shared),
            pending: None,
            stats: StatsRecorder::new(),
            ops,
        }))
    }

    fn finalize(&self) -> Result<()> {
        let permit = self.shared.lifecycle.begin(Op::Finalize)?;
        if self.vcpus.load(Ordering::Acquire) == 0 {
            return Err(Error::InvalidArgument(
                "finalize needs the boot vCPU (vCPU 0) to exist".into(),
            ));
        }
        self.ops.finalize()?;
        permit.commit(LaunchState::Finalized);
        tracing::debug!(vm = self.shared.id, "vm finalized");
        Ok(())
    }

    fn measurement(&self) -> Result<Measurement> {
        self.ops.measurement()
    }

    fn measurement_log(&self) -> MeasurementLog {
        self.ops.measurement_log()
    }

    fn convert(&self, gpa: u64, size: u64, to: MemoryKind) -> Result<()> {
        let _permit = self.shared.lifecycle.begin(Op::Convert)?;
        check_range(gpa, size)?;
        if self.regions().find(gpa, size).is_none() {
            return Err(Error::NotMapped {
                gpa,
                len: size,
                what: "a single memory region",
            });
        }
        self.ops.convert(gpa, size, to)
    }

    fn feature_defs(&self) -> Vec<FeatureDef> {
        self.shared.features.defs().to_vec()
    }

    fn features(&self) -> Vec<FeatureValue> {
        self.shared.features.snapshot()
    }

    fn set_feature(&self, name: &str, value: u64) -> Result<()> {
        self.shared.lifecycle.check(Op::SetFeature)?;
        self.shared.features.write(name, value, |def, current, v| {
            self.ops.check_feature(def, current, v)
        })
    }

    fn stats(&self) -> Stats {
        self.shared.stats.snapshot()
    }

    fn destroy(&self) -> Result<()> {
        let permit = self.shared.lifecycle.begin(Op::Destroy)?;
        if self.destroyed.load(Ordering::Acquire) {
            return Ok(());
        }
        self.ops.destroy()?;
        self.destroyed.store(true, Ordering::Release);
        *self.regions() = RegionSet::new();
        permit.commit(LaunchState::Off);
        tracing::debug!(vm = self.shared.id, "vm destroyed");
        Ok(())
    }

    fn guest_platform(&self) -> Box<dyn GuestPlatform + Send + Sync> {
        self.ops.guest_platform()
    }
}

impl<O: VmOps> Drop for ManagedVm<O> {
    fn drop(&mut self) {
        if !self.destroyed.load(Ordering::Acquire) {
            if let Err(e) = self.ops.destroy() {
                tracing::warn!(vm = self.shared.id, error = %e, "teardown on drop failed");
            }
        }
    }
}

/// The [`Vcpu`] every backend returns.
pub struct ManagedVcpu {
    id: u32,
    shared: Arc<VmShared>,
    pending: Option<VmExit>,
    stats: StatsRecorder,
    ops: Box<dyn VcpuOps>,
}

impl Vcpu for ManagedVcpu {
    fn id(&self) -> u32 {
        self.id
    }

    fn run(&mut self, resume: Resume) -> Result<VmExit> {
        if let Err(e) = self.shared.lifecycle.check(Op::Run) {
            // After a guest power-off every other vCPU sees it once, as KVM delivers the
            // system event to all vCPUs, so each VMM thread ends its loop the same way.
            let seen = self.pending.as_ref().is_some_and(VmExit::is_terminal);
            if self.shared.powered_off_by_guest.load(Ordering::Acquire) && !seen {
                self.pending = Some(VmExit::SystemOff);
                return Ok(VmExit::SystemOff);
            }
            return Err(e);
        }
        validate_resume(self.pending.as_ref(), &resume)?;
        self.shared.features.freeze();
        // Every firmware call and native exit the backend traces inside carries the ids.
        let _span = tracing::trace_span!("run", vm = self.shared.id, vcpu = self.id).entered();
        let exit = self.ops.run(resume, self.pending.as_ref())?;
        let kind = exit.kind();
        self.stats.exit(kind);
        self.shared.stats.exit(kind);
        tracing::trace!(vm = self.shared.id, vcpu = self.id, ?exit, "exit");
        if exit.is_terminal() {
            self.shared
                .powered_off_by_guest
                .store(true, Ordering::Release);
            self.shared.lifecycle.power_off();
        }
        self.pending = Some(exit.clone());
        Ok(exit)
    }

    fn pending(&self) -> Option<&VmExit> {
        self.pending.as_ref()
    }

    fn stats(&self) -> Stats {
        self.stats.snapshot()
    }

    fn exit_detail(&self) -> Option<ExitDetail> {
        self.ops.exit_detail()
    }
}
