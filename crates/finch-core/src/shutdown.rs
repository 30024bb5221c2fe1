//! The signal that starts a graceful shutdown.

use std::future::Future;

/// Resolves on SIGTERM (what Kubernetes and Docker send) or Ctrl-C.
///
/// The handlers are installed when this is called, not when the future is
/// first awaited: a signal that arrives while the process is still starting
/// up is then a shutdown request rather than the default action, which kills
/// the process (or, for PID 1 in a container, is ignored altogether).
pub fn signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let interrupt = signal(SignalKind::interrupt()).ok();
        let terminate = signal(SignalKind::terminate()).ok();
        async move {
            tokio::select! {
                () = received(interrupt) => tracing::info!("Ctrl-C received, shutting down"),
                () = received(terminate) => tracing::info!("SIGTERM received, shutting down"),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        tracing::info!("Ctrl-C received, shutting down");
    }
}

/// Waits for one delivery; a signal whose handler could not be installed never arrives.
#[cfg(unix)]
async fn received(stream: Option<tokio::signal::unix::Signal>) {
    match stream {
        Some(mut stream) => {
            stream.recv().await;
        }
        None => std::future::pending().await,
    }
}
