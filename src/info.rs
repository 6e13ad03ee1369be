//! `cvm info`: what every compiled-in backend reports on this host.

use std::fmt::Write;

use cvm_core::{BackendInfo, Confidentiality, Implementation};

/// The probe of every compiled-in backend.
pub fn collect() -> Vec<BackendInfo> {
    crate::backends().iter().map(|b| b.info()).collect()
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// A human-readable table, then each backend's capabilities.
pub fn render_table(infos: &[BackendInfo]) -> String {
    let mut rows: Vec<[String; 8]> = vec![[
        "backend".into(),
        "status".into(),
        "arch".into(),
        "confidentiality".into(),
        "runs on".into(),
        "private mem".into(),
        "measurement".into(),
        "max vCPUs".into(),
    ]];
    for i in infos {
        rows.push([
            i.name.clone(),
            if i.available {
                "available".into()
            } else {
                "unavailable".into()
            },
            format!("{:?}", i.arch).to_lowercase(),
            match i.confidentiality {
                Confidentiality::None => "none".into(),
                Confidentiality::ArmCca => "arm-cca realm".into(),
                Confidentiality::RiscvCove => "riscv-cove tvm".into(),
            },
            match i.implementation {
                Implementation::Kvm => "kvm".into(),
                Implementation::Hardware => "hardware".into(),
                Implementation::Model => "in-process model".into(),
            },
            format!(
                "{}{}",
                yes_no(i.private_memory),
                if i.conversions { " (+convert)" } else { "" }
            ),
            i.measurement
                .iter()
                .map(|a| a.name())
                .collect::<Vec<_>>()
                .join(","),
            i.max_vcpus.to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..8)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (n, r) in rows.iter().enumerate() {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
        if n == 0 {
            let _ = writeln!(
                out,
                "{}",
                widths
                    .iter()
                    .map(|w| "-".repeat(*w))
                    .collect::<Vec<_>>()
                    .join("  ")
            );
        }
    }
    for i in infos {
        let _ = writeln!(out, "\n{}:", i.name);
        if let Some(reason) = &i.unavailable_reason {
            let _ = writeln!(out, "  unavailable: {reason}");
        }
        if !i.features.is_empty() {
            let _ = writeln!(out, "  features: {}", i.features.join(", "));
        }
        for c in &i.capabilities {
            let _ = writeln!(
                out,
                "  [{}] {}: {}",
                if c.present { "x" } else { " " },
                c.name,
                c.detail
            );
        }
    }
    out
}
