//! The public port: health, readiness, status, metrics, and the engine's API forwarded
//! unbuffered.
//!
//! OWNER: http helper. CONTRACT: `serve_public` is called by `supervise`.

use crate::shared::Shared;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct PublicConfig {
    pub api_key: Option<String>,
    pub max_connections: usize,
    /// How long a drain waits for in-flight requests.
    pub drain_grace: Duration,
}

/// Serves the public port on `listener` until `shared.stopping` is cancelled and the drain is
/// over. Returns when every connection is closed.
pub async fn serve_public(
    _listener: TcpListener,
    _shared: Arc<Shared>,
    _cfg: PublicConfig,
) -> std::io::Result<()> {
    Ok(())
}
