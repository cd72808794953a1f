//! [`Runtime`] over gRPC to a CRI endpoint (`unix:///run/containerd/containerd.sock`).
//!
//! One HTTP/2 channel carries every call; tonic multiplexes them, so concurrent pod workers do
//! not queue behind each other. Calls carry a deadline so a wedged runtime surfaces as an error
//! instead of a stuck pod worker.

use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use hyper_util::rt::TokioIo;
use proto::v1::image_service_client::ImageServiceClient;
use proto::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

use super::{v1, CriError, CriResult, Runtime};

/// Deadline for ordinary calls; pulls, sandbox runs and stops get their own.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone)]
pub struct RemoteRuntime {
    rt: RuntimeServiceClient<Channel>,
    img: ImageServiceClient<Channel>,
}

impl RemoteRuntime {
    /// Connect to `endpoint` (`unix:///path` or a bare socket path). The connection is lazy and
    /// re-established by tonic when the runtime restarts.
    pub async fn connect(endpoint: &str) -> CriResult<Self> {
        let path = PathBuf::from(endpoint.strip_prefix("unix://").unwrap_or(endpoint));
        let connect_err = |message: String| CriError::Connect {
            endpoint: endpoint.to_string(),
            message,
        };
        let channel = Endpoint::try_from("http://[::]:50051")
            .map_err(|e| connect_err(e.to_string()))?
            .timeout(CALL_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }));
        let r = RemoteRuntime {
            rt: RuntimeServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20),
            img: ImageServiceClient::new(channel).max_decoding_message_size(64 << 20),
        };
        r.version().await.map_err(|e| connect_err(e.to_string()))?;
        Ok(r)
    }
}

fn req<T>(msg: T, timeout: Option<Duration>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = timeout {
        r.set_timeout(t);
    }
    r
}

impl Runtime for RemoteRuntime {
    fn version(&self) -> BoxFuture<'_, CriResult<v1::VersionResponse>> {
        let mut c = self.rt.clone();
        async move {
            Ok(c.version(req(
                v1::VersionRequest {
                    version: "v1".into(),
                },
                Some(Duration::from_secs(5)),
            ))
            .await?
            .into_inner())
        }
        .boxed()
    }

    fn status(&self) -> BoxFuture<'_, CriResult<v1::StatusResponse>> {
        let mut c = self.rt.clone();
        async move {
            Ok(c.status(req(v1::StatusRequest { verbose: false }, None))
                .await?
                .into_inner())
        }
        .boxed()
    }

    fn run_pod_sandbox(
        &self,
        config: v1::PodSandboxConfig,
        runtime_handler: String,
    ) -> BoxFuture<'_, CriResult<String>> {
        let mut c = self.rt.clone();
        async move {
            Ok(c.run_pod_sandbox(req(
                v1::RunPodSandboxRequest {
                    config: Some(config),
                    runtime_handler,
                },
                Some(Duration::from_secs(240)),
            ))
            .await?
            .into_inner()
            .pod_sandbox_id)
        }
        .boxed()
    }

    fn stop_pod_sandbox(&self, id: String) -> BoxFuture<'_, CriResult<()>> {
        let mut c = self.rt.clone();
        async move {
            c.stop_pod_sandbox(req(
                v1::StopPodSandboxRequest { pod_sandbox_id: id },
                Some(Duration::from_secs(240)),
            ))
            .await?;
            Ok(())
        }
        .boxed()
    }

    fn remove_pod_sandbox(&self, id: String) -> BoxFuture<'_, CriResult<()>> {
        let mut c = self.rt.clone();
        async move {
            c.remove_pod_sandbox(req(
                v1::RemovePodSandboxRequest { pod_sandbox_id: id },
                None,
            ))
            .await?;
            Ok(())
        }
        .boxed()
    }

    fn pod_sandbox_status(&self, id: String) -> BoxFuture<'_, CriResult<v1::PodSandboxStatus>> {
        let mut c = self.rt.clone();
        async move {
            c.pod_sandbox_status(req(
                v1::PodSandboxStatusRequest {
                    pod_sandbox_id: id.clone(),
                    verbose: false,
                },
                None,
            ))
            .await?
            .into_inner()
            .status
            .ok_or_else(|| CriError::Other(format!("runtime returned no status for sandbox {id}")))
        }
        .boxed()
    }

    fn list_pod_sandbox(
        &self,
        filter: Option<v1::PodSandboxFilter>,
    ) -> BoxFuture<'_, CriResult<Vec<v1::PodSandbox>>> {
        let mut c = self.rt.clone();
        async move {
            Ok(
                c.list_pod_sandbox(req(v1::ListPodSandboxRequest { filter }, None))
                    .await?
                    .into_inner()
                    .items,
            )
        }
        .boxed()
    }

    fn create_container(
        &self,
        sandbox_id: String,
        config: v1::ContainerConfig,
        sandbox_config: v1::PodSandboxConfig,
    ) -> BoxFuture<'_, CriResult<String>> {
        let mut c = self.rt.clone();
        async move {
            Ok(c.create_container(req(
                v1::CreateContainerRequest {
                    pod_sandbox_id: sandbox_id,
                    config: Some(config),
                    sandbox_config: Some(sandbox_config),
                },
                None,
            ))
            .await?
            .into_inner()
            .container_id)
        }
        .boxed()
    }

    fn start_container(&self, id: String) -> BoxFuture<'_, CriResult<()>> {
        let mut c = self.rt.clone();
        async move {
            c.start_container(req(v1::StartContainerRequest { container_id: id }, None))
                .await?;
            Ok(())
        }
        .boxed()
    }

    fn stop_container(&self, id: String, timeout: i64) -> BoxFuture<'_, CriResult<()>> {
        let mut c = self.rt.clone();
        // The runtime waits up to `timeout` before SIGKILL; give the call that long and more.
        let deadline = Duration::from_secs(timeout.max(0) as u64 + 60);
        async move {
            c.stop_container(req(
                v1::StopContainerRequest {
                    container_id: id,
                    timeout,
                },
                Some(deadline),
            ))
            .await?;
            Ok(())
        }
        .boxed()
    }

    fn remove_container(&self, id: String) -> BoxFuture<'_, CriResult<()>> {
        let mut c = self.rt.clone();
        async move {
            c.remove_container(req(v1::RemoveContainerRequest { container_id: id }, None))
                .await?;
            Ok(())
        }
        .boxed()
    }

    fn list_containers(
        &self,
        filter: Option<v1::ContainerFilter>,
    ) -> BoxFuture<'_, CriResult<Vec<v1::Container>>> {
        let mut c = self.rt.clone();
        async move {
            Ok(
                c.list_containers(req(v1::ListContainersRequest { filter }, None))
                    .await?
                    .into_inner()
                    .containers,
            )
        }
        .boxed()
    }

    fn container_status(&self, id: String) -> BoxFuture<'_, CriResult<v1::ContainerStatus>> {
        let mut c = self.rt.clone();
        async move {
            c.container_status(req(
                v1::ContainerStatusRequest {
                    container_id: id.clone(),
                    verbose: false,
                },
                None,
            ))
            .await?
            .into_inner()
            .status
            .ok_or_else(|| {
                CriError::Other(format!("runtime returned no status for container {id}"))
            })
        }
        .boxed()
    }

    fn exec_sync(
        &self,
        id: String,
        cmd: Vec<String>,
        timeout: i64,
    ) -> BoxFuture<'_, CriResult<v1::ExecSyncResponse>> {
        let mut c = self.rt.clone();
        let deadline = (timeout > 0).then(|| Duration::from_secs(timeout as u64 + 10));
        async move {
            Ok(c.exec_sync(req(
                v1::ExecSyncRequest {
                    container_id: id,
                    cmd,
                    timeout,
                },
                deadline,
            ))
            .await?
            .into_inner())
        }
        .boxed()
    }

    fn exec(&self, r: v1::ExecRequest) -> BoxFuture<'_, CriResult<String>> {
        let mut c = self.rt.clone();
        async move { Ok(c.exec(req(r, None)).await?.into_inner().url) }.boxed()
    }

    fn attach(&self, r: v1::AttachRequest) -> BoxFuture<'_, CriResult<String>> {
        let mut c = self.rt.clone();
        async move { Ok(c.attach(req(r, None)).await?.into_inner().url) }.boxed()
    }

    fn port_forward(
        &self,
        sandbox_id: String,
        ports: Vec<i32>,
    ) -> BoxFuture<'_, CriResult<String>> {
        let mut c = self.rt.clone();
        async move {
            Ok(c.port_forward(req(
                v1::PortForwardRequest {
                    pod_sandbox_id: sandbox_id,
                    port: ports,
                },
                None,
            ))
            .await?
            .into_inner()
            .url)
        }
        .boxed()
    }

    fn list_container_stats(&self) -> BoxFuture<'_, CriResult<Vec<v1::ContainerStats>>> {
        let mut c = self.rt.clone();
        async move {
            Ok(
                c.list_container_stats(req(v1::ListContainerStatsRequest { filter: None }, None))
                    .await?
                    .into_inner()
                    .stats,
            )
        }
        .boxed()
    }

    fn image_status(&self, image: String) -> BoxFuture<'_, CriResult<Option<v1::Image>>> {
        let mut c = self.img.clone();
        async move {
            Ok(c.image_status(req(
                v1::ImageStatusRequest {
                    image: Some(v1::ImageSpec {
                        image,
                        ..Default::default()
                    }),
                    verbose: false,
                },
                None,
            ))
            .await?
            .into_inner()
            .image)
        }
        .boxed()
    }

    fn pull_image(
        &self,
        image: String,
        auth: Option<v1::AuthConfig>,
        sandbox_config: Option<v1::PodSandboxConfig>,
    ) -> BoxFuture<'_, CriResult<String>> {
        let mut c = self.img.clone();
        async move {
            Ok(c.pull_image(req(
                v1::PullImageRequest {
                    image: Some(v1::ImageSpec {
                        image,
                        ..Default::default()
                    }),
                    auth,
                    sandbox_config,
                },
                Some(Duration::from_secs(600)),
            ))
            .await?
            .into_inner()
            .image_ref)
        }
        .boxed()
    }

    fn list_images(&self) -> BoxFuture<'_, CriResult<Vec<v1::Image>>> {
        let mut c = self.img.clone();
        async move {
            Ok(
                c.list_images(req(v1::ListImagesRequest { filter: None }, None))
                    .await?
                    .into_inner()
                    .images,
            )
        }
        .boxed()
    }

    fn remove_image(&self, image: String) -> BoxFuture<'_, CriResult<()>> {
        let mut c = self.img.clone();
        async move {
            c.remove_image(req(
                v1::RemoveImageRequest {
                    image: Some(v1::ImageSpec {
                        image,
                        ..Default::default()
                    }),
                },
                None,
            ))
            .await?;
            Ok(())
        }
        .boxed()
    }

    fn image_fs_info(&self) -> BoxFuture<'_, CriResult<v1::ImageFsInfoResponse>> {
        let mut c = self.img.clone();
        async move {
            Ok(c.image_fs_info(req(v1::ImageFsInfoRequest {}, None))
                .await?
                .into_inner())
        }
        .boxed()
    }
}
