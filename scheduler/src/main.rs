use clap::Parser;
use scheduler::{Args, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    component_base::logging::init("info");
    let config = Config::try_from(args)?;
    let shutdown = component_base::signals::shutdown_token();
    scheduler::run(config, shutdown).await?;
    Ok(())
}
