//! `cvm run SPEC.toml`: build the VM a [`Launch`] describes and run it with a console.
//!
//! [`build`] makes the portable calls in a fixed order — `create_vm`, `add_memory` per region,
//! `load` per image (with its measure flag), `create_vcpu` per vCPU (vCPU 0 boots), `finalize`
//! — the order [`Launch::measurement_log`] predicts. [`run`] then runs vCPU 0 in a VMM loop
//! that answers every [`VmExit`] with a [`Resume`]:
//!
//! | exit | answer |
//! |---|---|
//! | `Mmio` in the UART's 8 registers | a [`vm_superio::Serial`] (8250/16550); what the guest writes to THR goes to the console; reads return its registers (`MmioRead`) |
//! | `Mmio` in the doorbell page (writes) | decoded into [`Report`]s; `Done` |
//! | `Mmio` in the test device | reads: the programmed value; writes: recorded; `MmioRead` / `Done` |
//! | any other `Mmio` | `InjectAbort` (the guest sees an external abort / access fault); on x86 KVM, which cannot inject one, the run stops with [`RunError::UnhandledMmio`] |
//! | `Pio` (x86) | `in` reads all ones, `out` is ignored |
//! | `ConvertMemory` | accepted: `Conversion(true)` |
//! | `HostCall` | echoed: `HostCall([nr, 0])` (as the portable [`Runner`](cvm_core::guest::Runner)) |
//! | `SysReg` | host entropy: the RISC-V seed CSR in its Zkr format (`OPST = ES16`), other registers the raw value |
//! | `Halt`, `Interrupted` | `Done` (resumed) |
//! | `SystemOff` | the run ends: [`RunEnd::SystemOff`] |
//! | `Reset`, `Fault` | the run ends: [`RunEnd::Reset`], [`RunEnd::Fault`] |
//!
//! Every run has an exit budget ([`RunOptions::max_exits`]); when it is spent the run ends
//! with [`RunEnd::ExitBudget`], so nothing hangs. Device addresses are the device view (CCA's
//! unprotected-IPA bit is already stripped), so one UART base works on every backend.

use std::collections::BTreeMap;
use std::io::Write;

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};

use cvm_core::guest::doorbell::{DoorbellError, DoorbellState};
use cvm_core::guest::{DeviceWrite, Report, TestDevice, DEFAULT_EXIT_BUDGET};
use cvm_core::{
    mask_to_size, Arch, ExitKind, Measure, Measurement, Resume, Vcpu, VcpuInit, Vm, VmExit,
};

use crate::spec::{Devices, Launch, UART_SIZE};

/// The RISC-V seed CSR number.
const SEED_CSR: u64 = 0x015;

/// Why a run could not build or drive the VM (guest-caused endings are [`RunEnd`]s instead).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A backend call failed.
    #[error("{step}: {source}")]
    Vm {
        /// What was being done (`create_vm`, `add_memory 0x…`, `run`…).
        step: String,
        /// The backend's error.
        #[source]
        source: cvm_core::Error,
    },
    /// The console could not be written.
    #[error("console: {0}")]
    Console(String),
    /// A malformed doorbell write.
    #[error("doorbell: {0}")]
    Doorbell(#[from] DoorbellError),
    /// An MMIO access no device claims, on a backend that cannot inject an abort.
    #[error("unhandled MMIO {kind} of {size} bytes at {gpa:#x} (no device there, and {arch:?} KVM cannot inject an abort)", kind = if *write { "write" } else { "read" })]
    UnhandledMmio {
        /// Address (device view).
        gpa: u64,
        /// Width.
        size: u8,
        /// Whether it was a store.
        write: bool,
        /// The guest architecture.
        arch: Arch,
    },
}

fn vm_step(step: impl Into<String>) -> impl FnOnce(cvm_core::Error) -> RunError {
    let step = step.into();
    move |source| RunError::Vm { step, source }
}

/// How a run is driven.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptions {
    /// The most exits vCPU 0 may take before the run ends with [`RunEnd::ExitBudget`].
    pub max_exits: u64,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            max_exits: DEFAULT_EXIT_BUDGET,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    /// The guest powered off (success).
    SystemOff,
    /// The guest asked for a reset (the VM is off).
    Reset,
    /// The guest faulted.
    Fault {
        /// Guest PC, if known.
        pc: u64,
        /// Architectural syndrome.
        syndrome: u64,
        /// Why.
        reason: String,
    },
    /// The exit budget ran out.
    ExitBudget {
        /// The budget.
        budget: u64,
        /// The last exit's kind.
        last: ExitKind,
    },
}

impl std::fmt::Display for RunEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunEnd::SystemOff => write!(f, "system off"),
            RunEnd::Reset => write!(f, "reset requested (the VM is off)"),
            RunEnd::Fault {
                pc,
                syndrome,
                reason,
            } => write!(
                f,
                "guest fault at pc {pc:#x} (syndrome {syndrome:#x}): {reason}"
            ),
            RunEnd::ExitBudget { budget, last } => write!(
                f,
                "exit budget of {budget} spent (last exit {}); raise --max-exits",
                last.name()
            ),
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    /// The backend's name.
    pub backend: String,
    /// How it ended.
    pub end: RunEnd,
    /// Exits by kind.
    pub exits: BTreeMap<ExitKind, u64>,
    /// Bytes the UART sent to the console.
    pub console_bytes: u64,
    /// MMIO accesses answered with `InjectAbort`.
    pub aborts_injected: u64,
    /// Doorbell reports, in order.
    pub reports: Vec<Report>,
    /// Whether a portable program reported `Done` through the doorbell.
    pub program_done: bool,
    /// Test-device writes, in order.
    pub device_writes: Vec<DeviceWrite>,
    /// The launch measurement (taken right after `finalize`).
    pub measurement: Measurement,
}

impl RunSummary {
    /// Total exits.
    pub fn total_exits(&self) -> u64 {
        self.exits.values().sum()
    }

    /// Whether the guest powered off.
    pub fn success(&self) -> bool {
        self.end == RunEnd::SystemOff
    }

    /// The summary `cvm run` prints to stderr; the measurement lines are those
    /// `cvm measure SPEC` prints.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "cvm run: {}: {} after {} exits",
            self.backend,
            self.end,
            self.total_exits()
        );
        let kinds: Vec<String> = self
            .exits
            .iter()
            .map(|(k, n)| format!("{} {n}", k.name()))
            .collect();
        let _ = writeln!(s, "  exits: {}", kinds.join(", "));
        let _ = writeln!(s, "  console: {} bytes", self.console_bytes);
        if self.aborts_injected > 0 {
            let _ = writeln!(s, "  aborts injected: {}", self.aborts_injected);
        }
        if self.program_done || !self.reports.is_empty() {
            let _ = writeln!(
                s,
                "  program: {} ({} reports)",
                if self.program_done {
                    "done"
                } else {
                    "not done"
                },
                self.reports.len()
            );
            for r in self.reports.iter().filter(|r| r.is_failure()) {
                let _ = writeln!(s, "  failure: {r:?}");
            }
        }
        if !self.device_writes.is_empty() {
            let _ = writeln!(s, "  test device writes: {}", self.device_writes.len());
        }
        let _ = writeln!(s, "  measurement ({}):", self.measurement.algorithm.name());
        for line in crate::spec::format_measurement(&self.measurement).lines() {
            let _ = writeln!(s, "    {line}");
        }
        s
    }
}

/// A [`Trigger`] for a UART without an interrupt line (the guest polls LSR).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoInterrupt;

impl Trigger for NoInterrupt {
    type E = std::convert::Infallible;

    fn trigger(&self) -> Result<(), Self::E> {
        Ok(())
    }
}

/// A writer that counts the bytes passing through.
#[derive(Debug)]
pub struct Counting<W: Write> {
    inner: W,
    /// Bytes written so far.
    pub count: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The console UART: a vm-superio 16550 whose output goes to `W`.
pub type Uart<W> = Serial<NoInterrupt, NoEvents, Counting<W>>;

/// The emulated devices of a spec and the answers to every exit (the module table).
pub struct Vmm<W: Write> {
    uart: Option<(u64, Uart<W>)>,
    doorbell: Option<(u64, DoorbellState)>,
    test_device: Option<TestDevice>,
    device_writes: Vec<DeviceWrite>,
    can_abort: bool,
    arch: Arch,
    aborts: u64,
}

impl<W: Write> std::fmt::Debug for Vmm<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vmm")
            .field("uart", &self.uart.as_ref().map(|(b, _)| *b))
            .field("doorbell", &self.doorbell.as_ref().map(|(b, _)| *b))
            .field("test_device", &self.test_device)
            .finish_non_exhaustive()
    }
}

impl<W: Write> Vmm<W> {
    /// The devices of `devices`, the UART writing to `console`, for a guest of `arch` on a
    /// backend that can (`can_abort`) or cannot inject aborts for unclaimed MMIO.
    pub fn new(devices: &Devices, console: W, arch: Arch, can_abort: bool) -> Self {
        let out = Counting {
            inner: console,
            count: 0,
        };
        let mut test_device = None;
        if let Some(t) = &devices.test_device {
            let mut d = TestDevice::new(t.base, t.size);
            for [offset, value] in &t.reads {
                d.set_read(*offset, *value);
            }
            test_device = Some(d);
        }
        Self {
            uart: devices
                .uart
                .map(|base| (base, Serial::new(NoInterrupt, out))),
            doorbell: devices.doorbell.map(|b| (b, DoorbellState::default())),
            test_device,
            device_writes: Vec::new(),
            can_abort,
            arch,
            aborts: 0,
        }
    }

    /// The answer to an MMIO exit.
    pub fn mmio(&mut self, gpa: u64, size: u8, write: Option<u64>) -> Result<Resume, RunError> {
        if let Some((base, uart)) = &mut self.uart {
            if gpa >= *base && gpa - *base < UART_SIZE {
                // 16550 registers are one byte wide; a wider access moves the low byte.
                let offset = (gpa - *base) as u8;
                return match write {
                    Some(v) => {
                        uart.write(offset, v as u8)
                            .map_err(|e| RunError::Console(format!("{e:?}")))?;
                        Ok(Resume::Done)
                    }
                    None => Ok(Resume::MmioRead(u64::from(uart.read(offset)))),
                };
            }
        }
        if let Some((base, bell)) = &mut self.doorbell {
            if gpa >= *base && gpa - *base < crate::spec::DOORBELL_SIZE {
                if let Some(v) = write {
                    bell.write(gpa - *base, size, v)?;
                    return Ok(Resume::Done);
                }
            }
        }
        if let Some(d) = &self.test_device {
            if d.contains(gpa, u64::from(size)) {
                return Ok(match write {
                    Some(v) => {
                        let value = mask_to_size(v, size);
                        self.device_writes.push(DeviceWrite { gpa, size, value });
                        Resume::Done
                    }
                    None => Resume::MmioRead(d.read(gpa, size)),
                });
            }
        }
        if self.can_abort {
            self.aborts += 1;
            Ok(Resume::InjectAbort)
        } else {
            Err(RunError::UnhandledMmio {
                gpa,
                size,
                write: write.is_some(),
                arch: self.arch,
            })
        }
    }

    /// The answer to any exit; `None` for the exits that end a run.
    pub fn answer(&mut self, exit: &VmExit) -> Result<Option<Resume>, RunError> {
        Ok(Some(match *exit {
            VmExit::Mmio { gpa, size, write } => self.mmio(gpa, size, write)?,
            VmExit::Pio { size, write, .. } => match write {
                Some(_) => Resume::Done,
                None => Resume::PioRead(mask_to_size(u64::MAX, size) as u32),
            },
            VmExit::ConvertMemory { .. } => Resume::Conversion(true),
            VmExit::HostCall { nr, .. } => Resume::HostCall([nr, 0]),
            VmExit::SysReg { reg, .. } => {
                let e = entropy();
                Resume::SysReg(if reg == SEED_CSR {
                    0x8000_0000 | (e & 0xffff)
                } else {
                    e
                })
            }
            VmExit::Halt | VmExit::Interrupted => Resume::Done,
            VmExit::SystemOff | VmExit::Reset | VmExit::Fault { .. } => return Ok(None),
        }))
    }

    /// Flushes the console.
    pub fn flush(&mut self) -> Result<(), RunError> {
        if let Some((_, uart)) = &mut self.uart {
            uart.writer_mut()
                .flush()
                .map_err(|e| RunError::Console(e.to_string()))?;
        }
        Ok(())
    }

    /// Bytes the UART has sent to the console.
    pub fn console_bytes(&self) -> u64 {
        self.uart.as_ref().map_or(0, |(_, u)| u.writer().count)
    }
}

/// Host entropy for forwarded entropy reads: `/dev/urandom`, else a clock-seeded mix.
fn entropy() -> u64 {
    use std::io::Read;
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok()
    {
        return u64::from_le_bytes(b);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (t >> 29)
}

/// A VM built from a spec, finalized, with its vCPUs.
pub struct Built {
    /// The VM.
    pub vm: Box<dyn Vm>,
    /// Its vCPUs; index 0 boots.
    pub vcpus: Vec<Box<dyn Vcpu>>,
    /// The measurement right after `finalize`.
    pub measurement: Measurement,
    /// The guest architecture.
    pub arch: Arch,
    /// The backend's name.
    pub backend: String,
}

impl std::fmt::Debug for Built {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Built")
            .field("backend", &self.backend)
            .field("measurement", &self.measurement)
            .finish_non_exhaustive()
    }
}

/// Builds and finalizes the VM `launch` describes through [`crate::backend`] and the contract.
pub fn build(launch: &Launch) -> Result<Built, RunError> {
    let name = launch.backend.name();
    let backend = crate::backend(name).map_err(vm_step("backend"))?;
    let info = backend.info();
    let vm = backend
        .create_vm(&launch.config)
        .map_err(vm_step("create_vm"))?;
    for r in &launch.regions {
        vm.add_memory(*r).map_err(vm_step(format!(
            "add_memory {:#x}+{:#x} ({:?})",
            r.gpa, r.size, r.kind
        )))?;
    }
    for i in &launch.images {
        let measure = if i.measure { Measure::Yes } else { Measure::No };
        vm.load(i.gpa, &i.bytes, measure).map_err(vm_step(format!(
            "load {:#x}+{:#x}",
            i.gpa,
            i.bytes.len()
        )))?;
    }
    let mut vcpus = Vec::new();
    for id in 0..launch.config.vcpus {
        let init = if id == 0 {
            launch.boot.clone()
        } else {
            VcpuInit::secondary()
        };
        vcpus.push(
            vm.create_vcpu(init)
                .map_err(vm_step(format!("create_vcpu {id}")))?,
        );
    }
    vm.finalize().map_err(vm_step("finalize"))?;
    let measurement = vm.measurement().map_err(vm_step("measurement"))?;
    Ok(Built {
        vm,
        vcpus,
        measurement,
        arch: info.arch,
        backend: info.name,
    })
}

/// Runs vCPU 0 of `built` with the devices of `vmm` until the guest ends the run or the budget
/// is spent.
pub fn run_built<W: Write>(
    built: &mut Built,
    vmm: &mut Vmm<W>,
    options: &RunOptions,
) -> Result<RunSummary, RunError> {
    let mut exits: BTreeMap<ExitKind, u64> = BTreeMap::new();
    let mut resume = Resume::Done;
    let mut taken = 0u64;
    let vcpu = built
        .vcpus
        .first_mut()
        .ok_or_else(|| RunError::Console("the VM has no vCPU".into()))?;
    let end = loop {
        let exit = vcpu.run(resume).map_err(vm_step("run vCPU 0"))?;
        let kind = exit.kind();
        *exits.entry(kind).or_default() += 1;
        taken += 1;
        match vmm.answer(&exit)? {
            Some(next) => resume = next,
            None => {
                break match exit {
                    VmExit::SystemOff => RunEnd::SystemOff,
                    VmExit::Fault {
                        pc,
                        syndrome,
                        reason,
                        ..
                    } => RunEnd::Fault {
                        pc,
                        syndrome,
                        reason,
                    },
                    _ => RunEnd::Reset,
                };
            }
        }
        if taken >= options.max_exits {
            break RunEnd::ExitBudget {
                budget: options.max_exits,
                last: kind,
            };
        }
    };
    vmm.flush()?;
    let (reports, program_done) = match &vmm.doorbell {
        Some((_, bell)) => (bell.reports.clone(), bell.done),
        None => (Vec::new(), false),
    };
    Ok(RunSummary {
        backend: built.backend.clone(),
        end,
        exits,
        console_bytes: vmm.console_bytes(),
        aborts_injected: vmm.aborts,
        reports,
        program_done,
        device_writes: vmm.device_writes.clone(),
        measurement: built.measurement.clone(),
    })
}

/// Builds the VM of `launch` and runs it, the UART writing to `console`.
pub fn run<W: Write>(
    launch: &Launch,
    options: &RunOptions,
    console: W,
) -> Result<RunSummary, RunError> {
    let mut built = build(launch)?;
    // KVM on x86 and riscv64 cannot fail an emulated MMIO access (see the kvm crate docs).
    let can_abort =
        !(launch.backend == crate::spec::BackendKind::Kvm && built.arch != Arch::Aarch64);
    let mut vmm = Vmm::new(&launch.devices, console, built.arch, can_abort);
    let summary = run_built(&mut built, &mut vmm, options);
    let _ = built.vm.destroy();
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::LaunchSpec;
    use std::path::Path;

    fn sample(name: &str) -> Launch {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/specs");
        LaunchSpec::load(&dir.join(name)).unwrap()
    }

    #[test]
    fn samples_print_hello_and_match_the_offline_measurement() {
        for (file, backend) in [
            ("hello-cca.toml", "arm-cca"),
            ("hello-cove.toml", "riscv-cove"),
        ] {
            let launch = sample(file);
            let mut out = Vec::new();
            let s = run(&launch, &RunOptions::default(), &mut out).unwrap();
            assert_eq!(
                String::from_utf8(out).unwrap(),
                format!("hello from {backend}\n")
            );
            assert!(s.success(), "{}", s.render());
            assert!(s.program_done);
            assert_eq!(s.measurement, launch.measurement().unwrap(), "{file}");
            let built = build(&launch).unwrap();
            assert_eq!(
                built.vm.measurement_log(),
                launch.measurement_log().unwrap()
            );
        }
    }

    /// Several regions (one not block aligned), images out of IPA order, an unmeasured
    /// image, unaligned unmeasured loads, secondaries: the offline log is the backend's log.
    #[test]
    fn offline_log_matches_the_backend_on_a_complex_spec() {
        let body = |backend: &str, extra: &str| {
            format!(
                r#"
backend = "{backend}"
[[memory]]
gpa = 0x8000_0000
size = 0x40_0000
kind = "private"
[[memory]]
gpa = 0x9000_3000
size = 0x21_0000
kind = "private"
[[memory]]
gpa = 0xa000_0000
size = 0x1_0000
kind = "shared"
[[image]]
hex = "0102030405"
gpa = 0x9000_5000
[[image]]
hex = "1f2003d5"
gpa = 0x8000_0000
[[image]]
hex = "aabb"
gpa = 0xa000_0010
measure = false
[[image]]
hex = "ccdd"
gpa = 0xa000_1000
{extra}
[vcpus]
count = 3
entry = 0x8000_0000
args = [1, 2, 3]
"#
            )
        };
        let unmeasured = "[[image]]\nhex = \"eeff\"\ngpa = 0x8002_0010\nmeasure = false\n";
        let mut cases = vec![
            ("arm-cca", body("arm-cca", unmeasured)),
            ("riscv-cove", body("riscv-cove", "")),
        ];
        match crate::kvm::KvmBackend::open() {
            Ok(_) => cases.push((
                "kvm",
                body("kvm", unmeasured).replace("\"private\"", "\"shared\""),
            )),
            Err(e) => {
                eprintln!("SKIP offline_log_matches_the_backend_on_a_complex_spec on kvm: {e}")
            }
        }
        for (backend, text) in cases {
            let launch = LaunchSpec::parse(&text, Path::new("t.toml"))
                .unwrap()
                .validate(Path::new("."));
            let launch = match launch {
                Ok(l) => l,
                // Shared measured images are refused on confidential VMs.
                Err(e) => {
                    assert!(e.to_string().contains("private memory"), "{e}");
                    let text = text.replace("gpa = 0xa000_1000", "gpa = 0x8003_0000");
                    LaunchSpec::parse(&text, Path::new("t.toml"))
                        .unwrap()
                        .validate(Path::new("."))
                        .unwrap()
                }
            };
            let built = build(&launch).unwrap();
            assert_eq!(
                built.vm.measurement_log(),
                launch.measurement_log().unwrap(),
                "{backend}"
            );
            assert_eq!(
                built.measurement,
                launch.measurement().unwrap(),
                "{backend}"
            );
        }
    }

    #[test]
    fn exit_budget_ends_the_run() {
        let launch = sample("hello-cca.toml");
        let s = run(&launch, &RunOptions { max_exits: 3 }, std::io::sink()).unwrap();
        assert!(matches!(s.end, RunEnd::ExitBudget { budget: 3, .. }));
        assert_eq!(s.total_exits(), 3);
    }
}
