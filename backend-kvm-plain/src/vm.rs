//! The VM: [`VmOps`] over a KVM VM fd.

use std::sync::{Arc, Mutex, MutexGuard};

use cvm_core::guest::GuestPlatform;
use cvm_core::vm_memory::GuestMemoryMmap;
use cvm_core::{
    Content, Error, FeatureDef, Measure, Measurement, MeasurementEvent, MeasurementLog, MemoryKind,
    MemoryRegion, RegionError, Result, VcpuInit, VcpuOps, VmConfig, VmOps, VmShared,
};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};

use crate::arch;
use crate::measure;
use crate::memory::{punch_hole, set_private, Backing, Memory};
use crate::probe::HostCaps;
use crate::vcpu::KvmVcpu;

/// State shared by a VM and its vCPUs.
pub(crate) struct VmCore {
    /// The contract's shared state.
    pub shared: Arc<VmShared>,
    /// What this VM's KVM offers (`KVM_CHECK_EXTENSION` on the VM fd).
    pub caps: HostCaps,
    /// Size of each vCPU's `kvm_run` mapping (`KVM_GET_VCPU_MMAP_SIZE`).
    pub run_size: usize,
    /// Memslots and their backings.
    mem: Mutex<Memory>,
    /// The measured launch events.
    log: Mutex<MeasurementLog>,
    /// Per-architecture VM state.
    arch: arch::VmArch,
    /// The VM fd (closed last: declared after everything that refers to it).
    pub fd: VmFd,
}

impl VmCore {
    fn mem(&self) -> MutexGuard<'_, Memory> {
        self.mem.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn log(&self) -> MutexGuard<'_, MeasurementLog> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads `buf.len()` bytes at `gpa` from the backend's hidden slot.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn read_hidden(&self, gpa: u64, buf: &mut [u8]) -> Result<()> {
        let mem = self.mem();
        let slot = mem
            .hidden()
            .filter(|s| s.region.contains(gpa, buf.len() as u64))
            .ok_or(Error::NotMapped {
                gpa,
                len: buf.len() as u64,
                what: "the backend's hidden slot",
            })?;
        slot.read(gpa, buf)
    }

    /// Carries out an accepted conversion of `[gpa, gpa + size)`: `KVM_SET_MEMORY_ATTRIBUTES`
    /// and, towards shared, `fallocate(PUNCH_HOLE)` on the private guest_memfds behind it.
    /// Without `KVM_MEMORY_ATTRIBUTE_PRIVATE` all memory is shared: a conversion to shared
    /// is a no-op and one to private is refused with the missing capability.
    pub(crate) fn apply_conversion(&self, gpa: u64, size: u64, to_private: bool) -> Result<()> {
        if !self.caps.private_memory() {
            if to_private {
                return Err(RegionError::KindUnsupported {
                    kind: MemoryKind::Private,
                    reason: self.caps.private_memory_missing(),
                }
                .into());
            }
            return Ok(());
        }
        let mem = self.mem();
        set_private(&self.fd, gpa, size, to_private)?;
        self.shared.stats.call("KVM_SET_MEMORY_ATTRIBUTES");
        if !to_private {
            for slot in mem.overlapping(gpa, size) {
                if let Backing::Private { gmem, .. } = &slot.backing {
                    let start = gpa.max(slot.region.gpa);
                    let end = (gpa + size).min(slot.region.end());
                    punch_hole(gmem, start - slot.region.gpa, end - start)?;
                }
            }
        }
        Ok(())
    }
}

/// The plain-KVM [`VmOps`].
pub struct KvmVm {
    core: Arc<VmCore>,
}

impl KvmVm {
    /// `KVM_CREATE_VM` and the architecture's VM setup (x86: TSS, CPUID, hidden slot).
    pub(crate) fn new(
        kvm: &Kvm,
        caps: &HostCaps,
        shared: Arc<VmShared>,
        config: &VmConfig,
    ) -> Result<Self> {
        let addr_bits = shared.addr_bits;
        let fd = arch::create_vm_fd(kvm, addr_bits)?;
        shared.stats.call("KVM_CREATE_VM");
        let mut caps = caps.clone();
        caps.refine_for_vm(&fd);
        if caps.map_gpa_range_exit() {
            let cap = kvm_bindings::kvm_enable_cap {
                cap: kvm_bindings::KVM_CAP_EXIT_HYPERCALL,
                args: [1 << crate::probe::KVM_HC_MAP_GPA_RANGE, 0, 0, 0],
                ..Default::default()
            };
            fd.enable_cap(&cap)
                .map_err(|e| Error::os("KVM_ENABLE_CAP(KVM_CAP_EXIT_HYPERCALL)", e))?;
            shared.stats.call("KVM_ENABLE_CAP");
        }
        let run_size = kvm
            .get_vcpu_mmap_size()
            .map_err(|e| Error::os("KVM_GET_VCPU_MMAP_SIZE", e))?;
        let mut mem = Memory::new(caps.nr_memslots);
        let arch = arch::VmArch::new(kvm, &fd, &caps, &mut mem, config.vcpus, addr_bits)?;
        Ok(Self {
            core: Arc::new(VmCore {
                shared,
                caps,
                run_size,
                mem: Mutex::new(mem),
                log: Mutex::new(measure::new_log()),
                arch,
                fd,
            }),
        })
    }

    /// The capabilities of this VM's KVM.
    pub fn caps(&self) -> &HostCaps {
        &self.core.caps
    }

    /// The backend-owned guest-physical window, if the architecture has one (x86:
    /// `0xFFC0_0000..0x1_0000_0000`).
    pub fn reserved_window(&self) -> Option<(u64, u64)> {
        arch::reserved_window()
    }

    /// The name of the backing object of the region starting at `gpa` (for diagnostics and
    /// tests): `guest_memfd(mmap,init_shared)`, `memfd` or `guest_memfd(private)`.
    pub fn backing_of(&self, gpa: u64) -> Option<&'static str> {
        self.core.mem().find(gpa, 1).map(|s| s.backing.name())
    }
}

impl KvmVm {
    /// Applies the (now frozen) feature registers to a vCPU before its first `KVM_RUN`.
    pub(crate) fn apply_features(core: &VmCore, vcpu: &VcpuFd, id: u32) -> Result<()> {
        core.arch.apply_features(vcpu, id, &core.shared.features)
    }
}

impl VmOps for KvmVm {
    /// Feature words may only lose bits: a bit KVM does not support cannot be backed.
    fn check_feature(&self, def: &FeatureDef, _current: u64, value: u64) -> Result<()> {
        if value & !def.default != 0 {
            return Err(Error::FeatureRejected {
                feature: def.name.clone(),
                value,
                reason: format!(
                    "bits {:#x} are not supported by this host ({})",
                    value & !def.default,
                    def.backed_by.as_deref().unwrap_or("KVM")
                ),
            });
        }
        Ok(())
    }

    fn add_memory(&self, region: &MemoryRegion) -> Result<()> {
        if let Some((base, len)) = arch::reserved_window() {
            if region.gpa < base + len && base < region.end() {
                return Err(RegionError::Overlap {
                    gpa: region.gpa,
                    size: region.size,
                    existing: base,
                }
                .into());
            }
        }
        let c = &self.core;
        c.mem().add(&c.fd, &c.caps, region)?;
        let gmem = region.kind == MemoryKind::Shared && c.caps.gmem_shared() && !region.read_only
            || region.kind == MemoryKind::Private;
        c.shared.stats.call(if gmem {
            "KVM_CREATE_GUEST_MEMFD"
        } else {
            "memfd_create"
        });
        c.shared.stats.call(if gmem {
            "KVM_SET_USER_MEMORY_REGION2"
        } else {
            "KVM_SET_USER_MEMORY_REGION"
        });
        Ok(())
    }

    fn remove_memory(&self, region: &MemoryRegion) -> Result<()> {
        let c = &self.core;
        c.mem().remove(&c.fd, region.gpa)?;
        c.shared.stats.call("KVM_SET_USER_MEMORY_REGION");
        Ok(())
    }

    fn shared_memory(&self) -> GuestMemoryMmap {
        self.core.mem().shared_memory()
    }

    fn load(&self, region: &MemoryRegion, gpa: u64, bytes: &[u8], measure: Measure) -> Result<()> {
        let mem = self.core.mem();
        let slot = mem.find(region.gpa, region.size).ok_or(Error::NotMapped {
            gpa,
            len: bytes.len() as u64,
            what: "a memory region",
        })?;
        slot.write(gpa, bytes)?;
        drop(mem);
        if measure == Measure::Yes {
            self.core.log().events.push(MeasurementEvent::Load {
                gpa,
                content: Content::bytes(bytes.to_vec()),
            });
        }
        Ok(())
    }

    fn create_vcpu(&self, id: u32, init: &VcpuInit) -> Result<Box<dyn VcpuOps>> {
        let c = &self.core;
        let fd =
            c.fd.create_vcpu(u64::from(id))
                .map_err(|e| Error::os("KVM_CREATE_VCPU", e))?;
        c.shared.stats.call("KVM_CREATE_VCPU");
        c.arch
            .setup_vcpu(&fd, id, init, &c.mem(), &c.shared.features)?;
        for ioctl in arch::VCPU_SETUP_IOCTLS {
            c.shared.stats.call(ioctl);
        }
        if id == 0 {
            c.log().events.push(MeasurementEvent::Vcpu {
                id,
                pc: init.entry,
                args: init.args.clone(),
            });
        }
        Ok(Box::new(KvmVcpu::new(fd, Arc::clone(c), id)))
    }

    fn finalize(&self) -> Result<()> {
        // Plain KVM has nothing to seal: the log is frozen by the lifecycle (measured loads
        // are refused from now on) and the digest is computed from it.
        Ok(())
    }

    fn measurement(&self) -> Result<Measurement> {
        measure::measurement(&self.core.log())
    }

    fn measurement_log(&self) -> MeasurementLog {
        self.core.log().clone()
    }

    fn convert(&self, gpa: u64, size: u64, to: MemoryKind) -> Result<()> {
        let kind = {
            let mem = self.core.mem();
            mem.find(gpa, size).map(|s| s.region.kind)
        };
        match (kind, to) {
            (Some(MemoryKind::Shared), MemoryKind::Shared) => Ok(()),
            (Some(MemoryKind::Shared), MemoryKind::Private) if self.core.caps.private_memory() => {
                Err(Error::Unsupported(
                    "a shared region has no private guest_memfd behind it; add the range as a \
                     private region instead"
                        .into(),
                ))
            }
            _ => self
                .core
                .apply_conversion(gpa, size, to == MemoryKind::Private),
        }
    }

    fn destroy(&self) -> Result<()> {
        let c = &self.core;
        c.mem().clear(&c.fd)
    }

    fn guest_platform(&self) -> Box<dyn GuestPlatform + Send + Sync> {
        crate::platform::host(&self.core.caps)
    }
}
