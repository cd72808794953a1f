use apiserver::{Args, Config};
use clap::Parser;

// See `apiserver::allocator`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    component_base::logging::init("info");
    let config = Config::try_from(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(apiserver::allocator::on_thread_park)
        .build()?;
    // Everything runs on the runtime's worker threads, which return their freed memory when
    // they park (`apiserver::allocator`); the main thread only waits.
    runtime.block_on(async move {
        tokio::spawn(apiserver::allocator::return_freed_memory());
        let shutdown = component_base::signals::shutdown_token();
        tokio::spawn(apiserver::run(config, shutdown)).await?
    })
}
