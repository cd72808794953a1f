//! Deployment controller (in progress).
use crate::framework::{BoxFuture, ControllerContext, Result};

pub fn start(_ctx: &ControllerContext) -> Result<BoxFuture<'static, ()>> {
    Ok(Box::pin(async {}))
}
