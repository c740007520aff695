//! The relay between a logged-in client and its upstream backend.
//!
//! Each direction reads whatever is available into one large buffer,
//! notes the message boundaries as the bytes pass (no re-encoding, no
//! per-message flush) and writes the whole buffer on. The server→client
//! direction is the only writer to the client, so gateway messages —
//! expiry warnings and the final FATAL — are inserted there, always at a
//! message boundary.
//!
//! A client that goes away in the middle of a statement does not cut it
//! short (on a direct connection PostgreSQL, too, notices a departed
//! client only when it writes to it): the statement runs to its end, its
//! answer is drained and logged, and the session stays listed until the
//! backend has answered, severed with its window like any other (which
//! cancels the statement). A statement that streams output nobody reads
//! (the rows of a large SELECT, a COPY TO STDOUT) is cancelled, and the
//! session ended, once more than PostgreSQL's own send buffer would hold
//! twice has come: by then PostgreSQL would have failed writing it to the
//! departed client and ended the session (rolling back a transaction).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;

use super::framer::Framer;
use super::session::{Ending, PgSession};
use super::upstream::{BoxStream, Stream};
use super::wire::{self, sqlstate};

const BUFFER: usize = 64 * 1024;
/// Output for a departed client past which its statement is abandoned:
/// PostgreSQL flushes its 8 KiB send buffer when full, and the second
/// flush to a closed connection fails.
const DEPARTED_OUTPUT_LIMIT: u64 = 16 * 1024;
/// How long a severed session may take to finish the message in flight
/// before the FATAL is written (else the connection just closes).
const FINISH_MESSAGE: Duration = Duration::from_millis(50);
/// Server messages are bounded by PostgreSQL itself (1 GB).
const SERVER_MESSAGE_LIMIT: usize = 1 << 30;

fn client_inspected(tag: u8) -> bool {
    matches!(tag, b'Q' | b'P' | b'B' | b'E' | b'C' | b'S' | b'F')
}

fn server_inspected(tag: u8) -> bool {
    matches!(tag, b'C' | b'E' | b's' | b'I' | b'V' | b'Z')
}

pub async fn run<C: Stream + 'static>(session: Arc<PgSession>, client: C, upstream: BoxStream) {
    let (client_read, client_write) = tokio::io::split(client);
    let (upstream_read, upstream_write) = tokio::io::split(upstream);
    let (warnings, warnings_rx) = mpsc::channel(4);
    let watcher = tokio::spawn(session.clone().watch(warnings));
    let limit = session
        .frontend
        .runtime
        .gateway
        .config()
        .postgres
        .max_message_bytes;
    tokio::join!(
        async {
            let client_left =
                client_to_upstream(&session, client_read, upstream_write, limit).await;
            if client_left && session.busy() {
                session.client_left();
            } else {
                session.finish(None);
            }
        },
        async {
            upstream_to_client(&session, upstream_read, client_write, warnings_rx).await;
            session.finish(None);
        },
    );
    let _ = watcher.await;
}

/// Relays until either side ends; true when the client went away.
async fn client_to_upstream<C: Stream>(
    session: &PgSession,
    mut reader: ReadHalf<C>,
    mut writer: WriteHalf<BoxStream>,
    limit: usize,
) -> bool {
    let mut client_left = false;
    let mut framer = Framer::new(client_inspected, limit);
    let mut buf = BytesMut::with_capacity(BUFFER);
    // One waiter for the whole session, not one registered per read.
    let ended = session.end.cancelled();
    tokio::pin!(ended);
    loop {
        let read = tokio::select! {
            biased;
            () = &mut ended => break,
            read = reader.read_buf(&mut buf) => read,
        };
        let Ok(n) = read.map_err(|e| tracing::debug!(error = %e, "client read ended")) else {
            client_left = true;
            break;
        };
        if n == 0 {
            client_left = true;
            break;
        }
        session.touch();
        session
            .bytes_from_client
            .fetch_add(n as u64, Ordering::Relaxed);
        let mut overflow = Vec::new();
        let fed = {
            let mut log = session.log.lock();
            framer.feed(&buf, &mut |tag, body| {
                if matches!(tag, b'Q' | b'S' | b'F') {
                    session.awaiting_reply();
                }
                overflow.extend(log.tracker.client_message(tag, body));
            })
        };
        if !overflow.is_empty() {
            session.log.lock().write_all(&overflow);
        }
        if let Err(e) = fed {
            let code = match e {
                wire::WireError::TooLarge { .. } => sqlstate::PROGRAM_LIMIT,
                _ => sqlstate::PROTOCOL_VIOLATION,
            };
            session.finish(Some(Ending {
                code,
                message: e.to_string(),
                severed: false,
            }));
            break;
        }
        match write_unless_ended(session, &mut writer, &buf).await {
            Some(Ok(())) => buf.clear(),
            Some(Err(_)) => break,
            // Cut in the middle of a message: nothing may follow it.
            None => return client_left,
        }
    }
    // Tell the backend goodbye if the stream is at a boundary; either way
    // closing the socket ends the backend once any query is cancelled.
    let _ = tokio::time::timeout(FINISH_MESSAGE, async {
        if framer.at_boundary() && session.end.is_cancelled() {
            let mut terminate = BytesMut::new();
            postgres_protocol::message::frontend::terminate(&mut terminate);
            let _ = writer.write_all(&terminate).await;
        }
        let _ = writer.shutdown().await;
    })
    .await;
    client_left
}

/// Writes `bytes` on, unless the session ends first: a peer that stopped
/// reading must not hold the session past its end. None when it ended
/// (perhaps in the middle of the write).
async fn write_unless_ended<W: AsyncWrite + Unpin>(
    session: &PgSession,
    writer: &mut W,
    bytes: &[u8],
) -> Option<std::io::Result<()>> {
    // The write first: one that completes at once (the usual case) never
    // registers a waiter on the session's end.
    tokio::select! {
        biased;
        written = write_and_flush(writer, bytes) => Some(written),
        () = session.end.cancelled() => None,
    }
}

async fn write_and_flush<W: AsyncWrite + Unpin>(
    writer: &mut W,
    bytes: &[u8],
) -> std::io::Result<()> {
    writer.write_all(bytes).await?;
    writer.flush().await
}

async fn upstream_to_client<C: Stream>(
    session: &PgSession,
    mut reader: ReadHalf<BoxStream>,
    mut writer: WriteHalf<C>,
    mut warnings: mpsc::Receiver<String>,
) {
    let mut framer = Framer::new(server_inspected, SERVER_MESSAGE_LIMIT);
    let mut buf = BytesMut::with_capacity(BUFFER);
    let mut unread: u64 = 0;
    let ended = session.end.cancelled();
    tokio::pin!(ended);
    loop {
        tokio::select! {
            biased;
            () = &mut ended => break,
            Some(text) = warnings.recv(), if framer.at_boundary() && !session.client_gone() => {
                let mut notice = BytesMut::new();
                wire::notice(&mut notice, &text);
                if !matches!(write_unless_ended(session, &mut writer, &notice).await, Some(Ok(()))) {
                    return;
                }
            }
            read = reader.read_buf(&mut buf) => {
                match read {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                if !relay_chunk(session, &mut framer, &buf, &mut writer).await {
                    return;
                }
                if session.client_gone() {
                    unread += buf.len() as u64;
                    // Its statement has been answered, or streams on.
                    if !session.busy() {
                        break;
                    }
                    if unread > DEPARTED_OUTPUT_LIMIT {
                        session.abandon();
                        break;
                    }
                }
                buf.clear();
            }
        }
    }
    if session.ending().is_some() {
        finish_message(session, &mut framer, &mut reader, &mut writer).await;
    }
    // Briefly: a client that stopped reading does not get them.
    let _ = tokio::time::timeout(FINISH_MESSAGE, async {
        if let Some(ending) = session.ending()
            && framer.at_boundary()
        {
            let fatal = wire::fatal(ending.code, &ending.message);
            let _ = writer.write_all(&fatal).await;
        }
        let _ = writer.flush().await;
        let _ = writer.shutdown().await;
    })
    .await;
    if let Some(ended) = session
        .ending()
        .filter(|e| e.severed)
        .and(session.lease.ended_at())
    {
        crate::metrics::severed_after(crate::audit::Protocol::Postgres, ended);
    }
}

/// Forwards one chunk from upstream, then logs the statements it
/// completes: the client gets its answer before the gateway does its
/// bookkeeping. Results stay paired with their statements because the
/// tracker matches them in protocol order, whatever the client sends
/// meanwhile. A client that cannot be written to any more is gone: with
/// a statement running, its answer is still drained and logged. False
/// when nothing more may be relayed; a write the session's end cuts short
/// is one (once the session is ending, `finish_message` bounds it).
async fn relay_chunk<C: Stream>(
    session: &PgSession,
    framer: &mut Framer,
    chunk: &[u8],
    writer: &mut WriteHalf<C>,
) -> bool {
    if !session.client_gone() {
        let written = if session.end.is_cancelled() {
            Some(write_and_flush(writer, chunk).await)
        } else {
            write_unless_ended(session, writer, chunk).await
        };
        match written {
            Some(Ok(())) => {}
            None => return false,
            Some(Err(_)) if !session.busy() => return false,
            Some(Err(_)) => session.client_left(),
        }
    }
    session.touch();
    session
        .bytes_to_client
        .fetch_add(chunk.len() as u64, Ordering::Relaxed);
    let mut log = session.log.lock();
    let mut done = Vec::new();
    let fed = framer.feed(chunk, &mut |tag, body| {
        if tag == b'Z' {
            session.answered();
        }
        done.extend(log.tracker.server_message(tag, body));
    });
    if !done.is_empty() {
        // Buffered: the session's watcher flushes the file a few times a
        // second, keeping a write syscall off every transaction.
        log.write_all(&done);
    }
    fed.is_ok()
}

/// Completes the message in flight to the client, briefly, so a FATAL can
/// follow it cleanly; whatever comes after it is dropped.
async fn finish_message<C: Stream>(
    session: &PgSession,
    framer: &mut Framer,
    reader: &mut ReadHalf<BoxStream>,
    writer: &mut WriteHalf<C>,
) {
    let _ = tokio::time::timeout(FINISH_MESSAGE, async {
        while !framer.at_boundary() {
            let want = framer.bytes_to_boundary().min(BUFFER);
            let mut chunk = vec![0u8; want];
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if !relay_chunk(session, framer, &chunk[..n], writer).await {
                        return;
                    }
                }
            }
        }
    })
    .await;
}
