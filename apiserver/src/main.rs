use apiserver::{Args, Config};
use clap::Parser;

// See `apiserver::allocator`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tokio::spawn(apiserver::allocator::return_freed_memory());
    let args = Args::parse();
    component_base::logging::init("info");
    let config = Config::try_from(args)?;
    let shutdown = component_base::signals::shutdown_token();
    apiserver::run(config, shutdown).await
}
