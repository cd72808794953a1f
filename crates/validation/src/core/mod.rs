//! The core (`""`) API group.

pub(crate) mod misc;
pub(crate) mod pod;
pub(crate) mod service;
