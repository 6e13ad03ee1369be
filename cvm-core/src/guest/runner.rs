//! The host side of a portable guest program: [`launch`] builds a VM running it, and
//! [`Runner`] serves its exits until it powers off.
//!
//! The runner answers every exit a lowered program can cause:
//!
//! | exit | answer |
//! |---|---|
//! | MMIO write to the doorbell page | decoded by [`DoorbellState`] into [`Report`]s; `Resume::Done` |
//! | MMIO read/write inside a [`TestDevice`] | reads: the programmed value for that address (0 if none), masked to the access size; writes: recorded; `Resume::MmioRead` / `Resume::Done` |
//! | any other MMIO, doorbell reads | [`RunError::UnexpectedMmio`] |
//! | `ConvertMemory` | `Resume::Conversion(policy)` (accept by default), recorded |
//! | `HostCall` | the handler's `[ret0, ret1]` (default `[nr, 0]`), recorded |
//! | `SysReg` | `Resume::SysReg(entropy)`; for the RISC-V seed CSR (0x015) `0x8000_0000 \| (entropy & 0xffff)` (OPST = ES16) |
//! | `Halt`, `Interrupted` | `Resume::Done` |
//! | `SystemOff`, `Reset`, `Fault` | the run ends (Ok); [`RunOutcome::end`] says which |
//! | `Pio` | [`RunError::UnexpectedExit`] |
//!
//! Every run has an exit budget (default [`DEFAULT_EXIT_BUDGET`]); exceeding it is
//! [`RunError::ExitBudget`], so a broken program never hangs the host.

use std::collections::BTreeMap;

use super::doorbell::{DoorbellError, DoorbellState, Report};
use super::lower::{lower, GuestImage, LowerError};
use super::platform::{Layout, NotSupported};
use super::program::{Program, Slot};
use crate::config::{Measure, VcpuInit, VmConfig};
use crate::error::Error;
use crate::exit::{mask_to_size, ExitKind, Resume, VmExit};
use crate::memory::{MemoryKind, MemoryRegion, PAGE_SIZE};
use crate::vm::{Backend, Vcpu, Vm};

/// Exits a run may take before [`RunError::ExitBudget`].
pub const DEFAULT_EXIT_BUDGET: u64 = 100_000;

/// The RISC-V seed CSR number, answered in the Zkr format.
const SEED_CSR: u64 = 0x015;

/// One recorded device write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceWrite {
    /// Guest-physical address (device view).
    pub gpa: u64,
    /// Access width.
    pub size: u8,
    /// The value (masked to `size`).
    pub value: u64,
}

/// A bank of MMIO registers at `base`: reads return programmed per-address values masked to
/// the access size (0 where nothing was programmed); writes are recorded.
#[derive(Debug, Clone)]
pub struct TestDevice {
    base: u64,
    size: u64,
    reads: BTreeMap<u64, u64>,
}

impl TestDevice {
    /// A device covering `[base, base + size)`.
    pub fn new(base: u64, size: u64) -> Self {
        Self {
            base,
            size,
            reads: BTreeMap::new(),
        }
    }

    /// Whether `[gpa, gpa + len)` lies inside the device.
    pub fn contains(&self, gpa: u64, len: u64) -> bool {
        gpa >= self.base
            && gpa
                .checked_add(len)
                .is_some_and(|end| end <= self.base.saturating_add(self.size))
    }

    /// Makes reads at offset `offset` return `value` (masked to the access size).
    pub fn set_read(&mut self, offset: u64, value: u64) {
        self.reads.insert(offset, value);
    }

    /// What a read of `size` bytes at `gpa` returns.
    pub fn read(&self, gpa: u64, size: u8) -> u64 {
        let offset = gpa.wrapping_sub(self.base);
        mask_to_size(self.reads.get(&offset).copied().unwrap_or(0), size)
    }
}

/// A guest conversion request and the answer it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConversionRecord {
    /// Start.
    pub gpa: u64,
    /// Length.
    pub size: u64,
    /// Direction.
    pub to_private: bool,
    /// The answer.
    pub accepted: bool,
}

/// A host call and the answer it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostCallRecord {
    /// Call number as the backend reported it.
    pub nr: u64,
    /// Arguments.
    pub args: [u64; 6],
    /// Return values.
    pub ret: [u64; 2],
}

/// What a run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    /// Doorbell reports, in order.
    pub reports: Vec<Report>,
    /// Exits by kind.
    pub exits: BTreeMap<ExitKind, u64>,
    /// Writes to test devices, in order.
    pub device_writes: Vec<DeviceWrite>,
    /// Conversion requests, in order.
    pub conversions: Vec<ConversionRecord>,
    /// Host calls, in order.
    pub host_calls: Vec<HostCallRecord>,
    /// Whether the program reported `Done` (it reached its end rather than faulting).
    pub done: bool,
    /// Whether the run ended with `VmExit::SystemOff`.
    pub powered_off: bool,
    /// The exit that ended the run (`SystemOff`, `Reset` or `Fault`).
    pub end: VmExit,
}

impl RunOutcome {
    /// The last value reported for `slot`.
    pub fn value(&self, slot: Slot) -> Option<u64> {
        self.reports.iter().rev().find_map(|r| match r {
            Report::Value { slot: s, value } if *s == slot => Some(*value),
            _ => None,
        })
    }

    /// All reported values, in order.
    pub fn values(&self) -> Vec<(Slot, u64)> {
        self.reports
            .iter()
            .filter_map(|r| match r {
                Report::Value { slot, value } => Some((*slot, *value)),
                _ => None,
            })
            .collect()
    }

    /// The bytes reported for measurement register `index`.
    pub fn measurement(&self, index: u8) -> Option<&[u8]> {
        self.reports.iter().find_map(|r| match r {
            Report::Measurement { index: i, bytes } if *i == index => Some(bytes.as_slice()),
            _ => None,
        })
    }

    /// Failed expectations, platform failures and exceptions.
    pub fn failures(&self) -> Vec<&Report> {
        self.reports.iter().filter(|r| r.is_failure()).collect()
    }

    /// Exits of `kind`.
    pub fn exits_of(&self, kind: ExitKind) -> u64 {
        self.exits.get(&kind).copied().unwrap_or(0)
    }

    /// Reached its end (powered off, or stopped its vCPU after DONE) and reported no failure.
    pub fn passed(&self) -> bool {
        let ended = self.powered_off || (self.done && self.end == VmExit::Halt);
        self.done && ended && self.failures().is_empty()
    }
}

/// Why a run stopped without an outcome.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The vCPU failed.
    #[error("vcpu run failed")]
    Vcpu(#[from] Error),
    /// More exits than the budget.
    #[error("exit budget of {budget} exhausted (last exit {last:?})")]
    ExitBudget {
        /// The budget.
        budget: u64,
        /// The last exit's kind.
        last: ExitKind,
    },
    /// An MMIO access outside the doorbell (writes) and the test devices.
    #[error("unexpected MMIO {kind} of {size} bytes at {gpa:#x}", kind = if *write { "write" } else { "read" })]
    UnexpectedMmio {
        /// Address.
        gpa: u64,
        /// Width.
        size: u8,
        /// Whether it was a write.
        write: bool,
    },
    /// An exit no lowered program causes.
    #[error("unexpected exit {0:?}")]
    UnexpectedExit(VmExit),
    /// A malformed doorbell write.
    #[error(transparent)]
    Doorbell(#[from] DoorbellError),
    /// `device_read` named an address outside every test device.
    #[error("no test device at {0:#x}")]
    NoDevice(u64),
}

type HostCallHandler = Box<dyn FnMut(u64, [u64; 6]) -> [u64; 2] + Send>;

/// Serves a lowered program's exits: the doorbell, the test devices, conversions, host calls
/// and entropy reads (see the module docs for each answer).
pub struct Runner {
    doorbell: u64,
    devices: Vec<TestDevice>,
    accept_conversions: bool,
    host_call: HostCallHandler,
    entropy: u64,
    budget: u64,
    misconfigured: Option<u64>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("doorbell", &self.doorbell)
            .field("devices", &self.devices)
            .field("accept_conversions", &self.accept_conversions)
            .field("entropy", &self.entropy)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl Runner {
    /// A runner for `layout`: the doorbell page and one [`TestDevice`] per `layout.devices`
    /// range; conversions accepted, host calls answered `[nr, 0]`, entropy
    /// `0x5eed_5eed_5eed_5eed`, budget [`DEFAULT_EXIT_BUDGET`].
    pub fn new(layout: &Layout) -> Self {
        Self {
            doorbell: layout.doorbell,
            devices: layout
                .devices
                .iter()
                .map(|&(base, size)| TestDevice::new(base, size))
                .collect(),
            accept_conversions: true,
            host_call: Box::new(|nr, _| [nr, 0]),
            entropy: 0x5eed_5eed_5eed_5eed,
            budget: DEFAULT_EXIT_BUDGET,
            misconfigured: None,
        }
    }

    /// Makes device reads at `gpa` return `value`; `run` fails with [`RunError::NoDevice`] if
    /// `gpa` is in no test device.
    pub fn device_read(&mut self, gpa: u64, value: u64) -> &mut Self {
        match self.devices.iter_mut().find(|d| d.contains(gpa, 1)) {
            Some(d) => {
                let offset = gpa - d.base;
                d.set_read(offset, value);
            }
            None => self.misconfigured = Some(gpa),
        }
        self
    }

    /// The test devices, in `layout.devices` order.
    pub fn devices_mut(&mut self) -> &mut [TestDevice] {
        &mut self.devices
    }

    /// Accept (`true`, default) or reject every guest conversion request.
    pub fn accept_conversions(&mut self, accept: bool) -> &mut Self {
        self.accept_conversions = accept;
        self
    }

    /// Answers host calls with `handler(nr, args)`.
    pub fn host_call_handler(
        &mut self,
        handler: impl FnMut(u64, [u64; 6]) -> [u64; 2] + Send + 'static,
    ) -> &mut Self {
        self.host_call = Box::new(handler);
        self
    }

    /// The value forwarded entropy reads return.
    pub fn entropy(&mut self, value: u64) -> &mut Self {
        self.entropy = value;
        self
    }

    /// The most exits one run may take.
    pub fn exit_budget(&mut self, budget: u64) -> &mut Self {
        self.budget = budget;
        self
    }

    fn sysreg_answer(&self, reg: u64) -> u64 {
        if reg == SEED_CSR {
            0x8000_0000 | (self.entropy & 0xffff)
        } else {
            self.entropy
        }
    }

    /// Runs `vcpu` (which has not run yet) until the guest powers off, resets or faults.
    pub fn run(&mut self, vcpu: &mut dyn Vcpu) -> Result<RunOutcome, RunError> {
        self.run_observed(vcpu, &mut |_, _, _| {})
    }

    /// Like [`Runner::run`], calling `observe(exit, resume, vcpu)` for every exit after the
    /// runner chose its answer and before the vCPU is entered again (for tracing, statistics
    /// snapshots and comparisons; it cannot change the answer).
    pub fn run_observed(
        &mut self,
        vcpu: &mut dyn Vcpu,
        observe: &mut dyn FnMut(&VmExit, &Resume, &dyn Vcpu),
    ) -> Result<RunOutcome, RunError> {
        if let Some(gpa) = self.misconfigured {
            return Err(RunError::NoDevice(gpa));
        }
        let mut bell = DoorbellState::default();
        let mut exits: BTreeMap<ExitKind, u64> = BTreeMap::new();
        let mut device_writes = Vec::new();
        let mut conversions = Vec::new();
        let mut host_calls = Vec::new();
        let mut resume = Resume::Done;
        let mut taken = 0u64;
        loop {
            let exit = vcpu.run(resume)?;
            let observed = exit.clone();
            let kind = exit.kind();
            *exits.entry(kind).or_default() += 1;
            taken += 1;
            if taken > self.budget {
                return Err(RunError::ExitBudget {
                    budget: self.budget,
                    last: kind,
                });
            }
            resume = match exit {
                VmExit::Mmio { gpa, size, write } => {
                    let len = u64::from(size);
                    let in_bell = gpa >= self.doorbell && gpa - self.doorbell < PAGE_SIZE;
                    match (write, in_bell) {
                        (Some(v), true) => {
                            bell.write(gpa - self.doorbell, size, v)?;
                            Resume::Done
                        }
                        (write, false) => {
                            let device = self.devices.iter().find(|d| d.contains(gpa, len));
                            match (device, write) {
                                (Some(_), Some(v)) => {
                                    let value = mask_to_size(v, size);
                                    device_writes.push(DeviceWrite { gpa, size, value });
                                    Resume::Done
                                }
                                (Some(d), None) => Resume::MmioRead(d.read(gpa, size)),
                                (None, write) => {
                                    return Err(RunError::UnexpectedMmio {
                                        gpa,
                                        size,
                                        write: write.is_some(),
                                    })
                                }
                            }
                        }
                        (None, true) => {
                            return Err(RunError::UnexpectedMmio {
                                gpa,
                                size,
                                write: false,
                            })
                        }
                    }
                }
                VmExit::ConvertMemory {
                    gpa,
                    size,
                    to_private,
                } => {
                    let accepted = self.accept_conversions;
                    conversions.push(ConversionRecord {
                        gpa,
                        size,
                        to_private,
                        accepted,
                    });
                    Resume::Conversion(accepted)
                }
                VmExit::HostCall { nr, args } => {
                    let ret = (self.host_call)(nr, args);
                    host_calls.push(HostCallRecord { nr, args, ret });
                    Resume::HostCall(ret)
                }
                VmExit::SysReg { reg, .. } => Resume::SysReg(self.sysreg_answer(reg)),
                // After DONE, a halt is a stopped vCPU (Op::StopVcpu): the program is over.
                end @ VmExit::Halt if bell.done => {
                    observe(&observed, &Resume::Done, &*vcpu);
                    return Ok(RunOutcome {
                        reports: bell.reports,
                        exits,
                        device_writes,
                        conversions,
                        host_calls,
                        done: bell.done,
                        powered_off: false,
                        end,
                    });
                }
                VmExit::Halt | VmExit::Interrupted => Resume::Done,
                end @ (VmExit::SystemOff | VmExit::Reset | VmExit::Fault { .. }) => {
                    observe(&observed, &Resume::Done, &*vcpu);
                    return Ok(RunOutcome {
                        reports: bell.reports,
                        exits,
                        device_writes,
                        conversions,
                        host_calls,
                        done: bell.done,
                        powered_off: end == VmExit::SystemOff,
                        end,
                    });
                }
                pio @ VmExit::Pio { .. } => return Err(RunError::UnexpectedExit(pio)),
            };
            observe(&observed, &resume, &*vcpu);
        }
    }
}

/// A VM built by [`launch`], finalized and ready to run.
pub struct Launched {
    /// The VM.
    pub vm: Box<dyn Vm>,
    /// vCPU 0, entering at `image.entry`.
    pub vcpu: Box<dyn Vcpu>,
    /// The lowered program.
    pub image: GuestImage,
}

impl std::fmt::Debug for Launched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launched")
            .field("image", &self.image)
            .finish_non_exhaustive()
    }
}

/// Why [`launch`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// A VM call failed.
    #[error(transparent)]
    Vm(#[from] Error),
    /// Lowering failed (including [`LowerError::NotSupported`]: report a skip).
    #[error(transparent)]
    Lower(#[from] LowerError),
    /// The layout does not fit the RAM region.
    #[error("layout does not fit the RAM region: {0}")]
    Layout(&'static str),
}

impl LaunchError {
    /// The platform's reason when the program needs something it cannot do (a skip, not a
    /// failure).
    pub fn not_supported(&self) -> Option<&NotSupported> {
        match self {
            LaunchError::Lower(LowerError::NotSupported(n)) => Some(n),
            _ => None,
        }
    }
}

/// Builds a VM on `backend` that runs `program`: creates the VM, adds `ram` (private if the
/// backend has private memory, else shared — `ram.kind` is ignored), lowers the program with
/// the VM's [`guest_platform`](Vm::guest_platform), loads the code (zero-padded to whole
/// pages) at `layout.code` and a zeroed data page at `layout.data`, both measured, creates
/// vCPU 0 at the entry and finalizes.
pub fn launch(
    backend: &dyn Backend,
    config: &VmConfig,
    program: &Program,
    layout: &Layout,
    ram: MemoryRegion,
) -> Result<Launched, LaunchError> {
    let kind = if backend.info().private_memory {
        MemoryKind::Private
    } else {
        MemoryKind::Shared
    };
    let ram = MemoryRegion { kind, ..ram };
    if !ram.contains(layout.data, PAGE_SIZE) {
        return Err(LaunchError::Layout("the data page is outside RAM"));
    }
    let mmio = std::iter::once((layout.doorbell, PAGE_SIZE)).chain(layout.devices.iter().copied());
    for (base, size) in mmio {
        if base < ram.end() && ram.gpa < base.saturating_add(size) {
            return Err(LaunchError::Layout("an MMIO range overlaps RAM"));
        }
    }
    let vm = backend.create_vm(config)?;
    vm.add_memory(ram)?;
    let platform = vm.guest_platform();
    let image = lower(program, platform.as_ref(), layout)?;
    let mut code = image.code.clone();
    code.resize(code.len().next_multiple_of(PAGE_SIZE as usize), 0);
    let code_len = code.len() as u64;
    if !ram.contains(layout.code, code_len) {
        return Err(LaunchError::Layout("the code is outside RAM"));
    }
    if layout.code < layout.data + PAGE_SIZE && layout.data < layout.code + code_len {
        return Err(LaunchError::Layout("the code overlaps the data page"));
    }
    vm.load(layout.code, &code, Measure::Yes)?;
    vm.load(layout.data, &[0; PAGE_SIZE as usize], Measure::Yes)?;
    let vcpu = vm.create_vcpu(VcpuInit::boot(image.entry, &[]))?;
    vm.finalize()?;
    Ok(Launched { vm, vcpu, image })
}
