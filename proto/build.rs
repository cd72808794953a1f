//! Compiles `runtime/v1/api.proto` with protox (pure Rust, no `protoc`) and generates the tonic
//! client. Only the client is generated: the kubelet talks to containerd; tests that need a
//! runtime use a real containerd or the kubelet's recording fake.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=runtime/v1/api.proto");
    let fds = protox::compile(["runtime/v1/api.proto"], ["."])?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}
