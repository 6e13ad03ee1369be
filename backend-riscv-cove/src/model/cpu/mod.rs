//! RV64 guest CPU (being written).
