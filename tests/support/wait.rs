//! `wait_until`: poll a condition until it holds or a deadline passes, instead of sleeping a
//! fixed time and hoping.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often conditions are re-evaluated.
const POLL: Duration = Duration::from_millis(10);

/// Polls `condition` until it returns true (→ true) or `deadline` from now has passed
/// (→ false, after one last check).
pub async fn wait_until<F, Fut>(deadline: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The same for a synchronous condition, blocking the thread.
pub fn wait_until_blocking(deadline: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(POLL);
    }
}
