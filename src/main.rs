//! The `pixbatch` binary: parse the command line, set up logging, hand over to the library.

#![deny(unsafe_code)]

use std::{io::Write, process::ExitCode};

use pixbatch::{
    api,
    app::{App, Role},
    cli,
    config::{Cli, Command, ServerConfig},
    telemetry,
};

/// Exit status when the reader of our standard output went away: what a shell reports
/// for a process killed by SIGPIPE (128 + 13), as for `yes | head`.
const EXIT_BROKEN_PIPE: u8 = 141;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    match run(Cli::from_env()).await {
        // `pixbatch submit … | head`: Rust ignores SIGPIPE, so the write fails instead;
        // stop quietly, as a program that gets the signal would.
        Err(e) if is_broken_pipe(&e) => Ok(ExitCode::from(EXIT_BROKEN_PIPE)),
        other => other,
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        None => serve(cli.serve, Role::Serve).await,
        Some(Command::Serve(cfg)) => serve(cfg, Role::Serve).await,
        Some(Command::Api(cfg)) => serve(cfg, Role::Api).await,
        Some(Command::Worker(cfg)) => serve(cfg, Role::Worker).await,
        Some(Command::Migrate(cfg)) => {
            telemetry::init(cfg.log_format, &cfg.rust_log);
            let settings = cfg.validate()?;
            pixbatch::app::open_storage(&settings).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Some(Command::Openapi) => {
            writeln!(std::io::stdout(), "{}", api::openapi_document()?)?;
            Ok(())
        }
        Some(Command::Convert(args)) => cli::convert::run(args),
        // The one command whose exit code carries more than success or error.
        Some(Command::Submit(args)) => return cli::submit::run(args).await,
    }
    .map(|()| ExitCode::SUCCESS)
}

async fn serve(cfg: ServerConfig, role: Role) -> anyhow::Result<()> {
    telemetry::init(cfg.log_format, &cfg.rust_log);
    let app = App::build(cfg.validate()?, role).await?;
    app.run_until_stopped().await
}
