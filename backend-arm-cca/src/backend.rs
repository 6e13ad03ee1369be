//! [`CcaBackend`]: cvm-core's [`Backend`] for Arm CCA realms over an [`Rmi`].

use std::sync::Arc;

use cvm_core::{
    Arch, Backend, BackendInfo, Capability, Confidentiality, Error, HashAlgorithm, Implementation,
    ManagedVm, Result, Vm, VmConfig,
};

use crate::abi::{feature0, RMI_ABI_VERSION};
use crate::features::{feature_defs, ID_REGS};
use crate::host::{CcaVm, RealmSetup};
use crate::model::Rmm;
use crate::rmi::{Rmi, RmiClient};

/// The Arm CCA backend. Today the RMM behind it is the in-process model.
#[derive(Clone)]
pub struct CcaBackend {
    rmi: Arc<dyn Rmi>,
    model: Option<Arc<Rmm>>,
}

impl std::fmt::Debug for CcaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CcaBackend")
            .field("model", &self.model.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for CcaBackend {
    fn default() -> Self {
        Self::model()
    }
}

impl CcaBackend {
    /// A backend over a fresh in-process RMM model.
    pub fn model() -> Self {
        Self::with_model(Rmm::shared())
    }

    /// A backend over the given model (tests inspect it).
    pub fn with_model(rmm: Arc<Rmm>) -> Self {
        Self {
            rmi: Arc::clone(&rmm) as Arc<dyn Rmi>,
            model: Some(rmm),
        }
    }

    /// A backend over any [`Rmi`] (e.g. a failure-injecting wrapper).
    pub fn with_rmi(rmi: Arc<dyn Rmi>) -> Self {
        Self { rmi, model: None }
    }

    /// The RMI it uses.
    pub fn rmi(&self) -> &Arc<dyn Rmi> {
        &self.rmi
    }

    /// The model, when the RMM is the in-process model given at construction.
    pub fn rmm(&self) -> Option<&Arc<Rmm>> {
        self.model.as_ref()
    }
}

impl Backend for CcaBackend {
    fn info(&self) -> BackendInfo {
        let c = RmiClient::new(&*self.rmi, None);
        let version = c.version(RMI_ABI_VERSION);
        let feat = c.features(0).unwrap_or(0);
        let max_s2sz = feature0::field(feat, feature0::S2SZ_SHIFT, 8) as u8;
        let mut measurement = Vec::new();
        if feat & feature0::HASH_SHA_256 != 0 {
            measurement.push(HashAlgorithm::Sha256);
        }
        if feat & feature0::HASH_SHA_512 != 0 {
            measurement.push(HashAlgorithm::Sha512);
        }
        let max_recs = 1u32 << feature0::field(feat, feature0::MAX_RECS_ORDER_SHIFT, 4);
        let available = version.is_ok();
        BackendInfo {
            name: "arm-cca".into(),
            arch: Arch::Aarch64,
            confidentiality: Confidentiality::ArmCca,
            implementation: if self.model.is_some() {
                Implementation::Model
            } else {
                Implementation::Hardware
            },
            available,
            unavailable_reason: version.err().map(|e| format!("RMI 1.0 not available: {e}")),
            private_memory: true,
            conversions: true,
            measurement,
            max_vcpus: max_recs,
            addr_bits: max_s2sz.saturating_sub(1),
            features: ID_REGS.iter().map(|r| r.name.to_owned()).collect(),
            capabilities: vec![
                Capability {
                    name: "RMI_VERSION".into(),
                    present: available,
                    detail: "1.0".into(),
                },
                Capability {
                    name: "RmiFeatureRegister0".into(),
                    present: available,
                    detail: format!("{feat:#x}"),
                },
            ],
        }
    }

    fn create_vm(&self, config: &VmConfig) -> Result<Box<dyn Vm>> {
        if config.confidentiality != Confidentiality::ArmCca {
            return Err(Error::Unsupported(format!(
                "the arm-cca backend creates realms only, not {:?} VMs",
                config.confidentiality
            )));
        }
        let setup = RealmSetup::from_config(config)?;
        let rmi = Arc::clone(&self.rmi);
        let vm = ManagedVm::new(
            config,
            setup.s2sz - 1,
            feature_defs(&config.cca),
            move |shared| CcaVm::create(rmi, shared),
        )?;
        Ok(Box::new(vm))
    }
}
