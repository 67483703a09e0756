//! Timeouts without a timer operation per request: one timer per connection, re-armed only
//! when it fires before the deadline asked for now, and moved only to an earlier one. A
//! connection's deadlines (head reads, upstream attempts) mostly move forward, so under load the
//! timer fires or moves about once per timeout period, not once per request.

use std::future::Future;
use std::pin::Pin;

use tokio::time::{Instant, Sleep};

/// A reusable timeout for one connection.
#[derive(Debug)]
pub(super) struct Deadline {
    sleep: Pin<Box<Sleep>>,
}

/// The deadline passed before the future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Elapsed;

impl Deadline {
    /// A deadline not yet armed.
    pub(super) fn new() -> Self {
        Self {
            sleep: Box::pin(tokio::time::sleep_until(far_future())),
        }
    }

    /// Runs `future` until `until`. The future is pinned by the caller, so this one holds
    /// only a pointer to it (an `async fn` keeps its arguments twice).
    pub(super) async fn run<F: Future + ?Sized>(
        &mut self,
        until: Instant,
        mut future: Pin<&mut F>,
    ) -> Result<F::Output, Elapsed> {
        if self.sleep.deadline() > until {
            self.sleep.as_mut().reset(until);
        }
        loop {
            tokio::select! {
                biased;
                output = future.as_mut() => return Ok(output),
                () = self.sleep.as_mut() => {
                    if Instant::now() >= until {
                        return Err(Elapsed);
                    }
                    // Armed for an earlier request's deadline: move it to this one.
                    self.sleep.as_mut().reset(until);
                }
            }
        }
    }
}

fn far_future() -> Instant {
    Instant::now() + std::time::Duration::from_secs(86_400 * 365)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn fires_at_each_deadline_and_not_before() {
        let mut deadline = Deadline::new();
        let start = Instant::now();
        let quick = deadline
            .run(start + Duration::from_secs(5), std::pin::pin!(async { 7 }))
            .await;
        assert_eq!(quick, Ok(7));
        // A later deadline: the timer armed for 5 s must not cut this one short.
        tokio::time::advance(Duration::from_secs(3)).await;
        let until = Instant::now() + Duration::from_secs(5);
        let slow = deadline
            .run(until, std::pin::pin!(std::future::pending::<()>()))
            .await;
        assert_eq!(slow, Err(Elapsed));
        assert_eq!(Instant::now(), until);
        // An earlier deadline than the armed one is honoured too.
        let until = Instant::now() + Duration::from_secs(1);
        deadline
            .sleep
            .as_mut()
            .reset(Instant::now() + Duration::from_secs(60));
        let slow = deadline
            .run(until, std::pin::pin!(std::future::pending::<()>()))
            .await;
        assert_eq!((slow, Instant::now()), (Err(Elapsed), until));
    }
}
