//! `cvm compare`: one portable guest program on every backend, side by side.
//!
//! For each backend the same [`Program`] is lowered with that VM's platform, launched with a
//! measured image, and run by the [`Runner`] while an observer snapshots the firmware-call
//! counters around each exit. The report shows what each architecture did to launch and run
//! the same guest: firmware calls by name, pages and fences, exits by kind, what the host saw
//! for one MMIO read (ESR/FAR/HPFAR, scause/htval/htinst, kvm_run) and the channel the value
//! travelled, calls per shared page, the measurement, and time per exit.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use cvm_core::guest::{launch, LaunchError, Layout, Op, Program, Runner};
use cvm_core::vm_memory::{Bytes, GuestAddress};
use cvm_core::{
    Backend, BackendInfo, Confidentiality, ExitDetail, Measurement, Resume, Stats, Vcpu, Vm,
    VmConfig, VmExit,
};

/// Offset in the test device the default program writes.
pub const DEVICE_WRITE_OFFSET: u64 = 0x0;
/// Offset in the test device the default program reads (sign-extending, one byte).
pub const DEVICE_READ_OFFSET: u64 = 0x8;
/// What the device returns there: 0x80, which a sign-extending byte load turns into -128.
pub const DEVICE_READ_VALUE: u64 = 0x80;
/// The 8-byte pattern the guest writes to its shared page.
pub const SHARED_PATTERN: u64 = 0x2121_4445_5241_4853; // "SHARED!!" little-endian
/// MMIO writes in the timed exit loop.
pub const EXIT_LOOP: u32 = 2000;

/// The built-in program: an MMIO write, a sign-extending MMIO read, share a page and write
/// it through the shared view, unshare it, read the launch measurement (register index 0, which
/// compare maps to each platform's `launch_measurement_index`), read entropy, power off.
pub fn default_program(layout: &Layout) -> Program {
    let dev = layout.devices.first().map(|d| d.0).unwrap_or(0x0a00_0000);
    let page = shared_page(layout);
    let mut p = Program::new();
    p.mmio_write(dev + DEVICE_WRITE_OFFSET, 4, 0xC0FFEE);
    let s = p.mmio_read(dev + DEVICE_READ_OFFSET, 1, true);
    p.expect(s, (-128i64) as u64).report(s);
    p.share(page, 4096);
    p.mmio_write(page, 8, SHARED_PATTERN);
    p.unshare(page, 4096);
    p.read_measurement(0);
    let e = p.read_entropy();
    p.report(e);
    p.system_off();
    p
}

/// The page the default program shares: the page after the data page.
pub fn shared_page(layout: &Layout) -> u64 {
    layout.data + 0x1000
}

/// The VM configuration compare uses for a backend: its own confidentiality, defaults elsewhere.
pub fn config_for(info: &BackendInfo) -> VmConfig {
    VmConfig::new(info.confidentiality)
}

/// The native view of one MMIO read round trip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmioTrace {
    /// Device address the VMM saw.
    pub gpa: u64,
    /// Access size.
    pub size: u8,
    /// Value the VMM answered with.
    pub answer: u64,
    /// What the guest ended up with (from its report).
    pub guest_value: Option<u64>,
    /// The backend's native detail for that exit.
    pub detail: Option<ExitDetail>,
}

/// One backend's column of the comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendReport {
    /// The backend's probe.
    pub info: BackendInfo,
    /// Why it did not run, if it did not.
    pub skipped: Option<String>,
    /// Ops dropped from the program because the platform cannot express them.
    pub unsupported_ops: Vec<String>,
    /// Firmware calls (or ioctls) from VM creation to finalize.
    pub launch_calls: BTreeMap<String, u64>,
    /// Firmware calls while running.
    pub run_calls: BTreeMap<String, u64>,
    /// Other counters at the end (pages delegated/converted, fences, …).
    pub counters: BTreeMap<String, u64>,
    /// Exits by kind.
    pub exits: BTreeMap<String, u64>,
    /// The sign-extending MMIO read.
    pub mmio_read: Option<MmioTrace>,
    /// Firmware calls the host made per 4 KiB page to share and unshare it.
    pub calls_per_shared_page: Option<f64>,
    /// The 8 bytes the host read from the shared page while it was shared.
    pub host_saw_shared: Option<u64>,
    /// Host-side measurement.
    pub measurement: Option<Measurement>,
    /// Measurement bytes the guest read (register 0).
    pub guest_measurement: Option<String>,
    /// Entropy the guest read.
    pub entropy: Option<u64>,
    /// Failures the guest reported.
    pub failures: Vec<String>,
    /// Milliseconds from `create_vm` to finalized.
    pub launch_ms: f64,
    /// Microseconds per MMIO-write exit over a loop of [`EXIT_LOOP`] exits.
    pub time_per_exit_us: Option<f64>,
}

impl BackendReport {
    fn skipped(info: BackendInfo, reason: String) -> Self {
        Self {
            info,
            skipped: Some(reason),
            unsupported_ops: vec![],
            launch_calls: BTreeMap::new(),
            run_calls: BTreeMap::new(),
            counters: BTreeMap::new(),
            exits: BTreeMap::new(),
            mmio_read: None,
            calls_per_shared_page: None,
            host_saw_shared: None,
            measurement: None,
            guest_measurement: None,
            entropy: None,
            failures: vec![],
            launch_ms: 0.0,
            time_per_exit_us: None,
        }
    }
}

/// Drops ops the platform cannot express (checked by lowering each op alone), and the
/// expects/reports of their result slots, naming what was dropped.
fn supported_subset(vm: &dyn Vm, program: &Program, layout: &Layout) -> (Program, Vec<String>) {
    let platform = vm.guest_platform();
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    let mut dropped_slots = Vec::new();
    let index = platform.launch_measurement_index();
    for op in &program.ops {
        let op = &match op {
            Op::ReadMeasurement { index: 0 } => Op::ReadMeasurement { index },
            other => other.clone(),
        };
        let probe = Program::from_ops(vec![op.clone()]);
        match cvm_core::guest::lower(&probe, platform.as_ref(), layout) {
            Err(cvm_core::guest::LowerError::NotSupported(ns)) => {
                dropped.push(format!("{}: {}", ns.op, ns.reason));
                dropped_slots.extend(op_slot(op));
            }
            _ => kept.push(op.clone()),
        }
    }
    kept.retain(|o| match o {
        Op::Expect { slot, .. } | Op::Report { slot } => !dropped_slots.contains(slot),
        _ => true,
    });
    (Program::from_ops(kept), dropped)
}

fn op_slot(op: &Op) -> Option<cvm_core::guest::Slot> {
    match op {
        Op::MmioRead { slot, .. }
        | Op::MemRead { slot, .. }
        | Op::ReadEntropy { slot }
        | Op::HostCall { slot, .. } => Some(*slot),
        _ => None,
    }
}

fn diff(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v.saturating_sub(before.get(k).copied().unwrap_or(0));
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

fn total(m: &BTreeMap<String, u64>) -> u64 {
    m.values().sum()
}

/// Runs `program` on `backend` and reports what happened.
pub fn compare_backend(backend: &dyn Backend, program: &Program) -> BackendReport {
    let info = backend.info();
    if !info.available {
        let reason = info
            .unavailable_reason
            .clone()
            .unwrap_or_else(|| "unavailable".into());
        return BackendReport::skipped(info, reason);
    }
    match run_one(backend, &info, program) {
        Ok(r) => r,
        Err(e) => BackendReport::skipped(info, e),
    }
}

fn run_one(
    backend: &dyn Backend,
    info: &BackendInfo,
    program: &Program,
) -> Result<BackendReport, String> {
    let layout = Layout::standard();
    let config = config_for(info);

    // Probe which ops this platform can express, on a throwaway VM.
    let (program, unsupported_ops) = {
        let probe_vm = backend.create_vm(&config).map_err(|e| e.to_string())?;
        let r = supported_subset(probe_vm.as_ref(), program, &layout);
        let _ = probe_vm.destroy();
        r
    };

    let start = Instant::now();
    let launched = launch(backend, &config, &program, &layout, Layout::standard_ram())
        .map_err(|e: LaunchError| e.to_string())?;
    let launch_ms = start.elapsed().as_secs_f64() * 1e3;
    let (vm, mut vcpu) = (launched.vm, launched.vcpu);
    let launch_stats = vm.stats();

    let dev = layout.devices.first().map(|d| d.0).unwrap_or(0);
    let read_gpa = dev + DEVICE_READ_OFFSET;
    let page = shared_page(&layout);
    let mut runner = Runner::new(&layout);
    runner.device_read(read_gpa, DEVICE_READ_VALUE);

    let mut mmio_read: Option<MmioTrace> = None;
    // With a program of the user's, trace its first MMIO read wherever it is.
    let custom = !program
        .ops
        .iter()
        .any(|o| matches!(o, Op::MmioRead { addr, .. } if *addr == read_gpa));
    let mut conversion_calls = 0u64;
    let mut converted_pages = 0u64;
    let mut pending_conversion: Option<(Stats, u64)> = None;
    let mut host_saw_shared = None;
    let vm_ref: &dyn Vm = vm.as_ref();
    let outcome = runner.run_observed(
        vcpu.as_mut(),
        &mut |exit: &VmExit, resume: &Resume, v: &dyn Vcpu| {
            if let Some((before, pages)) = pending_conversion.take() {
                let after = vm_ref.stats();
                conversion_calls += total(&diff(&after.firmware_calls, &before.firmware_calls));
                converted_pages += pages;
            }
            match exit {
                VmExit::Mmio {
                    gpa,
                    size,
                    write: None,
                } if mmio_read.is_none() && (*gpa == read_gpa || custom) => {
                    let answer = match resume {
                        Resume::MmioRead(a) => *a,
                        _ => 0,
                    };
                    mmio_read = Some(MmioTrace {
                        gpa: *gpa,
                        size: *size,
                        answer,
                        guest_value: None,
                        detail: v.exit_detail(),
                    });
                }
                VmExit::ConvertMemory {
                    gpa,
                    size,
                    to_private,
                } => {
                    if *to_private && *gpa <= page && page < gpa + size {
                        let mut buf = [0u8; 8];
                        if vm_ref
                            .shared_memory()
                            .read_slice(&mut buf, GuestAddress(page))
                            .is_ok()
                        {
                            host_saw_shared = Some(u64::from_le_bytes(buf));
                        }
                    }
                    pending_conversion = Some((vm_ref.stats(), size / 4096));
                }
                _ => {}
            }
        },
    );

    let end_stats = vm.stats();
    let mut failures = Vec::new();
    let (mut entropy, mut guest_measurement) = (None, None);
    match &outcome {
        Err(e) => failures.push(format!("run stopped: {e}")),
        Ok(outcome) => {
            failures.extend(outcome.failures().iter().map(|r| format!("{r:?}")));
            if !outcome.powered_off {
                failures.push(format!("the guest ended with {:?}", outcome.end));
            }
            if let Some(t) = mmio_read.as_mut() {
                t.guest_value = outcome.values().first().map(|(_, v)| *v);
            }
            entropy = program.ops.iter().find_map(|o| match o {
                Op::ReadEntropy { slot } => outcome.value(*slot),
                _ => None,
            });
            guest_measurement = program.ops.iter().find_map(|o| match o {
                Op::ReadMeasurement { index } => outcome.measurement(*index).map(hex::encode),
                _ => None,
            });
        }
    }
    let measurement = vm.measurement().ok();
    let _ = vm.destroy();

    let time_per_exit_us = time_exits(backend, &config, &layout).ok();
    Ok(BackendReport {
        info: info.clone(),
        skipped: None,
        unsupported_ops,
        launch_calls: launch_stats.firmware_calls.clone(),
        run_calls: diff(&end_stats.firmware_calls, &launch_stats.firmware_calls),
        counters: end_stats.counters.clone(),
        exits: end_stats.exits.clone(),
        mmio_read,
        calls_per_shared_page: (converted_pages > 0)
            .then(|| conversion_calls as f64 / converted_pages as f64),
        host_saw_shared,
        measurement,
        guest_measurement,
        entropy,
        failures,
        launch_ms,
        time_per_exit_us,
    })
}

/// Times [`EXIT_LOOP`] MMIO-write exits on a fresh VM; µs per exit.
fn time_exits(backend: &dyn Backend, config: &VmConfig, layout: &Layout) -> Result<f64, String> {
    let dev = layout.devices.first().map(|d| d.0).unwrap_or(0);
    let mut p = Program::new();
    p.repeat(EXIT_LOOP, |b| {
        b.mmio_write(dev, 4, 1);
    });
    p.system_off();
    let mut l =
        launch(backend, config, &p, layout, Layout::standard_ram()).map_err(|e| e.to_string())?;
    let mut runner = Runner::new(layout);
    runner.exit_budget(u64::from(EXIT_LOOP) * 2 + 1000);
    let start = Instant::now();
    let out = runner.run(l.vcpu.as_mut()).map_err(|e| e.to_string())?;
    let elapsed = start.elapsed().as_secs_f64() * 1e6;
    let exits: u64 = out.exits.values().sum();
    let _ = l.vm.destroy();
    Ok(elapsed / exits.max(1) as f64)
}

/// Runs `program` on every backend.
pub fn compare_all(backends: &[Box<dyn Backend>], program: &Program) -> Vec<BackendReport> {
    backends
        .iter()
        .map(|b| compare_backend(b.as_ref(), program))
        .collect()
}

fn columns(out: &mut String, title: &str, names: &[String], cells: &[Vec<String>]) {
    // Each section is as wide as its widest cell (at least 24 columns).
    let width = cells
        .iter()
        .flatten()
        .chain(names)
        .map(|c| c.chars().count())
        .max()
        .unwrap_or(0)
        .max(24);
    let _ = writeln!(out, "\n{title}");
    let header: Vec<String> = names.iter().map(|n| format!("{n:<width$}")).collect();
    let _ = writeln!(out, "  {}", header.join("  ").trim_end());
    let rows = cells.iter().map(Vec::len).max().unwrap_or(0);
    for r in 0..rows {
        let line: Vec<String> = cells
            .iter()
            .map(|c| {
                let s = c.get(r).cloned().unwrap_or_default();
                format!("{s:<width$}")
            })
            .collect();
        let _ = writeln!(out, "  {}", line.join("  ").trim_end());
    }
}

fn map_lines(m: &BTreeMap<String, u64>) -> Vec<String> {
    if m.is_empty() {
        return vec!["-".into()];
    }
    let mut v: Vec<String> = m.iter().map(|(k, n)| format!("{k} {n}")).collect();
    v.push(format!("(total {})", total(m)));
    v
}

/// The side-by-side text table.
pub fn render_table(reports: &[BackendReport]) -> String {
    let mut out = String::new();
    let names: Vec<String> = reports.iter().map(|r| r.info.name.clone()).collect();
    let cell = |f: &dyn Fn(&BackendReport) -> Vec<String>| -> Vec<Vec<String>> {
        reports
            .iter()
            .map(|r| match &r.skipped {
                Some(_) => vec!["-".into()],
                None => f(r),
            })
            .collect()
    };
    let _ = writeln!(
        out,
        "cvm compare: one guest program on every backend (models run in-process; see `cvm info`)"
    );
    let header: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            vec![
                format!("{:?} / {:?}", r.info.arch, r.info.implementation).to_lowercase(),
                match r.info.confidentiality {
                    Confidentiality::None => "not confidential".into(),
                    Confidentiality::ArmCca => "arm cca realm".into(),
                    Confidentiality::RiscvCove => "risc-v cove tvm".into(),
                },
                match r.skipped {
                    Some(_) => "skipped (reason below)".into(),
                    None => format!("launch {:.2} ms", r.launch_ms),
                },
            ]
        })
        .collect();
    columns(&mut out, "backend", &names, &header);
    columns(
        &mut out,
        "launch: firmware calls / ioctls (create → finalize)",
        &names,
        &cell(&|r| map_lines(&r.launch_calls)),
    );
    columns(
        &mut out,
        "run: firmware calls / ioctls",
        &names,
        &cell(&|r| map_lines(&r.run_calls)),
    );
    columns(
        &mut out,
        "counters (pages delegated/converted, fences, …)",
        &names,
        &cell(&|r| map_lines(&r.counters)),
    );
    columns(
        &mut out,
        "exits by kind",
        &names,
        &cell(&|r| map_lines(&r.exits)),
    );
    columns(
        &mut out,
        "one MMIO read: what the host saw, and the channel the value took back",
        &names,
        &cell(&|r| match &r.mmio_read {
            None => vec!["-".into()],
            Some(t) => {
                let mut v = vec![format!("VmExit::Mmio gpa {:#x} size {}", t.gpa, t.size)];
                if let Some(d) = &t.detail {
                    v.push(d.reason.clone());
                    v.extend(d.registers.iter().map(|(k, x)| format!("{k} = {x:#x}")));
                    v.push(format!("value via {}", d.channel));
                }
                v.push(format!("answer {:#x}", t.answer));
                if let Some(g) = t.guest_value {
                    v.push(format!("guest got {g:#x}"));
                }
                v
            }
        }),
    );
    columns(
        &mut out,
        "shared memory",
        &names,
        &cell(&|r| {
            vec![
                match r.calls_per_shared_page {
                    Some(c) => format!("{c:.1} host calls per 4 KiB page"),
                    None => "no conversion".into(),
                },
                match r.host_saw_shared {
                    Some(v) if v == SHARED_PATTERN => "host saw the guest's data".into(),
                    Some(v) => format!("host saw {v:#x}"),
                    None => "host saw nothing".into(),
                },
            ]
        }),
    );
    columns(
        &mut out,
        "measurement",
        &names,
        &cell(&|r| {
            let mut v = vec![];
            match &r.measurement {
                Some(m) => {
                    v.push(m.algorithm.name().to_string());
                    for reg in m.registers.iter().take(5) {
                        v.push(format!(
                            "{} {}",
                            reg.name,
                            truncate(&hex::encode(&reg.value), 20)
                        ));
                    }
                }
                None => v.push("-".into()),
            }
            if let Some(g) = &r.guest_measurement {
                v.push(format!("guest read {}", truncate(g, 18)));
            }
            v
        }),
    );
    columns(
        &mut out,
        "guest",
        &names,
        &cell(&|r| {
            let mut v = vec![match r.entropy {
                Some(e) => format!("entropy {e:#x}"),
                None => "entropy -".into(),
            }];
            if r.failures.is_empty() {
                v.push("all checks passed".into());
            } else {
                v.extend(r.failures.iter().map(|f| truncate(f, 32)));
            }
            v.extend(
                r.unsupported_ops
                    .iter()
                    .map(|u| format!("n/a: {}", truncate(u, 27))),
            );
            v
        }),
    );
    columns(
        &mut out,
        "time per exit",
        &names,
        &cell(&|r| {
            vec![match r.time_per_exit_us {
                Some(t) => format!("{t:.2} µs"),
                None => "-".into(),
            }]
        }),
    );
    for r in reports {
        if let Some(s) = &r.skipped {
            let _ = writeln!(out, "\n{} skipped: {s}", r.info.name);
        }
    }
    out
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let t: String = s.chars().take(n.saturating_sub(1)).collect();
        format!("{t}…")
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A sequence diagram (SVG) of one MMIO read round trip per backend: guest → firmware → host →
/// VMM → back, labelled with what each backend really reported.
pub fn render_svg(reports: &[BackendReport]) -> String {
    let lanes = ["guest", "firmware", "host", "VMM"];
    let lane_w = 190.0;
    let panel_w = lane_w * 4.0 + 40.0;
    let height = 360.0;
    let width = panel_w * reports.len().max(1) as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="monospace" font-size="11">"#
    );
    let _ = writeln!(
        s,
        r#"<defs><marker id="a" markerWidth="8" markerHeight="8" refX="8" refY="4" orient="auto"><path d="M0,0 L8,4 L0,8 z"/></marker></defs>"#
    );
    for (i, r) in reports.iter().enumerate() {
        let x0 = i as f64 * panel_w + 20.0;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="24" font-size="15" font-weight="bold">{}</text>"#,
            x0,
            esc(&r.info.name)
        );
        let (fw, host, channel_in) = match r.info.confidentiality {
            Confidentiality::ArmCca => {
                ("RMM", "KVM realm host", "RecEntry.gprs[0] + EMULATED_MMIO")
            }
            Confidentiality::RiscvCove => ("TSM", "KVM CoVE host", "NACL scratch a0"),
            Confidentiality::None => ("CPU (VM exit)", "KVM", "kvm_run.mmio.data"),
        };
        let names = [lanes[0], fw, host, lanes[3]];
        for (l, name) in names.iter().enumerate() {
            let x = x0 + lane_w * l as f64 + lane_w / 2.0;
            let _ = writeln!(
                s,
                r##"<rect x="{}" y="40" width="{}" height="24" fill="#eef" stroke="#447"/><text x="{x}" y="56" text-anchor="middle">{}</text><line x1="{x}" y1="64" x2="{x}" y2="{}" stroke="#999" stroke-dasharray="4 3"/>"##,
                x - lane_w / 2.0 + 8.0,
                lane_w - 16.0,
                esc(name),
                height - 20.0
            );
        }
        let Some(t) = &r.mmio_read else {
            let why = r
                .skipped
                .clone()
                .unwrap_or_else(|| "no MMIO read observed".into());
            let _ = writeln!(
                s,
                r#"<text x="{x0}" y="100">{}</text>"#,
                esc(&truncate(&why, 90))
            );
            continue;
        };
        let regs: Vec<String> = t
            .detail
            .as_ref()
            .map(|d| {
                d.registers
                    .iter()
                    .map(|(k, v)| format!("{k}={v:#x}"))
                    .collect()
            })
            .unwrap_or_default();
        let reason = t
            .detail
            .as_ref()
            .map(|d| d.reason.clone())
            .unwrap_or_default();
        let channel_out = t
            .detail
            .as_ref()
            .map(|d| d.channel.clone())
            .unwrap_or_else(|| channel_in.to_string());
        let steps: Vec<(usize, usize, Vec<String>)> = vec![
            (
                0,
                1,
                vec![
                    match (r.info.arch, t.size) {
                        (cvm_core::Arch::Aarch64, 1) => "ldrsb x22, [x21]".to_string(),
                        (cvm_core::Arch::Riscv64, 1) => "lb s5, 0(s4)".to_string(),
                        (cvm_core::Arch::X86_64, 1) => "movsx r11, byte [r10]".to_string(),
                        (_, n) => format!("{n}-byte load"),
                    },
                    "stage-2 fault / trap".into(),
                ],
            ),
            (1, 2, {
                let mut v = vec![reason];
                v.extend(regs);
                v
            }),
            (
                2,
                3,
                vec![format!(
                    "VmExit::Mmio {{ gpa: {:#x}, size: {} }}",
                    t.gpa, t.size
                )],
            ),
            (3, 2, vec![format!("Resume::MmioRead({:#x})", t.answer)]),
            (2, 1, vec![format!("value via {channel_out}")]),
            (
                1,
                0,
                vec![
                    "mask, sign-extend, write Rt/rd, PC += len".into(),
                    t.guest_value
                        .map(|g| format!("guest register = {g:#x}"))
                        .unwrap_or_default(),
                ],
            ),
        ];
        let mut y = 100.0;
        for (from, to, labels) in steps {
            let xa = x0 + lane_w * from as f64 + lane_w / 2.0;
            let xb = x0 + lane_w * to as f64 + lane_w / 2.0;
            let lx = xa.min(xb) + 6.0;
            for (k, label) in labels.iter().filter(|l| !l.is_empty()).enumerate() {
                let _ = writeln!(
                    s,
                    r#"<text x="{lx}" y="{}">{}</text>"#,
                    y + 13.0 * k as f64,
                    esc(label)
                );
            }
            let n = labels.iter().filter(|l| !l.is_empty()).count().max(1) as f64;
            y += 13.0 * n + 2.0;
            let _ = writeln!(
                s,
                r#"<line x1="{xa}" y1="{y}" x2="{xb}" y2="{y}" stroke="black" marker-end="url(#a)"/>"#
            );
            y += 22.0;
        }
    }
    s.push_str("</svg>\n");
    s
}

/// Builds a [`Program`] from its JSON form (`cvm compare PROGRAM.json`): an object with an
/// `ops` list, each op as in [`Op`]'s serde form, e.g.
/// `{"ops":[{"mmio_write":{"addr":167772160,"size":4,"value":1}},"system_off"]}`.
pub fn program_from_json(text: &str) -> Result<Program, String> {
    let p: Program = serde_json::from_str(text).map_err(|e| format!("not a program: {e}"))?;
    Ok(Program::from_ops(p.ops))
}
