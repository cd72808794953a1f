//! Column definitions, in upstream's order, names, types and priorities.

use crate::docs::doc;
use crate::Printer;
use serde_json::{json, Value};

const CONTAINERS_DOC: &str = "Names of each container in the template.";
const IMAGES_DOC: &str = "Images referenced by each container in the template.";

struct Col {
    name: &'static str,
    ty: &'static str,
    format: &'static str,
    description: &'static str,
    priority: i32,
}

/// A plain column.
fn c(name: &'static str, ty: &'static str, description: &'static str) -> Col {
    Col {
        name,
        ty,
        format: "",
        description,
        priority: 0,
    }
}

/// A `-o wide` column.
fn w(name: &'static str, ty: &'static str, description: &'static str) -> Col {
    Col {
        priority: 1,
        ..c(name, ty, description)
    }
}

fn name() -> Col {
    Col {
        format: "name",
        ..c("Name", "string", doc("meta.ObjectMeta.name"))
    }
}

fn age() -> Col {
    c("Age", "string", doc("meta.ObjectMeta.creationTimestamp"))
}

pub(crate) fn columns(p: Printer) -> Vec<Value> {
    use Printer::*;
    let d = doc;
    let cols: Vec<Col> = match p {
        Pod => vec![
            name(),
            c("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
            c("Status", "string", "The aggregate status of the containers in this pod."),
            c("Restarts", "string", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
            age(),
            w("IP", "string", d("core.PodStatus.podIP")),
            w("Node", "string", d("core.PodSpec.nodeName")),
            w("Nominated Node", "string", d("core.PodStatus.nominatedNodeName")),
            w("Readiness Gates", "string", d("core.PodSpec.readinessGates")),
        ],
        PodTemplate => vec![
            name(),
            c("Containers", "string", CONTAINERS_DOC),
            c("Images", "string", IMAGES_DOC),
            c("Pod Labels", "string", "The labels for the pod template."),
        ],
        PodDisruptionBudget => vec![
            name(),
            c("Min Available", "string", "The minimum number of pods that must be available."),
            c("Max Unavailable", "string", "The maximum number of pods that may be unavailable."),
            c("Allowed Disruptions", "integer", "Calculated number of pods that may be disrupted at this time."),
            age(),
        ],
        ReplicationController => vec![
            name(),
            c("Desired", "integer", d("core.ReplicationControllerSpec.replicas")),
            c("Current", "integer", d("core.ReplicationControllerStatus.replicas")),
            c("Ready", "integer", d("core.ReplicationControllerStatus.readyReplicas")),
            age(),
            w("Containers", "string", CONTAINERS_DOC),
            w("Images", "string", IMAGES_DOC),
            w("Selector", "string", d("core.ReplicationControllerSpec.selector")),
        ],
        ReplicaSet => vec![
            name(),
            c("Desired", "integer", d("apps.ReplicaSetSpec.replicas")),
            c("Current", "integer", d("apps.ReplicaSetStatus.replicas")),
            c("Ready", "integer", d("apps.ReplicaSetStatus.readyReplicas")),
            age(),
            w("Containers", "string", CONTAINERS_DOC),
            w("Images", "string", IMAGES_DOC),
            w("Selector", "string", d("apps.ReplicaSetSpec.selector")),
        ],
        DaemonSet => vec![
            name(),
            c("Desired", "integer", d("apps.DaemonSetStatus.desiredNumberScheduled")),
            c("Current", "integer", d("apps.DaemonSetStatus.currentNumberScheduled")),
            c("Ready", "integer", d("apps.DaemonSetStatus.numberReady")),
            c("Up-to-date", "integer", d("apps.DaemonSetStatus.updatedNumberScheduled")),
            c("Available", "integer", d("apps.DaemonSetStatus.numberAvailable")),
            c("Node Selector", "string", d("core.PodSpec.nodeSelector")),
            age(),
            w("Containers", "string", CONTAINERS_DOC),
            w("Images", "string", IMAGES_DOC),
            w("Selector", "string", d("apps.DaemonSetSpec.selector")),
        ],
        Job => vec![
            name(),
            c("Status", "string", "Status of the job."),
            c("Completions", "string", d("batch.JobStatus.succeeded")),
            c("Duration", "string", "Time required to complete the job."),
            age(),
            w("Containers", "string", CONTAINERS_DOC),
            w("Images", "string", IMAGES_DOC),
            w("Selector", "string", d("batch.JobSpec.selector")),
        ],
        CronJob => vec![
            name(),
            c("Schedule", "string", d("batch.CronJobSpec.schedule")),
            c("Timezone", "string", d("batch.CronJobSpec.timeZone")),
            c("Suspend", "boolean", d("batch.CronJobSpec.suspend")),
            c("Active", "integer", d("batch.CronJobStatus.active")),
            c("Last Schedule", "string", d("batch.CronJobStatus.lastScheduleTime")),
            age(),
            w("Containers", "string", CONTAINERS_DOC),
            w("Images", "string", IMAGES_DOC),
            w("Selector", "string", d("batch.JobSpec.selector")),
        ],
        Service => vec![
            name(),
            c("Type", "string", d("core.ServiceSpec.type")),
            c("Cluster-IP", "string", d("core.ServiceSpec.clusterIP")),
            c("External-IP", "string", d("core.ServiceSpec.externalIPs")),
            c("Port(s)", "string", d("core.ServiceSpec.ports")),
            age(),
            w("Selector", "string", d("core.ServiceSpec.selector")),
        ],
        Ingress => vec![
            name(),
            c("Class", "string", "The name of the IngressClass resource that should be used for additional configuration"),
            c("Hosts", "string", "Hosts that incoming requests are matched against before the ingress rule"),
            c("Address", "string", "Address is a list containing ingress points for the load-balancer"),
            c("Ports", "string", "Ports of TLS configurations that open"),
            age(),
        ],
        IngressClass => vec![
            name(),
            c("Controller", "string", "Controller that is responsible for handling this class"),
            c("Parameters", "string", "A reference to a resource with additional parameters"),
            age(),
        ],
        StatefulSet => vec![
            name(),
            c("Ready", "string", "Number of the pod with ready state"),
            age(),
            w("Containers", "string", CONTAINERS_DOC),
            w("Images", "string", IMAGES_DOC),
        ],
        Endpoints => vec![name(), c("Endpoints", "string", d("core.Endpoints.subsets")), age()],
        Node => vec![
            name(),
            c("Status", "string", "The status of the node"),
            c("Roles", "string", "The roles of the node"),
            age(),
            c("Version", "string", d("core.NodeSystemInfo.kubeletVersion")),
            w("Internal-IP", "string", d("core.NodeStatus.addresses")),
            w("External-IP", "string", d("core.NodeStatus.addresses")),
            w("OS-Image", "string", d("core.NodeSystemInfo.osImage")),
            w("Kernel-Version", "string", d("core.NodeSystemInfo.kernelVersion")),
            w("Container-Runtime", "string", d("core.NodeSystemInfo.containerRuntimeVersion")),
        ],
        Event => vec![
            c("Last Seen", "string", d("core.Event.lastTimestamp")),
            c("Type", "string", d("core.Event.type")),
            c("Reason", "string", d("core.Event.reason")),
            c("Object", "string", d("core.Event.involvedObject")),
            w("Subobject", "string", d("core.ObjectReference.fieldPath")),
            w("Source", "string", d("core.Event.source")),
            c("Message", "string", d("core.Event.message")),
            w("First Seen", "string", d("core.Event.firstTimestamp")),
            w("Count", "string", d("core.Event.count")),
            Col {
                priority: 1,
                ..name()
            },
        ],
        Namespace => vec![name(), c("Status", "string", "The status of the namespace"), age()],
        Secret => vec![
            name(),
            c("Type", "string", d("core.Secret.type")),
            c("Data", "string", d("core.Secret.data")),
            age(),
        ],
        ServiceAccount => vec![name(), c("Secrets", "string", d("core.ServiceAccount.secrets")), age()],
        PersistentVolume => vec![
            name(),
            c("Capacity", "string", d("core.PersistentVolumeSpec.capacity")),
            c("Access Modes", "string", d("core.PersistentVolumeSpec.accessModes")),
            c("Reclaim Policy", "string", d("core.PersistentVolumeSpec.persistentVolumeReclaimPolicy")),
            c("Status", "string", d("core.PersistentVolumeStatus.phase")),
            c("Claim", "string", d("core.PersistentVolumeSpec.claimRef")),
            c("StorageClass", "string", "StorageClass of the pv"),
            c("VolumeAttributesClass", "string", "VolumeAttributesClass of the pv"),
            c("Reason", "string", d("core.PersistentVolumeStatus.reason")),
            age(),
            w("VolumeMode", "string", d("core.PersistentVolumeSpec.volumeMode")),
        ],
        PersistentVolumeClaim => vec![
            name(),
            c("Status", "string", d("core.PersistentVolumeClaimStatus.phase")),
            c("Volume", "string", d("core.PersistentVolumeClaimSpec.volumeName")),
            c("Capacity", "string", d("core.PersistentVolumeClaimStatus.capacity")),
            c("Access Modes", "string", d("core.PersistentVolumeClaimStatus.accessModes")),
            c("StorageClass", "string", "StorageClass of the pvc"),
            c("VolumeAttributesClass", "string", "VolumeAttributesClass of the pvc"),
            age(),
            w("VolumeMode", "string", d("core.PersistentVolumeClaimSpec.volumeMode")),
        ],
        Deployment => vec![
            name(),
            c("Ready", "string", "Number of the pod with ready state"),
            c("Up-to-date", "string", d("apps.DeploymentStatus.updatedReplicas")),
            c("Available", "string", d("apps.DeploymentStatus.availableReplicas")),
            age(),
            w("Containers", "string", CONTAINERS_DOC),
            w("Images", "string", IMAGES_DOC),
            w("Selector", "string", d("apps.DeploymentSpec.selector")),
        ],
        HorizontalPodAutoscaler => vec![
            name(),
            c("Reference", "string", d("autoscaling.HorizontalPodAutoscalerSpec.scaleTargetRef")),
            c("Targets", "string", d("autoscaling.HorizontalPodAutoscalerSpec.metrics")),
            c("MinPods", "string", d("autoscaling.HorizontalPodAutoscalerSpec.minReplicas")),
            c("MaxPods", "string", d("autoscaling.HorizontalPodAutoscalerSpec.maxReplicas")),
            c("Replicas", "string", d("autoscaling.HorizontalPodAutoscalerStatus.currentReplicas")),
            age(),
        ],
        ConfigMap => vec![name(), c("Data", "string", d("core.ConfigMap.data")), age()],
        NetworkPolicy => vec![
            name(),
            c("Pod-Selector", "string", d("networking.NetworkPolicySpec.podSelector")),
            age(),
        ],
        RoleBinding => vec![
            name(),
            c("Role", "string", d("rbac.RoleBinding.roleRef")),
            age(),
            w("Users", "string", "Users in the roleBinding"),
            w("Groups", "string", "Groups in the roleBinding"),
            w("ServiceAccounts", "string", "ServiceAccounts in the roleBinding"),
        ],
        ClusterRoleBinding => vec![
            name(),
            c("Role", "string", d("rbac.ClusterRoleBinding.roleRef")),
            age(),
            w("Users", "string", "Users in the clusterRoleBinding"),
            w("Groups", "string", "Groups in the clusterRoleBinding"),
            w("ServiceAccounts", "string", "ServiceAccounts in the clusterRoleBinding"),
        ],
        CertificateSigningRequest => vec![
            name(),
            age(),
            c("SignerName", "string", d("certificates.CertificateSigningRequestSpec.signerName")),
            c("Requestor", "string", d("certificates.CertificateSigningRequestSpec.request")),
            c("RequestedDuration", "string", d("certificates.CertificateSigningRequestSpec.expirationSeconds")),
            c("Condition", "string", d("certificates.CertificateSigningRequestStatus.conditions")),
        ],
        Lease => vec![name(), c("Holder", "string", d("coordination.LeaseSpec.holderIdentity")), age()],
        StorageClass => vec![
            name(),
            c("Provisioner", "string", d("storage.StorageClass.provisioner")),
            c("ReclaimPolicy", "string", d("storage.StorageClass.reclaimPolicy")),
            c("VolumeBindingMode", "string", d("storage.StorageClass.volumeBindingMode")),
            c("AllowVolumeExpansion", "string", d("storage.StorageClass.allowVolumeExpansion")),
            age(),
        ],
        ControllerRevision => vec![
            name(),
            c("Controller", "string", "Controller of the object"),
            c("Revision", "string", d("apps.ControllerRevision.revision")),
            age(),
        ],
        ResourceQuota => vec![
            name(),
            c("Request", "string", "Request represents a minimum amount of cpu/memory that a container may consume."),
            c("Limit", "string", "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node."),
            age(),
        ],
        PriorityClass => vec![
            name(),
            c("Value", "integer", d("scheduling.PriorityClass.value")),
            c("Global-Default", "boolean", d("scheduling.PriorityClass.globalDefault")),
            age(),
            c("PreemptionPolicy", "string", d("scheduling.PriorityClass.preemptionPolicy")),
        ],
        EndpointSlice => vec![
            name(),
            c("AddressType", "string", d("discovery.EndpointSlice.addressType")),
            c("Ports", "string", d("discovery.EndpointSlice.ports")),
            c("Endpoints", "string", d("discovery.EndpointSlice.endpoints")),
            age(),
        ],
        // Upstream describes Handler with ObjectMeta's (absent) "handler" doc: empty.
        RuntimeClass => vec![name(), c("Handler", "string", ""), age()],
        WebhookConfiguration => vec![
            name(),
            c("Webhooks", "integer", "Webhooks indicates the number of webhooks registered in this configuration"),
            age(),
        ],
        Default => vec![
            name(),
            c("Created At", "date", d("meta.ObjectMeta.creationTimestamp")),
        ],
    };
    cols.into_iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.ty,
                "format": c.format,
                "description": c.description,
                "priority": c.priority,
            })
        })
        .collect()
}
