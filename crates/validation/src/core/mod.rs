//! The core (`""`) API group.

pub(crate) mod pod;
pub(crate) mod service;
