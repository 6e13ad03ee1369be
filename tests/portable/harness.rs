//! The per-backend environment every portable test body receives, and shared helpers.
//!
//! A test body is a plain `fn(&Env)`; [`per_backend!`](crate::per_backend) turns it into one
//! `#[test]` per backend. The environment owns the concrete backend (so teardown tests reach
//! the model's counters) and holds a per-backend lock: the tests of one backend run one at a
//! time (the three backends still run side by side), which keeps the backend's file
//! descriptors in `/proc/self/fd` stable for the teardown check and spares the shared
//! two-core machine.

use std::fmt::Display;
use std::sync::{Mutex, MutexGuard};

use cvm::guest::{
    doorbell::DoorbellState, launch, lower, GuestImage, LaunchError, Launched, Layout, Program,
    RunOutcome, Runner,
};
use cvm::vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use cvm::{
    Backend, BackendInfo, Measure, MemoryKind, MemoryRegion, Resume, Vcpu, VcpuInit, Vm, VmConfig,
    VmExit, PAGE_SIZE,
};

/// Base of the standard RAM region (code at its start, data page at +1 MiB).
pub const RAM: u64 = Layout::STANDARD_RAM_BASE;
/// Size of the standard RAM region.
pub const RAM_SIZE: u64 = Layout::STANDARD_RAM_SIZE;
/// A RAM page (+2 MiB) the programs use for their own data; far from code and data page.
pub const SCRATCH: u64 = RAM + 0x20_0000;
/// The standard test device.
pub const DEV: u64 = 0x0a00_0000;
/// Where tests put a VMM-owned shared region (below 4 GiB, clear of the x86 hidden window).
pub const SHARED_GPA: u64 = 0xC000_0000;
/// A second RAM region used by the memory-fault tests.
pub const RAM2: u64 = 0x9000_0000;

/// Which backend a generated test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Which {
    /// `cvm::kvm` on `/dev/kvm`.
    Kvm,
    /// `cvm::cca` over the in-process RMM model.
    ArmCca,
    /// `cvm::cove` over the in-process TSM model.
    RiscvCove,
}

/// The backend, concretely typed so tests can reach backend-specific introspection.
pub enum Concrete {
    /// Plain KVM.
    Kvm(cvm::kvm::KvmBackend),
    /// Arm CCA.
    Cca(cvm::cca::CcaBackend),
    /// RISC-V CoVE.
    Cove(cvm::cove::CoveBackend),
}

/// What a test body gets: one backend, its info, and helpers.
pub struct Env {
    /// Which backend.
    pub which: Which,
    /// The backend (declared before the lock so it is dropped first).
    pub backend: Concrete,
    /// Its info.
    pub info: BackendInfo,
    _lock: MutexGuard<'static, ()>,
}

/// One lock per backend (indexed by [`Which`]).
static LOCKS: [Mutex<()>; 3] = [Mutex::new(()), Mutex::new(()), Mutex::new(())];

impl Env {
    /// Opens `which`. For KVM without a usable `/dev/kvm`: panics when `CVM_REQUIRE_KVM=1`,
    /// else prints `skipped: <reason>` and returns `None`.
    pub fn open(which: Which) -> Option<Env> {
        let lock = LOCKS[which as usize]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let backend = match which {
            Which::Kvm => match cvm::kvm::KvmBackend::open() {
                Ok(b) => Concrete::Kvm(b),
                Err(e) => {
                    if std::env::var("CVM_REQUIRE_KVM").as_deref() == Ok("1") {
                        panic!("CVM_REQUIRE_KVM=1 but the kvm backend is unavailable: {e}");
                    }
                    println!("skipped: {e}");
                    return None;
                }
            },
            Which::ArmCca => Concrete::Cca(cvm::cca::CcaBackend::model()),
            Which::RiscvCove => Concrete::Cove(cvm::cove::CoveBackend::model()),
        };
        let info = match &backend {
            Concrete::Kvm(b) => b.info(),
            Concrete::Cca(b) => b.info(),
            Concrete::Cove(b) => b.info(),
        };
        assert!(info.available, "{info:#?}");
        Some(Env {
            which,
            backend,
            info,
            _lock: lock,
        })
    }

    /// The backend as the portable trait object.
    pub fn backend(&self) -> &dyn Backend {
        match &self.backend {
            Concrete::Kvm(b) => b,
            Concrete::Cca(b) => b,
            Concrete::Cove(b) => b,
        }
    }

    /// The backend's name (`kvm`, `arm-cca`, `riscv-cove`).
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// `VmConfig::new(info.confidentiality)`.
    pub fn config(&self) -> VmConfig {
        VmConfig::new(self.info.confidentiality)
    }

    /// Whether the VMs are confidential.
    pub fn confidential(&self) -> bool {
        self.info.confidentiality != cvm::Confidentiality::None
    }

    /// The kind `launch` gives RAM on this backend.
    pub fn ram_kind(&self) -> MemoryKind {
        if self.info.private_memory {
            MemoryKind::Private
        } else {
            MemoryKind::Shared
        }
    }

    /// The standard RAM region with this backend's kind.
    pub fn ram(&self) -> MemoryRegion {
        MemoryRegion {
            kind: self.ram_kind(),
            ..Layout::standard_ram()
        }
    }

    /// Prints why (part of) a test does not apply here. Returns `()` so bodies can
    /// `return env.skip(..)`.
    pub fn skip(&self, reason: impl Display) {
        println!("skipped: {}: {reason}", self.name());
    }

    /// The probed capabilities that are absent and whose names contain one of `topics`
    /// (all absent ones if none match), as `name (detail)`, for skip reasons.
    pub fn absent_capabilities(&self, topics: &[&str]) -> String {
        let absent: Vec<&cvm::Capability> = self
            .info
            .capabilities
            .iter()
            .filter(|c| !c.present)
            .collect();
        let relevant: Vec<&&cvm::Capability> = absent
            .iter()
            .filter(|c| topics.iter().any(|t| c.name.contains(t)))
            .collect();
        let shown: Vec<String> = if relevant.is_empty() {
            absent
                .iter()
                .map(|c| format!("{} ({})", c.name, c.detail))
                .collect()
        } else {
            relevant
                .iter()
                .map(|c| format!("{} ({})", c.name, c.detail))
                .collect()
        };
        if shown.is_empty() {
            "no capability reported absent".into()
        } else {
            shown.join("; ")
        }
    }

    /// Skips (returning `true`) when the backend has no private↔shared conversions.
    pub fn skip_without_conversions(&self) -> bool {
        if self.info.conversions {
            return false;
        }
        self.skip(format!(
            "no private<->shared conversions (BackendInfo.conversions = false): {}",
            self.absent_capabilities(&["MEMORY_ATTRIBUTES", "MAP_GPA_RANGE", "hypercall"])
        ));
        true
    }

    /// `cvm::guest::launch` with [`Env::config`] and the standard RAM.
    pub fn try_launch(&self, program: &Program, layout: &Layout) -> Result<Launched, LaunchError> {
        self.try_launch_with(&self.config(), program, layout)
    }

    /// `cvm::guest::launch` with `config` and the standard RAM.
    pub fn try_launch_with(
        &self,
        config: &VmConfig,
        program: &Program,
        layout: &Layout,
    ) -> Result<Launched, LaunchError> {
        launch(
            self.backend(),
            config,
            program,
            layout,
            Layout::standard_ram(),
        )
    }

    /// Launches or panics naming the backend.
    pub fn launch(&self, program: &Program, layout: &Layout) -> Launched {
        self.try_launch(program, layout)
            .unwrap_or_else(|e| panic!("{}: launch failed: {e} ({e:?})", self.name()))
    }

    /// Launches `program`, runs it with a [`Runner`] prepared by `setup`, and returns the
    /// outcome (panicking, with the backend's name and the last exit detail, on run errors).
    pub fn run(
        &self,
        program: &Program,
        layout: &Layout,
        setup: impl FnOnce(&mut Runner),
    ) -> (RunOutcome, Launched) {
        let mut l = self.launch(program, layout);
        let mut runner = Runner::new(layout);
        runner.exit_budget(10_000);
        setup(&mut runner);
        match runner.run(l.vcpu.as_mut()) {
            Ok(out) => (out, l),
            Err(e) => panic!(
                "{}: run failed: {e} ({e:?}); last exit detail: {:?}",
                self.name(),
                l.vcpu.exit_detail()
            ),
        }
    }
}

/// Runs `body` on `which` (or prints the skip when the backend is unavailable).
pub fn run_on(which: Which, body: fn(&Env)) {
    if let Some(env) = Env::open(which) {
        body(&env);
    }
}

/// Generates one `#[test]` per backend for a body `fn(&Env)`:
/// `per_backend!(body => body_kvm, body_arm_cca, body_riscv_cove);`.
#[macro_export]
macro_rules! per_backend {
    ($body:path => $kvm:ident, $cca:ident, $cove:ident) => {
        #[test]
        fn $kvm() {
            $crate::harness::run_on($crate::harness::Which::Kvm, $body);
        }
        #[test]
        fn $cca() {
            $crate::harness::run_on($crate::harness::Which::ArmCca, $body);
        }
        #[test]
        fn $cove() {
            $crate::harness::run_on($crate::harness::Which::RiscvCove, $body);
        }
    };
}

/// Lowers `program` for `vm` at `layout` and loads it the way `launch` does: the code
/// (zero-padded to whole pages) at `layout.code` and a zeroed data page, both measured.
pub fn load_program(vm: &dyn Vm, program: &Program, layout: &Layout) -> GuestImage {
    let platform = vm.guest_platform();
    let image = lower(program, platform.as_ref(), layout)
        .unwrap_or_else(|e| panic!("lowering for {} failed: {e}", platform.name()));
    let mut code = image.code.clone();
    code.resize(code.len().next_multiple_of(PAGE_SIZE as usize), 0);
    vm.load(layout.code, &code, Measure::Yes)
        .expect("load code");
    vm.load(layout.data, &[0; PAGE_SIZE as usize], Measure::Yes)
        .expect("load data page");
    image
}

/// A VM with the standard RAM (plus `extra` regions) running `program` on vCPU 0, finalized.
pub fn build(
    env: &Env,
    program: &Program,
    layout: &Layout,
    extra: &[MemoryRegion],
) -> (Box<dyn Vm>, Box<dyn Vcpu>) {
    let vm = env.backend().create_vm(&env.config()).expect("create_vm");
    vm.add_memory(env.ram()).expect("add RAM");
    for r in extra {
        vm.add_memory(*r)
            .unwrap_or_else(|e| panic!("{}: add {r:?}: {e}", env.name()));
    }
    let image = load_program(vm.as_ref(), program, layout);
    let vcpu = vm
        .create_vcpu(VcpuInit::boot(image.entry, &[]))
        .expect("create_vcpu");
    vm.finalize().expect("finalize");
    (vm, vcpu)
}

/// Drives `vcpu` by hand from `resume` until `SystemOff`: doorbell writes are decoded,
/// device reads answered with `read_value`, device writes acknowledged. Returns the doorbell.
pub fn drive_to_off(
    vcpu: &mut dyn Vcpu,
    layout: &Layout,
    mut resume: Resume,
    read_value: u64,
) -> DoorbellState {
    let mut bell = DoorbellState::default();
    for _ in 0..10_000 {
        let exit = vcpu.run(resume).expect("run");
        resume = match exit {
            VmExit::Mmio {
                gpa,
                size,
                write: Some(v),
            } if gpa >= layout.doorbell && gpa < layout.doorbell + PAGE_SIZE => {
                bell.write(gpa - layout.doorbell, size, v)
                    .expect("doorbell write");
                Resume::Done
            }
            VmExit::Mmio { write: Some(_), .. } => Resume::Done,
            VmExit::Mmio { write: None, .. } => Resume::MmioRead(read_value),
            VmExit::Halt | VmExit::Interrupted => Resume::Done,
            VmExit::SystemOff => return bell,
            other => panic!("unexpected exit {other:?}"),
        };
    }
    panic!("the guest did not power off within 10000 exits");
}

/// The u64 the VMM sees at `gpa` through `shared_memory()`, or `None` if no shared region
/// covers it (the host has no view of the address).
pub fn host_view(vm: &dyn Vm, gpa: u64) -> Option<u64> {
    vm.shared_memory().read_obj::<u64>(GuestAddress(gpa)).ok()
}

/// Whether `needle` occurs anywhere in the VMM-visible shared memory of `vm`.
pub fn shared_memory_contains(vm: &dyn Vm, needle: &[u8]) -> bool {
    let mem = vm.shared_memory();
    let found = mem.iter().any(|region| {
        let mut bytes = vec![0u8; region.len() as usize];
        region
            .read_slice(&mut bytes, cvm::vm_memory::MemoryRegionAddress(0))
            .expect("read shared region");
        bytes.windows(needle.len()).any(|w| w == needle)
    });
    found
}

/// Whether `shared_memory()` of `vm` covers `gpa`.
pub fn host_maps(vm: &dyn Vm, gpa: u64) -> bool {
    vm.shared_memory().address_in_range(GuestAddress(gpa))
}
