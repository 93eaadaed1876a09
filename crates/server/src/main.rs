//! `klaxon`: the on-call management and incident response server.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use klaxon_server::app::{self, AppState};
use klaxon_server::clock::Clock;
use klaxon_server::config::{self, Config, ConfigArgs};
use klaxon_server::http::sessions;
use klaxon_server::{engine, notify, tls};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "klaxon",
    version,
    about = "On-call management and incident response server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (migrates the database first).
    Serve(ConfigArgs),
    /// Apply database migrations and exit.
    Migrate(ConfigArgs),
    /// Create an account with its owner (an admin) and print {"account_id","user_id","token"}.
    Bootstrap {
        #[command(flatten)]
        config: ConfigArgs,
        /// Account name
        #[arg(long)]
        account: String,
        /// Owner's name
        #[arg(long)]
        name: String,
        /// Owner's email (sign-in)
        #[arg(long)]
        email: String,
        /// Owner's password (optional: without one, sign in with the token)
        #[arg(long, env = "KLAXON_BOOTSTRAP_PASSWORD")]
        password: Option<String>,
    },
    /// Copy a SQLite database consistently while a server may be running
    /// (PostgreSQL: use pg_dump).
    Backup {
        #[command(flatten)]
        config: ConfigArgs,
        /// The file to write (replaced once the new copy is complete)
        #[arg(long)]
        to: PathBuf,
    },
    /// Replace a SQLite database with a backup; the server must be stopped
    /// (PostgreSQL: use pg_restore).
    Restore {
        #[command(flatten)]
        config: ConfigArgs,
        /// The backup to restore
        #[arg(long)]
        from: PathBuf,
    },
    /// Print a configuration file with the defaults.
    PrintDefaultConfig,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Serve(args) => {
            let config = args.load()?;
            init_logging(&config);
            runtime.block_on(serve(config))
        }
        Command::Migrate(args) => {
            let config = args.load()?;
            init_logging(&config);
            runtime.block_on(async {
                let store = open_store(&config).await?;
                store.close().await;
                println!("migrations applied");
                Ok(())
            })
        }
        Command::Bootstrap {
            config,
            account,
            name,
            email,
            password,
        } => {
            let config = config.load()?;
            init_logging(&config);
            runtime.block_on(async {
                let store = open_store(&config).await?;
                let clock = Clock::new(config.clock_speed, config.clock_origin_ms);
                let input = sessions::Registration {
                    account_name: Some(account),
                    name: Some(name),
                    email: Some(email),
                    password,
                    invitation: None,
                };
                let hasher = klaxon_server::password::Hasher::new(1, 1);
                let created = sessions::register(&*store, &hasher, clock.now_ms(), input).await;
                store.close().await;
                match created {
                    Ok(body) => {
                        println!("{body}");
                        Ok(())
                    }
                    Err(err) => anyhow::bail!("bootstrap failed: {}", describe(err)),
                }
            })
        }
        Command::Backup { config, to } => {
            let config = config.load()?;
            init_logging(&config);
            sqlite_only(
                &config,
                "backup",
                "pg_dump -Fc -f klaxon.dump \"$KLAXON_DATABASE_URL\"   (a consistent snapshot; servers keep running)",
            )?;
            let copied = klaxon_store::sqlite::backup(&config.database_url, &to)
                .map_err(|err| anyhow::anyhow!("backup failed: {err}"))?;
            println!(
                "backed up {} to {} ({} bytes, {} incidents)",
                config::redact(&config.database_url),
                copied.path.display(),
                copied.bytes,
                copied.incidents
            );
            Ok(())
        }
        Command::Restore { config, from } => {
            let config = config.load()?;
            init_logging(&config);
            sqlite_only(
                &config,
                "restore",
                "pg_restore --clean --if-exists --no-owner -d \"$KLAXON_DATABASE_URL\" klaxon.dump   (servers stopped)",
            )?;
            let copied = klaxon_store::sqlite::restore(&config.database_url, &from)
                .map_err(|err| anyhow::anyhow!("restore failed: {err}"))?;
            println!(
                "restored {} from {} ({} bytes, {} incidents); start the server to apply any newer migrations",
                copied.path.display(),
                from.display(),
                copied.bytes,
                copied.incidents
            );
            Ok(())
        }
        Command::PrintDefaultConfig => {
            print!("{}", config::default_toml());
            Ok(())
        }
    }
}

fn describe(err: klaxon_server::http::error::ApiError) -> String {
    use klaxon_server::http::error::ApiError;
    match err {
        ApiError::Unprocessable(errors) => errors
            .iter()
            .map(|(field, msgs)| format!("{field} {}", msgs.join(", ")))
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}

/// Backup and restore are SQLite's; PostgreSQL has its own tools.
fn sqlite_only(config: &Config, command: &str, instead: &str) -> anyhow::Result<()> {
    if config.database_url.starts_with("sqlite:") {
        return Ok(());
    }
    anyhow::bail!(
        "klaxon {command} copies SQLite databases; for PostgreSQL use its own tools, e.g.\n  {instead}"
    )
}

async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn klaxon_store::Store>> {
    let store = klaxon_store::connect(&config.database_url)
        .await
        .with_context(|| format!("opening database {}", config::redact(&config.database_url)))?;
    store.migrate().await.context("applying migrations")?;
    Ok(store)
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // Held until the process exits: one server per SQLite file.
    let _serving = klaxon_store::lock_for_serving(&config.database_url)
        .map_err(|err| anyhow::anyhow!("{err}"))?;
    let store = open_store(&config).await?;
    let fresh = !store.has_accounts().await?;
    // Read before binding: a bad certificate stops the start at once.
    let certificates = match &config.tls {
        Some(files) => Some(tls::Certificates::load(files)?),
        None => None,
    };
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    // Taken over before anyone is told where to connect, so that a SIGHUP
    // from then on reloads rather than ends the process.
    #[cfg(unix)]
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("listening for SIGHUP")?;
    let scheme = if certificates.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(%addr, %scheme, backend = store.backend(), database = %config::redact(&config.database_url), "klaxon listening");
    println!("Klaxon listening on {scheme}://{addr}");
    if fresh {
        println!(
            "No accounts yet. Create the first one with\n  \
             klaxon bootstrap --account NAME --name NAME --email EMAIL [--password P]\n\
             or POST /registrations {{\"account_name\",\"name\",\"email\",\"password\"}}"
        );
    }
    let clock = Clock::new(config.clock_speed, config.clock_origin_ms);
    let (stop_engine, engine_stop) = tokio::sync::watch::channel(false);
    let state = AppState::load(store.clone(), clock.clone(), Arc::new(config)).await?;
    let metrics = state.metrics.clone();
    let engine = tokio::spawn(engine::run_observed(
        store.clone(),
        clock.clone(),
        engine_stop.clone(),
        move |fired, _| metrics.timers_fired(fired),
    ));
    let notifier = Arc::new(notify::providers(
        &state.config,
        state.links.clone(),
        state.webhook_keys.clone(),
    )?);
    let sender = tokio::spawn(notify::run(
        store.clone(),
        clock.clone(),
        notifier,
        state.metrics.clone(),
        engine_stop,
    ));
    #[cfg(unix)]
    tokio::spawn(reload_on_sighup(hangups, certificates.clone()));
    // Stop the engine and the sender first so that no timer starts firing
    // and no message starts sending while the store closes; an in-flight
    // batch finishes its transaction, a send in flight records its outcome.
    let shutdown = async move {
        shutdown_signal().await;
        let _ = stop_engine.send(true);
        let _ = engine.await;
        let _ = sender.await;
    };
    match certificates {
        Some(certificates) => {
            let listener = tls::TlsListener::new(listener, certificates)?;
            app::serve(listener, state, shutdown).await?;
        }
        None => app::serve(listener, state, shutdown).await?,
    }
    tracing::info!("klaxon stopped");
    Ok(())
}

/// SIGHUP reads the TLS certificate and key again (a renewal); new
/// connections get the new pair. Without TLS there is nothing to reload,
/// and SIGHUP no longer ends the server either.
#[cfg(unix)]
async fn reload_on_sighup(
    mut hangups: tokio::signal::unix::Signal,
    certificates: Option<Arc<tls::Certificates>>,
) {
    while hangups.recv().await.is_some() {
        match &certificates {
            Some(certificates) => match certificates.reload() {
                Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                Err(err) => tracing::error!(
                    error = format!("{err:#}"),
                    "SIGHUP: cannot reload the TLS certificate; still serving the previous one"
                ),
            },
            None => tracing::info!("SIGHUP: nothing to reload (no TLS)"),
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

fn init_logging(config: &Config) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.json_logs {
        builder.json().init();
    } else {
        builder.init();
    }
}
