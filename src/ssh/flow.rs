//! Flow control for relayed channels.
//!
//! Each channel relayed by the gateway takes control of its SSH receive
//! window (a patch to russh, see `vendor/russh/PATCHES.md`): the sender on
//! that channel gets window back only for data the gateway has passed on to
//! the other side. A reader that stalls therefore holds back its own
//! channel's sender, as it would end to end through OpenSSH, while the
//! connection's other channels and its window adjustments keep flowing.
//!
//! Each read half is still drained by a small task, so that russh's session
//! loop never waits on us: the queue holds at most one window of data from
//! a peer that honours the window. A peer that sends past its window is
//! stopped by a byte bound (`QUEUE_BYTES`) instead, which stalls that
//! peer's connection and nothing else.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use russh::{ChannelId, ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

/// Most bytes queued per direction of one channel, for a peer that ignores
/// its window (a compliant one never has more than a window in flight).
const QUEUE_BYTES: usize = 64 * 1024 * 1024;

/// A session's message type (russh's client or server `Msg`).
pub trait SessionMsg: From<(ChannelId, ChannelMsg)> + Send + Sync + 'static {}
impl<T: From<(ChannelId, ChannelMsg)> + Send + Sync + 'static> SessionMsg for T {}

/// A message read from a channel, holding its share of the byte budget
/// until it has been written on.
struct Queued {
    message: ChannelMsg,
    budget: Option<OwnedSemaphorePermit>,
}

/// What was read from one channel, in order, with the way to give that
/// channel's sender more window once data has been passed on.
pub struct Inbox<S: SessionMsg> {
    queue: mpsc::UnboundedReceiver<Queued>,
    source: Arc<ChannelWriteHalf<S>>,
}

impl<S: SessionMsg> Inbox<S> {
    /// The next message, with the budget it holds until it is written on.
    pub async fn next(&mut self) -> Option<(ChannelMsg, Option<OwnedSemaphorePermit>)> {
        self.queue.recv().await.map(|q| (q.message, q.budget))
    }

    /// `data` was passed on: its sender may send as much again.
    pub async fn passed_on(&self, data: &Bytes) {
        let bytes = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let _ = self.source.consumed(bytes).await;
    }
}

/// How long a message of the gateway's own (a warning, a notice) may wait
/// for the receiver's window before it is dropped.
const NOTICE_WRITE: Duration = Duration::from_secs(1);

/// A relayed write, which waits for the receiver's window, given up when
/// `stop` comes first: a peer that closed its channel or left never grants
/// window again, and the write would wait for ever.
pub async fn unless_stopped(
    stop: &CancellationToken,
    write: impl Future<Output = Result<(), russh::Error>>,
) -> Result<(), russh::Error> {
    // The write first: one that goes through at once (the usual case)
    // never registers a waiter on `stop`.
    tokio::select! {
        biased;
        written = write => written,
        () = stop.cancelled() => Err(russh::Error::SendError),
    }
}

/// A message of the gateway's own: written if the receiver takes it soon,
/// dropped otherwise.
pub async fn notice(
    write: impl Future<Output = Result<(), russh::Error>>,
) -> Result<(), russh::Error> {
    tokio::time::timeout(NOTICE_WRITE, write)
        .await
        .unwrap_or(Err(russh::Error::SendError))
}

/// Runs both directions of a relayed channel; the first to end cancels
/// `stop`, on which each direction selects. Once either peer closed the
/// channel nothing can reach it any more, and waiting for the other to
/// answer the close would hold the channel (and its slot on the
/// connection) for as long as that peer takes, for ever if it never does.
pub async fn both_directions<A: Future, B: Future>(
    one: A,
    other: B,
    stop: &CancellationToken,
) -> (A::Output, B::Output) {
    tokio::join!(
        async {
            let ended = one.await;
            stop.cancel();
            ended
        },
        async {
            let ended = other.await;
            stop.cancel();
            ended
        },
    )
}

/// Takes control of the channel's receive window and drains its read half
/// (`from`; `source` is the same channel's write half) into an [`Inbox`].
pub fn drain<S: SessionMsg>(
    mut from: ChannelReadHalf,
    source: Arc<ChannelWriteHalf<S>>,
) -> Inbox<S> {
    let (sender, queue) = mpsc::unbounded_channel();
    let budget = Arc::new(Semaphore::new(QUEUE_BYTES));
    let control = source.clone();
    tokio::spawn(async move {
        if control.control_window().await.is_err() {
            return;
        }
        loop {
            // Ends with the relay too: russh keeps a channel we closed
            // first open on its side, so `wait` alone might never return.
            let message = tokio::select! {
                message = from.wait() => message,
                () = sender.closed() => break,
            };
            let Some(message) = message else {
                break;
            };
            let size = match &message {
                ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } => {
                    data.len().clamp(1, QUEUE_BYTES)
                }
                _ => 0,
            };
            let permit = match size {
                0 => None,
                n => match budget.clone().acquire_many_owned(n as u32).await {
                    Ok(permit) => Some(permit),
                    Err(_) => break,
                },
            };
            let last = matches!(message, ChannelMsg::Close);
            if sender
                .send(Queued {
                    message,
                    budget: permit,
                })
                .is_err()
                || last
            {
                break;
            }
        }
    });
    Inbox { queue, source }
}
