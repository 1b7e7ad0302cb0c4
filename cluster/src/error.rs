//! The errors of the cluster crate.

use std::io;

/// An error returned by a boxed user bootstrap.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What can go wrong while starting, running or steering a cluster.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The builder was given something it cannot use (no worker bootstrap, a bad address, ...).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The worker identity in the environment is malformed or does not belong to this process.
    ///
    /// A process started as a worker never falls back to being a master: that is how a
    /// misdirected re-exec (for example of a test harness) fails loudly instead of multiplying.
    #[error("this process was started as a cluster worker, but {0}")]
    WorkerEnv(String),
    /// Binding a listener failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address as given to the builder.
        addr: String,
        /// The operating system's error.
        source: io::Error,
    },
    /// Any other operating-system error.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// A messenger call failed.
    #[error(transparent)]
    Messenger(#[from] messenger::Error),
    /// A rolling reload stopped before every slot was replaced; the old workers keep serving.
    #[error("reload failed: {0}")]
    Reload(String),
    /// The number of workers cannot change now, or not to that (see
    /// [`Master::scale`](crate::Master::scale)).
    #[error("cannot scale: {0}")]
    Scale(String),
    /// The cluster was stopped at once (a second stop signal): its workers were killed.
    #[error("stopped at once: the workers were killed")]
    Killed,
    /// The master is stopping or gone, so the request cannot be carried out.
    #[error("the cluster is stopping")]
    Stopping,
    /// The listener asked for does not exist or is of another kind, or was already taken.
    #[error("listener {0}")]
    Listener(String),
    /// The user's master or worker bootstrap returned an error.
    #[error("bootstrap failed: {0}")]
    Bootstrap(BoxError),
}

/// Shows the message: `fn main() -> Result<(), Error>` prints an error with `Debug`, and the
/// person reading it wants the sentence, not the variant.
impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}
