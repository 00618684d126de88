//! Waiting for a condition with a deadline, the only acceptable way for a test to wait for
//! something that happens in another task or process.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often a condition is re-checked. Short, because it bounds how late a test notices that
/// the condition holds; cheap, because conditions are local queries.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Re-checks `condition` until it returns `true` or `timeout` elapses.
///
/// The condition is checked once more at the deadline, so a slow machine that only gets there
/// late still passes.
pub async fn wait_until<F, Fut>(timeout: Duration, mut condition: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(timeout, || {
        let check = condition();
        async move { check.await.then_some(()) }
    })
    .await
}

/// Re-checks `probe` until it returns `Some(value)` or `timeout` elapses, and returns the value.
pub async fn wait_for<T, F, Fut>(timeout: Duration, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        let now = Instant::now();
        if now >= deadline {
            anyhow::bail!("condition not met within {timeout:?}");
        }
        tokio::time::sleep_until((now + POLL_INTERVAL).min(deadline)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn returns_once_the_condition_holds() -> anyhow::Result<()> {
        let calls = Arc::new(AtomicUsize::new(0));
        wait_until(Duration::from_secs(5), || {
            let calls = calls.clone();
            async move { calls.fetch_add(1, Ordering::SeqCst) >= 2 }
        })
        .await?;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        Ok(())
    }

    #[tokio::test]
    async fn times_out_with_a_message() {
        let started = Instant::now();
        let err = wait_until(Duration::from_millis(100), || async { false })
            .await
            .err()
            .map(|err| err.to_string());
        assert_eq!(err.as_deref(), Some("condition not met within 100ms"));
        assert!(started.elapsed() >= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn wait_for_returns_the_value() -> anyhow::Result<()> {
        let calls = Arc::new(AtomicUsize::new(0));
        let value = wait_for(Duration::from_secs(5), || {
            let calls = calls.clone();
            async move {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                (n == 1).then_some(n * 10)
            }
        })
        .await?;
        assert_eq!(value, 10);
        Ok(())
    }
}
