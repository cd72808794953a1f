//! ReplicaSet and ReplicationController controller (in progress).
use crate::framework::{BoxFuture, ControllerContext, Result};

pub fn start_replicaset(_ctx: &ControllerContext) -> Result<BoxFuture<'static, ()>> {
    Ok(Box::pin(async {}))
}

pub fn start_replicationcontroller(_ctx: &ControllerContext) -> Result<BoxFuture<'static, ()>> {
    Ok(Box::pin(async {}))
}
