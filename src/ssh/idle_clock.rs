//! How long a data-plane connection has been idle, for `ssh.idle_timeout`
//! and `sessions`: time since the last channel data either way, held at
//! zero while a command the client ran without a pty is still running.
//!
//! A command without a pty is work the user left to run (a backup, a
//! migration, `scp`, `rsync --server`): closing it because it printed
//! nothing for a while would break it half way, as a Postgres statement
//! still running is not idle either. A shell, or a command on a pty, is a
//! person at a terminal; their silence is what the timeout is for.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

pub struct IdleClock {
    started: Instant,
    /// Milliseconds after `started` of the last activity.
    last_activity: AtomicU64,
    /// Commands without a pty that have not exited yet.
    running: AtomicUsize,
}

impl IdleClock {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            started: Instant::now(),
            last_activity: AtomicU64::new(0),
            running: AtomicUsize::new(0),
        })
    }

    /// Channel data passed: the connection is not idle.
    pub fn touch(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_activity.store(now, Ordering::Relaxed);
    }

    /// The connection is busy until the returned guard is dropped (the
    /// command exited, or its channel ended); idle time counts from then.
    pub fn command_running(self: &Arc<Self>) -> RunningCommand {
        self.running.fetch_add(1, Ordering::Relaxed);
        RunningCommand(self.clone())
    }

    pub fn idle_for(&self) -> Duration {
        if self.running.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_activity.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    /// Returns once the connection has been idle for `timeout`.
    pub async fn idle(&self, timeout: Duration) {
        loop {
            let left = timeout.saturating_sub(self.idle_for());
            if left.is_zero() {
                return;
            }
            tokio::time::sleep(left).await;
        }
    }
}

/// A command without a pty still running; see [`IdleClock::command_running`].
pub struct RunningCommand(Arc<IdleClock>);

impl Drop for RunningCommand {
    fn drop(&mut self) {
        // Touch first: idle time never reads as counting from before the
        // command ran.
        self.0.touch();
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::IdleClock;

    const TIMEOUT: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn idle_time_counts_from_the_last_data() {
        let clock = IdleClock::new();
        tokio::time::advance(Duration::from_secs(40)).await;
        assert_eq!(clock.idle_for(), Duration::from_secs(40));
        clock.touch();
        assert_eq!(clock.idle_for(), Duration::ZERO);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(clock.idle_for(), Duration::from_secs(59));
    }

    #[tokio::test(start_paused = true)]
    async fn a_running_command_keeps_the_connection_busy_until_it_exits() {
        let clock = IdleClock::new();
        let command = clock.command_running();
        let idle = tokio::spawn({
            let clock = clock.clone();
            async move { clock.idle(TIMEOUT).await }
        });
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(clock.idle_for(), Duration::ZERO);
        assert!(!idle.is_finished(), "a running command counted as idle");

        drop(command);
        tokio::time::sleep(TIMEOUT - Duration::from_secs(1)).await;
        assert!(
            !idle.is_finished(),
            "idle time counted from before the exit"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(idle.is_finished());
    }

    #[tokio::test(start_paused = true)]
    async fn busy_while_any_of_several_commands_runs() {
        let clock = IdleClock::new();
        let first = clock.command_running();
        let second = clock.command_running();
        tokio::time::advance(TIMEOUT * 2).await;
        drop(first);
        tokio::time::advance(TIMEOUT * 2).await;
        assert_eq!(clock.idle_for(), Duration::ZERO);
        drop(second);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(clock.idle_for(), Duration::from_secs(5));
    }
}
