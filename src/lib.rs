//! cvm
