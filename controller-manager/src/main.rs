use clap::Parser;
use controller_manager::{Args, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    component_base::logging::init("info");
    let config = Config::try_from(args)?;
    let shutdown = component_base::signals::shutdown_token();
    controller_manager::run(config, shutdown).await
}
