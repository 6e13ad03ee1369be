//! End-to-end tests of the `cvm` command line (the built binary), and the check that the
//! sample guest images in `examples/specs/` are exactly what their generator produces.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cvm::spec::{samples, BackendKind};

const BACKENDS: [(BackendKind, &str); 3] = [
    (BackendKind::Kvm, "hello-kvm.toml"),
    (BackendKind::ArmCca, "hello-cca.toml"),
    (BackendKind::RiscvCove, "hello-cove.toml"),
];

fn cvm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cvm"))
        .args(args)
        .output()
        .expect("the cvm binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn specs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/specs")
}

fn spec(name: &str) -> String {
    specs().join(name).display().to_string()
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cvm-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Whether /dev/kvm opens here; prints the skip otherwise.
fn kvm_available(test: &str) -> bool {
    match cvm::kvm::KvmBackend::open() {
        Ok(_) => true,
        Err(e) => {
            eprintln!("SKIP {test} on kvm: {e}");
            false
        }
    }
}

/// Asserts a failure: non-zero exit, exactly one line on stderr; returns it.
fn one_line_failure(o: &Output) -> String {
    assert!(
        !o.status.success(),
        "expected failure, stdout: {}",
        stdout(o)
    );
    let e = stderr(o);
    assert_eq!(e.trim_end().lines().count(), 1, "one line on stderr: {e:?}");
    e
}

#[test]
fn sample_images_match_their_generator() {
    let regenerate = std::env::var_os("CVM_REGENERATE_SAMPLES").is_some();
    for (backend, _) in BACKENDS {
        let image = samples::hello_image(backend).unwrap();
        let path = specs().join(samples::image_file(backend));
        if regenerate {
            std::fs::write(&path, &image).unwrap();
        }
        let committed = std::fs::read(&path).unwrap();
        assert!(
            committed == image,
            "{} differs from cvm::spec::samples::hello_image({backend:?}); \
             regenerate with CVM_REGENERATE_SAMPLES=1 cargo test --test cli",
            path.display()
        );
    }
}

#[test]
fn info_json_lists_three_backends() {
    let o = cvm(&["info", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    for part in ["kvm", "cca", "cove"] {
        assert!(
            names.iter().any(|n| n.contains(part)),
            "{part} in {names:?}"
        );
    }
}

const REALM: &str =
    r#""realm": {"flags":0,"s2sz":48,"sve_vl":0,"num_bps":1,"num_wps":1,"pmu_num_ctrs":0}"#;

#[test]
fn measure_cca_log_prints_the_rim() {
    let d = temp_dir("v0");
    let log = d.join("log.json");
    std::fs::write(
        &log,
        format!(r#"{{"algorithm":"sha256",{REALM},"events":[]}}"#),
    )
    .unwrap();
    let o = cvm(&["measure", "cca", log.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o).trim_end(),
        "RIM 6739dfb22b75ee1268d08dfa8369f501bc0b066243553f069f560d1fa1172973"
    );
}

#[test]
fn bad_inputs_exit_non_zero_with_one_line() {
    let d = temp_dir("bad");
    let not_json = d.join("not-json.json");
    std::fs::write(&not_json, "{").unwrap();
    let bad_algo = d.join("md5.json");
    std::fs::write(
        &bad_algo,
        format!(r#"{{"algorithm":"md5",{REALM},"events":[]}}"#),
    )
    .unwrap();
    let missing = d.join("missing.json");
    for target in ["cca", "cove"] {
        for log in [&not_json, &bad_algo, &missing] {
            let e = one_line_failure(&cvm(&["measure", target, log.to_str().unwrap()]));
            assert!(e.starts_with("cvm: error:"), "{e}");
        }
    }
    one_line_failure(&cvm(&["measure", "tdx", not_json.to_str().unwrap()]));
    one_line_failure(&cvm(&["measure", "cca"]));
    let bad_spec = d.join("bad.toml");
    std::fs::write(&bad_spec, "backend = \"xen\"\n").unwrap();
    for cmd in ["measure", "run"] {
        let e = one_line_failure(&cvm(&[cmd, bad_spec.to_str().unwrap()]));
        assert!(e.contains("unknown backend"), "{e}");
        let e = one_line_failure(&cvm(&[cmd, d.join("absent.toml").to_str().unwrap()]));
        assert!(e.contains("absent.toml"), "{e}");
    }
    let outside = d.join("outside.toml");
    let text = std::fs::read_to_string(specs().join("hello-cca.toml"))
        .unwrap()
        .replace("path = \"hello-cca.bin\"", "hex = \"00\"")
        .replace("gpa = 0x8000_0000\nmeasure", "gpa = 0x9000_0000\nmeasure");
    std::fs::write(&outside, text).unwrap();
    let e = one_line_failure(&cvm(&["run", outside.to_str().unwrap()]));
    assert!(e.contains("outside RAM"), "{e}");
}

#[test]
fn run_hello_cca_prints_the_hello_line() {
    let o = cvm(&["run", &spec("hello-cca.toml")]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "hello from arm-cca\n");
    let e = stderr(&o);
    assert!(e.contains("system off"), "{e}");
    assert!(e.contains("RIM "), "{e}");
}

#[test]
fn run_and_measure_agree_on_every_backend() {
    for (backend, file) in BACKENDS {
        if backend == BackendKind::Kvm && !kvm_available("run_and_measure_agree") {
            continue;
        }
        let m = cvm(&["measure", &spec(file)]);
        assert!(m.status.success(), "{file}: {}", stderr(&m));
        let predicted = stdout(&m);
        assert!(!predicted.trim().is_empty());
        let r = cvm(&["run", &spec(file)]);
        assert!(r.status.success(), "{file}: {}", stderr(&r));
        assert_eq!(stdout(&r), format!("hello from {}\n", backend.name()));
        let summary = stderr(&r);
        let reported: Vec<&str> = summary
            .lines()
            .map(str::trim)
            .skip_while(|l| !l.starts_with("measurement"))
            .skip(1)
            .collect();
        let predicted: Vec<&str> = predicted.lines().collect();
        assert_eq!(reported, predicted, "{file}: {summary}");
    }
}

#[test]
fn measure_spec_json_is_a_measurement() {
    let o = cvm(&["measure", &spec("hello-cove.toml"), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m: cvm::Measurement = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(m.algorithm, cvm::HashAlgorithm::Sha384);
    assert!(m.register("TCI").is_some());
}

#[test]
fn run_honours_the_exit_budget() {
    let o = cvm(&["run", &spec("hello-cca.toml"), "--max-exits", "3"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("exit budget of 3"), "{e}");
}

#[test]
fn compare_json_for_one_backend() {
    let o = cvm(&["compare", "--json", "--backends", "arm-cca"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let reports = v.as_array().unwrap();
    assert_eq!(reports.len(), 1, "{v}");
    assert!(reports[0].is_object());
}

#[test]
fn compare_table_and_svg_show_each_channel() {
    let dir = temp_dir("compare-svg");
    let svg = dir.join("mmio.svg");
    let o = cvm(&[
        "compare",
        "--backends",
        "arm-cca,riscv-cove",
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = stdout(&o);
    // The same sign-extending read travelled through each architecture's own channel, and
    // each guest got the sign-extended value and passed its checks.
    assert!(
        table.contains("RecEntry.gprs[0] + EMULATED_MMIO"),
        "{table}"
    );
    assert!(table.contains("NACL scratch a0"), "{table}");
    assert_eq!(
        table.matches("guest got 0xffffffffffffff80").count(),
        2,
        "{table}"
    );
    assert_eq!(table.matches("all checks passed").count(), 2, "{table}");
    assert_eq!(
        table.matches("host saw the guest's data").count(),
        2,
        "{table}"
    );
    assert!(table.contains("RMI_REC_ENTER") && table.contains("COVH_TVM_VCPU_RUN"));
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(picture.starts_with("<svg") && picture.trim_end().ends_with("</svg>"));
    assert!(picture.contains("arm-cca") && picture.contains("riscv-cove"));
    assert!(picture.contains("Resume::MmioRead(0x80)"));
    // The JSON says the same: the guest read its own launch measurement, equal to the host's.
    let o = cvm(&["compare", "--json", "--backends", "arm-cca,riscv-cove"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    for r in v.as_array().unwrap() {
        let guest = r["guest_measurement"].as_str().unwrap();
        let regs = r["measurement"]["registers"].as_array().unwrap();
        assert!(
            regs.iter().any(|x| x["value"].as_str() == Some(guest)),
            "{}: the guest's measurement is one of the host's registers",
            r["info"]["name"]
        );
    }
}

#[test]
fn compare_runs_a_program_from_json() {
    let program = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/programs/mmio-widths.json");
    let o = cvm(&[
        "compare",
        "--json",
        "--backends",
        "arm-cca,riscv-cove",
        program.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    for r in v.as_array().unwrap() {
        // 4 writes + 3 repeated writes, plus the doorbell's REPORT (2) and DONE (1) writes.
        assert_eq!(r["exits"]["mmio_write"], 10, "{r}");
        assert_eq!(r["exits"]["mmio_read"], 1, "{r}");
        assert_eq!(r["mmio_read"]["size"], 4, "{r}");
        assert!(r["failures"].as_array().unwrap().is_empty(), "{r}");
    }
    let bad = temp_dir("bad-program").join("p.json");
    std::fs::write(&bad, r#"{"ops":[{"teleport":{}}]}"#).unwrap();
    let o = cvm(&["compare", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        one_line_failure(&o).contains("not a program"),
        "{}",
        stderr(&o)
    );
}
