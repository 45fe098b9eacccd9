//! Accept loops for :80 and :443.
//!
//! INTERFACE STUB — owned by the :443 front-door work; replace the body.

use std::sync::Arc;

use tokio::sync::watch;

use super::{Listeners, ProxyContext};
use crate::table::TableHandle;

/// Serves both listeners until `shutdown` turns true, then stops accepting and returns once
/// open connections have finished (the caller bounds that wait with its grace period).
pub async fn serve(
    listeners: Listeners,
    table: TableHandle,
    ctx: Arc<ProxyContext>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let _ = (listeners, table, ctx);
    let _ = shutdown.wait_for(|stop| *stop).await;
    Ok(())
}
