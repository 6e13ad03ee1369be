#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    dead_code
)]
//! A test-only backend with no hardware behind it: it scripts the exits its vCPU returns and
//! records what the contract let through, so the shared lifecycle, resume validation, region
//! validation and feature freeze can be tested without KVM or a firmware model.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use cvm_core::guest::{GuestPlatform, Layout, NotSupported, PlatformStep};
use cvm_core::vm_memory::GuestMemoryMmap;
use cvm_core::{
    Arch, Backend, BackendInfo, Confidentiality, FeatureDef, HashAlgorithm, Implementation,
    ManagedVm, Measure, Measurement, MeasurementEvent, MeasurementLog, MemoryKind, MemoryRegion,
    Result, Resume, VcpuInit, VcpuOps, Vm, VmConfig, VmExit, VmOps, VmShared,
};

/// What the fake recorded, shared with the test.
#[derive(Debug, Default)]
pub struct Journal {
    /// Calls that reached the backend, in order.
    pub calls: Vec<String>,
    /// Resumes the vCPU received.
    pub resumes: Vec<Resume>,
}

/// The fake backend. `exits` are returned by vCPU runs in order; when empty, `SystemOff`.
pub struct FakeBackend {
    pub journal: Arc<Mutex<Journal>>,
    pub exits: Arc<Mutex<VecDeque<VmExit>>>,
    pub confidentiality: Confidentiality,
}

impl FakeBackend {
    pub fn new(exits: Vec<VmExit>) -> Self {
        Self {
            journal: Arc::default(),
            exits: Arc::new(Mutex::new(exits.into())),
            confidentiality: Confidentiality::ArmCca,
        }
    }

    pub fn calls(&self) -> Vec<String> {
        self.journal.lock().unwrap().calls.clone()
    }
}

pub fn features() -> Vec<FeatureDef> {
    vec![
        FeatureDef {
            name: "ID_AA64PFR0_EL1".into(),
            default: 0x1101,
            backed_by: None,
            can_disable: true,
            can_enable: false,
        },
        FeatureDef {
            name: "zkr".into(),
            default: 1,
            backed_by: Some("zkr".into()),
            can_disable: false,
            can_enable: false,
        },
    ]
}

struct FakeVm {
    journal: Arc<Mutex<Journal>>,
    exits: Arc<Mutex<VecDeque<VmExit>>>,
    log: Mutex<MeasurementLog>,
    _shared: Arc<VmShared>,
}

impl FakeVm {
    fn note(&self, s: String) {
        self.journal.lock().unwrap().calls.push(s);
    }
}

struct FakeVcpu {
    journal: Arc<Mutex<Journal>>,
    exits: Arc<Mutex<VecDeque<VmExit>>>,
}

impl VcpuOps for FakeVcpu {
    fn run(&mut self, resume: Resume, _pending: Option<&VmExit>) -> Result<VmExit> {
        self.journal.lock().unwrap().resumes.push(resume);
        Ok(self
            .exits
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(VmExit::SystemOff))
    }
}

struct FakePlatform;

impl GuestPlatform for FakePlatform {
    fn name(&self) -> &'static str {
        "fake"
    }
    fn arch(&self) -> Arch {
        Arch::Aarch64
    }
    fn share(&self, _: u64, _: u64) -> Result<Vec<PlatformStep>, NotSupported> {
        Ok(vec![])
    }
    fn unshare(&self, _: u64, _: u64) -> Result<Vec<PlatformStep>, NotSupported> {
        Ok(vec![])
    }
    fn read_measurement(
        &self,
        _: u8,
        _: &Layout,
    ) -> Result<(Vec<PlatformStep>, usize), NotSupported> {
        Ok((vec![], 32))
    }
    fn read_entropy(&self) -> Result<Vec<PlatformStep>, NotSupported> {
        Ok(vec![])
    }
    fn host_call(&self, _: u64, _: &[u64]) -> Result<Vec<PlatformStep>, NotSupported> {
        Ok(vec![])
    }
    fn system_off(&self) -> Vec<PlatformStep> {
        vec![]
    }
}

impl VmOps for FakeVm {
    fn add_memory(&self, region: &MemoryRegion) -> Result<()> {
        self.note(format!("add_memory {:#x}", region.gpa));
        Ok(())
    }
    fn remove_memory(&self, region: &MemoryRegion) -> Result<()> {
        self.note(format!("remove_memory {:#x}", region.gpa));
        Ok(())
    }
    fn shared_memory(&self) -> GuestMemoryMmap {
        GuestMemoryMmap::default()
    }
    fn load(&self, _: &MemoryRegion, gpa: u64, bytes: &[u8], measure: Measure) -> Result<()> {
        self.note(format!("load {gpa:#x} {measure:?}"));
        if measure == Measure::Yes {
            self.log
                .lock()
                .unwrap()
                .events
                .push(MeasurementEvent::Load {
                    gpa,
                    content: cvm_core::Content::bytes(bytes),
                });
        }
        Ok(())
    }
    fn create_vcpu(&self, id: u32, _: &VcpuInit) -> Result<Box<dyn VcpuOps>> {
        self.note(format!("create_vcpu {id}"));
        Ok(Box::new(FakeVcpu {
            journal: Arc::clone(&self.journal),
            exits: Arc::clone(&self.exits),
        }))
    }
    fn finalize(&self) -> Result<()> {
        self.note("finalize".into());
        Ok(())
    }
    fn measurement(&self) -> Result<Measurement> {
        Ok(Measurement {
            algorithm: HashAlgorithm::Sha256,
            registers: vec![],
        })
    }
    fn measurement_log(&self) -> MeasurementLog {
        self.log.lock().unwrap().clone()
    }
    fn convert(&self, gpa: u64, size: u64, to: MemoryKind) -> Result<()> {
        self.note(format!("convert {gpa:#x} {size:#x} {to:?}"));
        Ok(())
    }
    fn destroy(&self) -> Result<()> {
        self.note("destroy".into());
        Ok(())
    }
    fn guest_platform(&self) -> Box<dyn GuestPlatform + Send + Sync> {
        Box::new(FakePlatform)
    }
}

impl Backend for FakeBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            name: "fake".into(),
            arch: Arch::Aarch64,
            confidentiality: self.confidentiality,
            implementation: Implementation::Model,
            available: true,
            unavailable_reason: None,
            private_memory: true,
            conversions: true,
            measurement: vec![HashAlgorithm::Sha256],
            max_vcpus: 4,
            addr_bits: 39,
            features: vec![],
            capabilities: vec![],
        }
    }

    fn create_vm(&self, config: &VmConfig) -> Result<Box<dyn Vm>> {
        let journal = Arc::clone(&self.journal);
        let exits = Arc::clone(&self.exits);
        let vm = ManagedVm::new(config, 39, features(), move |shared| {
            Ok(FakeVm {
                journal,
                exits,
                log: Mutex::new(MeasurementLog::new(HashAlgorithm::Sha256)),
                _shared: shared,
            })
        })?;
        Ok(Box::new(vm))
    }
}
