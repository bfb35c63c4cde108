//! The `pixbatch` binary: parse the command line, set up logging, hand over to the library.

use std::process::ExitCode;

use clap::Parser;
use pixbatch::{
    api,
    app::{App, Role},
    cli,
    config::{Cli, Command, ServerConfig},
    telemetry,
};

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        None => serve(cli.serve, Role::Serve).await,
        Some(Command::Serve(cfg)) => serve(cfg, Role::Serve).await,
        Some(Command::Api(cfg)) => serve(cfg, Role::Api).await,
        Some(Command::Worker(cfg)) => serve(cfg, Role::Worker).await,
        Some(Command::Migrate(cfg)) => {
            telemetry::init(cfg.log_format);
            let settings = cfg.validate()?;
            pixbatch::app::open_storage(&settings).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Some(Command::Openapi) => {
            println!("{}", api::openapi_document()?);
            Ok(())
        }
        Some(Command::Convert(args)) => cli::convert::run(args),
        // The one command whose exit code carries more than success or error.
        Some(Command::Submit(args)) => return cli::submit::run(args).await,
    }
    .map(|()| ExitCode::SUCCESS)
}

async fn serve(cfg: ServerConfig, role: Role) -> anyhow::Result<()> {
    telemetry::init(cfg.log_format);
    let app = App::build(cfg.validate()?, role).await?;
    app.run_until_stopped().await
}
