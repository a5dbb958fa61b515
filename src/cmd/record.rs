//! `scuzz record`: the recording iSCSI proxy (recorder::proxy).

use anyhow::Context;
use recorder::proxy::session::PayloadCapture;
use std::path::PathBuf;
use std::process::ExitCode;
use trace::file::{Compression, TraceHeader, TraceWriter};

/// Arguments of `scuzz record`.
#[derive(clap::Args)]
pub struct Args {
    /// Address initiators connect to.
    #[arg(long, default_value = "127.0.0.1:3261")]
    listen: String,
    /// The real target, HOST:PORT.
    #[arg(long)]
    target: String,
    /// What to keep of each command's data: full, digest or none.
    #[arg(long, default_value = "full")]
    payload: String,
    /// Output trace.
    #[arg(short = 'o', long)]
    output: PathBuf,
}

/// Runs `scuzz record` until Ctrl-C (SIGINT) or SIGTERM.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let capture: PayloadCapture = args
        .payload
        .parse()
        .map_err(anyhow::Error::msg)
        .context("--payload")?;
    let mut h = TraceHeader::new(concat!(
        "scuzz-recorder ",
        env!("CARGO_PKG_VERSION"),
        " (iscsi proxy)"
    ));
    h.payload_mode = capture.mode();
    h.labels.insert("target".into(), args.target.clone());
    let writer = TraceWriter::create(&args.output, &h, Compression::ZSTD_DEFAULT)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (w, s) = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        eprintln!(
            "scuzz record: listening on {}, forwarding to {}, writing {}",
            listener.local_addr()?,
            args.target,
            args.output.display()
        );
        let shutdown = async {
            #[cfg(unix)]
            {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
                }
            }
            #[cfg(not(unix))]
            {
                let _ = tokio::signal::ctrl_c().await;
            }
        };
        recorder::proxy::run(listener, args.target.clone(), capture, writer, shutdown)
            .await
            .map_err(anyhow::Error::from)
    })?;
    drop(w);
    eprintln!(
        "scuzz record: {} connections, {} commands, {} events in {}",
        s.connections,
        s.commands,
        s.events,
        args.output.display()
    );
    Ok(ExitCode::SUCCESS)
}
