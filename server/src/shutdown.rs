//! The shutdown signal of the `ubroker` binary: SIGINT or SIGTERM.
//!
//! The server takes shutdown as a plain future (`serve(.., shutdown)`), so
//! tests pass their own; only the binary listens to signals.
//!
//! The handlers are installed by [`Signals::install`], which the binary calls
//! *before* it prints its `listening on` line: a SIGTERM sent the moment a
//! script sees that line must already find a handler, or the process would
//! die of the signal instead of exiting 0.

use std::io;

/// Installed SIGINT and SIGTERM handlers.
pub struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers. Needs a tokio runtime.
    pub fn install() -> io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                terminate: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Signals {})
        }
    }

    /// Completes on the first SIGINT or SIGTERM received since `install`.
    pub async fn recv(mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.terminate.recv() => {}
                _ = self.interrupt.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = &mut self;
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
