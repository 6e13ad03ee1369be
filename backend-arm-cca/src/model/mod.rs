//! The in-process RMM model and the AArch64 guest CPU it runs realms on.
//!
//! The firmware side follows RMM 1.0-rel0 as TF-RMM implements it (tag `rmm-spec-v1.0-rel0`):
//! granule states ([`granule`]), realms ([`realm`]), RTTs ([`rtt`]), data ([`data`]), RECs and
//! REC_ENTER ([`rec`]), realm exits ([`exit`]) and the RSI/PSCI services ([`rsi`]), behind the
//! dispatcher [`rmm::Rmm`], which implements [`crate::Rmi`].

pub mod cpu;
pub mod data;
pub mod exit;
pub mod granule;
pub mod realm;
pub mod rec;
pub mod rmm;
pub mod rsi;
pub mod rtt;

pub use realm::RmmConfig;
pub use rmm::Rmm;
