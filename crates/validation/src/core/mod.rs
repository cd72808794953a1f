//! The core (`""`) API group.

pub(crate) mod pod;
