//! `sluice`: see `sluice --help`.

use clap::Parser;
use sluice::cli::{Cli, Command};

/// mimalloc instead of glibc's allocator: the request path allocates many small short-lived
/// objects across worker threads, where glibc's arenas showed up as ~20 % of server CPU
/// (malloc, free, consolidation; docs/PERFORMANCE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = std::env::var("SLUICE_LOG_FORMAT").is_ok_and(|v| v == "json");
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sluice: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<()> = rt.block_on(async {
        match cli.command {
            Command::Serve(args) => {
                init_logging();
                let cfg = sluice::cli::serve_config(&args)?;
                let server = sluice::server::serve_until_signal(cfg).await?;
                server.wait().await
            }
            Command::Credentials(args) => {
                sluice::cli::credentials(&args, &mut std::io::stdout().lock())
            }
            Command::Audit(args) => sluice::cli::audit(&args, &mut std::io::stdout().lock()).await,
            Command::Dlq(cmd) => sluice::cli::dlq(&cmd, &mut std::io::stdout().lock()).await,
            Command::Pattern(cmd) => {
                let code = sluice::tools::pattern(&cmd, &mut std::io::stdout().lock());
                std::process::exit(code);
            }
            Command::Policy(sluice::tools::PolicyCommand::Explain(args)) => {
                match sluice::tools::explain(&args, &mut std::io::stdout().lock()).await {
                    Ok(code) => std::process::exit(code),
                    Err(e) => {
                        eprintln!("sluice: {e:#}");
                        std::process::exit(2);
                    }
                }
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
