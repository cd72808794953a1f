//! The controllers, one per file, and the table that selects them (`--controllers`).

pub mod deployment;
pub mod endpoints;
pub mod endpointslice;
pub mod garbagecollector;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod replicaset;
pub mod serviceaccount;
pub mod servicelb;

use crate::framework::ControllerDescriptor;

/// Every controller this binary can run, with upstream's names.
pub const DESCRIPTORS: &[ControllerDescriptor] = &[
    ControllerDescriptor {
        name: "replicaset",
        enabled_by_default: true,
        start: replicaset::start_replicaset,
    },
    ControllerDescriptor {
        name: "replicationcontroller",
        enabled_by_default: true,
        start: replicaset::start_replicationcontroller,
    },
    ControllerDescriptor {
        name: "deployment",
        enabled_by_default: true,
        start: deployment::start,
    },
    ControllerDescriptor {
        name: "serviceaccount",
        enabled_by_default: true,
        start: serviceaccount::start_serviceaccount,
    },
    ControllerDescriptor {
        name: "root-ca-certificate-publisher",
        enabled_by_default: true,
        start: serviceaccount::start_root_ca_publisher,
    },
    ControllerDescriptor {
        name: "endpoint",
        enabled_by_default: true,
        start: endpoints::start,
    },
    ControllerDescriptor {
        name: "endpointslice",
        enabled_by_default: true,
        start: endpointslice::start,
    },
    ControllerDescriptor {
        name: "endpointslicemirroring",
        enabled_by_default: true,
        start: endpointslice::start_mirroring,
    },
    ControllerDescriptor {
        name: "garbagecollector",
        enabled_by_default: true,
        start: garbagecollector::start,
    },
    ControllerDescriptor {
        name: "namespace",
        enabled_by_default: true,
        start: namespace::start,
    },
    ControllerDescriptor {
        name: "nodelifecycle",
        enabled_by_default: true,
        start: nodelifecycle::start,
    },
    ControllerDescriptor {
        name: "taint-eviction-controller",
        enabled_by_default: true,
        start: nodelifecycle::start_taint_eviction,
    },
    ControllerDescriptor {
        name: "nodeipam",
        enabled_by_default: true,
        start: nodeipam::start,
    },
    ControllerDescriptor {
        name: "servicelb",
        enabled_by_default: true,
        start: servicelb::start,
    },
];
