//! The launch measurement the guest reads equals the offline prediction from the same log.

use cvm::guest::{Layout, Program, Runner};
use cvm::{HashAlgorithm, MeasurementLog, VmConfig};

use crate::harness::{Env, Which, SCRATCH};

crate::per_backend!(
    guest_measurement_matches_replay =>
    guest_measurement_matches_replay_kvm,
    guest_measurement_matches_replay_arm_cca,
    guest_measurement_matches_replay_riscv_cove
);

/// The offline prediction of the launch (image) measurement from `log`, per architecture:
/// CCA's RIM, CoVE's TCG PCR2 (the TVM pages), plain KVM's software `LAUNCH` digest.
fn predict(env: &Env, log: &MeasurementLog) -> Vec<u8> {
    match env.which {
        Which::ArmCca => cvm::cca::replay(log).expect("cca replay").rim,
        Which::RiscvCove => cvm::cove::replay(log)
            .expect("cove replay")
            .to_measurement()
            .register("PCR2")
            .expect("PCR2")
            .to_vec(),
        Which::Kvm => cvm::kvm::measure::launch_digest(log).expect("launch digest"),
    }
}

/// The host's own register holding the launch measurement.
fn host_register(env: &Env) -> &'static str {
    match env.which {
        Which::ArmCca => "RIM",
        Which::RiscvCove => "PCR2",
        Which::Kvm => cvm::kvm::measure::LAUNCH_REGISTER,
    }
}

/// For every algorithm the backend offers: the guest reads the register named by
/// `launch_measurement_index()`, and it equals the replay of `measurement_log()` and the
/// host's `measurement()`. Plain KVM has no guest-visible measurement (the platform says
/// `NotSupported`): there only the host digest is checked against the offline replay.
fn guest_measurement_matches_replay(env: &Env) {
    let layout = Layout::standard();
    assert!(!env.info.measurement.is_empty());
    for &algo in &env.info.measurement {
        let config = VmConfig {
            measurement: Some(algo),
            ..env.config()
        };
        let index = {
            let vm = env.backend().create_vm(&config).expect("create_vm");
            let platform = vm.guest_platform();
            platform.launch_measurement_index()
        };
        let mut p = Program::new();
        p.mem_write(SCRATCH, 8, 0x1234);
        p.read_measurement(index);
        let (mut l, guest_visible) = match env.try_launch_with(&config, &p, &layout) {
            Ok(l) => (l, true),
            Err(e) => {
                let Some(ns) = e.not_supported() else {
                    panic!("{}: launch failed: {e}", env.name());
                };
                assert_eq!(env.which, Which::Kvm, "{}: {ns}", env.name());
                env.skip(format!("guest-visible measurement: {ns}"));
                let mut q = Program::new();
                q.mem_write(SCRATCH, 8, 0x1234);
                (env.launch(&q, &layout), false)
            }
        };
        let log_before = l.vm.measurement_log();
        assert_eq!(log_before.algorithm, algo, "{}", env.name());
        let predicted = predict(env, &log_before);
        assert_eq!(predicted.len(), algo.len());
        let host = l.vm.measurement().expect("measurement");
        assert_eq!(host.algorithm, algo);
        assert_eq!(
            host.register(host_register(env)),
            Some(predicted.as_slice()),
            "{}: host measurement vs offline replay ({})",
            env.name(),
            algo.name()
        );
        let out = Runner::new(&layout)
            .run(l.vcpu.as_mut())
            .unwrap_or_else(|e| panic!("{}: {e} ({e:?})", env.name()));
        assert!(out.passed(), "{}: {:#?}", env.name(), out.failures());
        // Running changes neither the log nor the launch measurement.
        assert_eq!(l.vm.measurement_log(), log_before);
        assert_eq!(predict(env, &l.vm.measurement_log()), predicted);
        if guest_visible {
            let guest = out
                .measurement(index)
                .unwrap_or_else(|| panic!("{}: no measurement reported", env.name()));
            assert_eq!(
                guest,
                predicted.as_slice(),
                "{}: the guest's register {index} (launch_measurement_index) must be the \
                 launch measurement {} predicted offline ({})",
                env.name(),
                host_register(env),
                algo.name()
            );
        }
        if env.which == Which::Kvm {
            assert_eq!(algo, HashAlgorithm::Sha256);
        }
    }
}
