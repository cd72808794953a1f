use clap::Parser;
use dns::{Args, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    component_base::logging::init("info");
    let config = Config::try_from(args)?;
    let shutdown = component_base::signals::shutdown_token();
    dns::run(config, shutdown).await?;
    Ok(())
}
