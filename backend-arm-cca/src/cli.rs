//! `cvm measure cca [--json] LOG.json`: the offline RIM/REM prediction for verifiers.
//!
//! The log format is cvm-core's [`MeasurementLog`] JSON:
//!
//! ```json
//! {"algorithm": "sha256",
//!  "realm": {"flags": 0, "s2sz": 40, "sve_vl": 0, "num_bps": 1, "num_wps": 1, "pmu_num_ctrs": 0},
//!  "events": [{"ripas": {"base": "0x80000000", "top": "0x80200000"}},
//!             {"data": {"ipa": "0x80000000", "measured": true, "file": "image.bin"}},
//!             {"rec": {"runnable": true, "pc": "0x80000000", "gprs": ["0x80100000"]}},
//!             {"rem": {"index": 1, "hex": "0102"}}]}
//! ```
//!
//! A `data` event with a `file` (read relative to the log) covers `ceil(len / 4096)` granules
//! from `ipa` upward, the last zero-padded; `"hex"` gives inline bytes. The output is
//! `RIM <hex>` (the digest's own length), or with `--json` the RIM and the four REMs.

use std::path::Path;

use cvm_core::{LogError, MeasurementLog};

use crate::measure::{replay, CcaMeasurement};

/// Why `cvm measure cca` failed; its `Display` is the one line to print.
#[derive(Debug, thiserror::Error)]
#[error("cvm measure cca: {0}")]
pub struct MeasureCliError(#[from] pub LogError);

/// Reads `path`, replays it and formats the result (`RIM <hex>`, or JSON with `json`).
pub fn measure_log_cli(path: &Path, json: bool) -> Result<String, MeasureCliError> {
    let log = MeasurementLog::from_path(path)?;
    let m = replay(&log)?;
    Ok(format_measurement(&m, json))
}

/// Formats a measurement as the CLI prints it.
pub fn format_measurement(m: &CcaMeasurement, json: bool) -> String {
    if json {
        let v = serde_json::json!({
            "algorithm": m.algorithm.name(),
            "rim": hex::encode(&m.rim),
            "rems": m.rems.iter().map(hex::encode).collect::<Vec<_>>(),
        });
        v.to_string()
    } else {
        format!("RIM {}", hex::encode(&m.rim))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cvm-cca-cli-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn write_log(name: &str, body: &str) -> PathBuf {
        let d = dir(name);
        let p = d.join("log.json");
        std::fs::write(&p, body).unwrap();
        p
    }

    const REALM: &str =
        r#""realm": {"flags":0,"s2sz":48,"sve_vl":0,"num_bps":1,"num_wps":1,"pmu_num_ctrs":0}"#;

    #[test]
    fn v0_through_the_cli() {
        let p = write_log(
            "v0",
            &format!(r#"{{"algorithm":"sha256",{REALM},"events":[]}}"#),
        );
        let out = measure_log_cli(&p, false).unwrap();
        assert_eq!(
            out,
            "RIM 6739dfb22b75ee1268d08dfa8369f501bc0b066243553f069f560d1fa1172973"
        );
        let p = write_log(
            "v0-512",
            &format!(r#"{{"algorithm":"sha512",{REALM},"events":[]}}"#),
        );
        let out = measure_log_cli(&p, true).unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["algorithm"], "sha512");
        assert!(v["rim"].as_str().unwrap().starts_with("799e434048fb57eb"));
        assert_eq!(v["rems"].as_array().unwrap().len(), 4);
        assert_eq!(v["rems"][0].as_str().unwrap(), "0".repeat(128));
    }

    #[test]
    fn file_and_hex_data_events_agree() {
        let d = dir("files");
        let image: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        std::fs::write(d.join("image.bin"), &image).unwrap();
        let p = d.join("log.json");
        std::fs::write(
            &p,
            format!(
                r#"{{"algorithm":"sha256",{REALM},"events":[
                {{"ripas":{{"base":"0x80000000","top":"0x80200000"}}}},
                {{"data":{{"ipa":"0x80000000","measured":true,"file":"image.bin"}}}},
                {{"rec":{{"runnable":true,"pc":"0x80000000","gprs":["0x80100000"]}}}},
                {{"rem":{{"index":1,"hex":"0102"}}}}]}}"#
            ),
        )
        .unwrap();
        let a = measure_log_cli(&p, true).unwrap();
        let q = d.join("log2.json");
        std::fs::write(
            &q,
            format!(
                r#"{{"algorithm":"sha256",{REALM},"events":[
                {{"ripas":{{"base":"0x80000000","top":"0x80200000"}}}},
                {{"data":{{"ipa":"0x80000000","measured":true,"hex":"{}"}}}},
                {{"data":{{"ipa":"0x80001000","measured":true,"hex":"{}"}}}},
                {{"rec":{{"runnable":true,"pc":"0x80000000","gprs":["0x80100000"]}}}},
                {{"rem":{{"index":1,"hex":"0102"}}}}]}}"#,
                hex::encode(&image[..4096]),
                hex::encode(&image[4096..])
            ),
        )
        .unwrap();
        let b = measure_log_cli(&q, true).unwrap();
        assert_eq!(a, b);
        let v: serde_json::Value = serde_json::from_str(&a).unwrap();
        assert_ne!(v["rems"][0].as_str().unwrap(), "0".repeat(64));
    }

    fn err(name: &str, body: &str) -> String {
        let p = write_log(name, body);
        let e = measure_log_cli(&p, false).unwrap_err().to_string();
        assert!(!e.contains('\n'), "one line: {e}");
        e
    }

    #[test]
    fn bad_logs_are_one_line_errors() {
        let e = err(
            "algo",
            &format!(r#"{{"algorithm":"md5",{REALM},"events":[]}}"#),
        );
        assert!(e.contains("md5") || e.contains("unknown variant"), "{e}");
        let e = err(
            "sha384",
            &format!(r#"{{"algorithm":"sha384",{REALM},"events":[]}}"#),
        );
        assert!(e.contains("sha384"), "{e}");
        let e = err("norealm", r#"{"algorithm":"sha256","events":[]}"#);
        assert!(e.contains("realm"), "{e}");
        let e = err(
            "misaligned",
            &format!(
                r#"{{"algorithm":"sha256",{REALM},"events":[{{"data":{{"ipa":"0x80000010","measured":true,"hex":"00"}}}}]}}"#
            ),
        );
        assert!(e.contains("aligned"), "{e}");
        let e = err(
            "nofile",
            &format!(
                r#"{{"algorithm":"sha256",{REALM},"events":[{{"data":{{"ipa":"0x80000000","measured":true,"file":"missing.bin"}}}}]}}"#
            ),
        );
        assert!(e.contains("missing.bin"), "{e}");
        let e = err(
            "gprs",
            &format!(
                r#"{{"algorithm":"sha256",{REALM},"events":[{{"rec":{{"runnable":true,"pc":0,"gprs":[1,2,3,4,5,6,7,8,9]}}}}]}}"#
            ),
        );
        assert!(e.contains("gprs"), "{e}");
        for idx in [0, 5] {
            let e = err(
                &format!("rem{idx}"),
                &format!(
                    r#"{{"algorithm":"sha256",{REALM},"events":[{{"rem":{{"index":{idx},"hex":"01"}}}}]}}"#
                ),
            );
            assert!(e.contains("REM index"), "{e}");
        }
        let e = err("notjson", "{");
        assert!(e.contains("log.json"), "{e}");
        let e = err("absent-log", "");
        assert!(e.starts_with("cvm measure cca"), "{e}");
        let missing = std::env::temp_dir().join("cvm-cca-definitely-missing/log.json");
        assert!(measure_log_cli(&missing, false).is_err());
    }
}
