use clap::Parser;
use proxy::{Args, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    component_base::logging::init("info");
    let config = Config::try_from(args)?;
    let shutdown = component_base::signals::shutdown_token();
    proxy::run(config, shutdown).await?;
    Ok(())
}
