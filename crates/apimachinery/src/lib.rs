//! Pure Kubernetes API machinery shared by the API server and clients: `Status` errors and
//! field-path validation errors, label and field selectors, JSON / merge / strategic-merge
//! patches and server-side apply. Nothing here does I/O.

pub mod apply;
pub mod errors;
pub mod patch;
pub mod quantity;
pub mod selectors;
