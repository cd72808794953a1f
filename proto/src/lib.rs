//! CRI `runtime.v1` types and the tonic clients for `RuntimeService` and `ImageService`.
//!
//! The `.proto` beside this crate declares only the RPCs and fields kubrs uses. Every field keeps
//! the number and type of upstream's k8s.io/cri-api `api.proto`, so the wire format is identical;
//! fields we do not declare are skipped by prost on decode, as proto3 requires.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod runtime {
    pub mod v1 {
        tonic::include_proto!("runtime.v1");
    }
}

pub use runtime::v1;
