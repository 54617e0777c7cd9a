//! HTTP/2 streams served inside their connection's task.
//!
//! hyper hands each HTTP/2 stream's future to an executor; with tokio's, every
//! request is a task of its own: a spawn, a wake across tasks for each frame
//! it sends, and the connection task woken to write each stream's output
//! separately. Here the executor only collects the futures, and
//! [`WithStreams`] polls them beside the connection in the connection's own
//! task: the streams woken together run in one poll, their frames are queued
//! in h2 before the connection is polled, and one flush sends them all
//! (HAProxy's model: the multiplexer and its streams on the socket's thread).
//!
//! The executor cannot hold a per-connection queue (hyper's builder and its
//! executor are shared by every connection of a generation), so `execute`
//! pushes into a per-thread list that [`WithStreams::poll`] takes right after
//! the call that may have spawned: hyper spawns a stream only while its
//! connection (or, for an extended CONNECT, one of its streams) is polled.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::stream::{FuturesUnordered, StreamExt};

type StreamFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

thread_local! {
    /// Whether a [`WithStreams`] is polling on this thread (only then is
    /// there someone to take what `execute` collects).
    static COLLECTING: Cell<bool> = const { Cell::new(false) };
    /// What hyper spawned during the current poll.
    static SPAWNED: RefCell<Vec<StreamFuture>> = const { RefCell::new(Vec::new()) };
}

/// hyper's executor for HTTP/2 server connections: see the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct InConnectionTask;

impl<F> hyper::rt::Executor<F> for InConnectionTask
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, future: F) {
        if COLLECTING.with(Cell::get) {
            SPAWNED.with(|spawned| spawned.borrow_mut().push(Box::pin(future)));
        } else {
            // Not reached by hyper today; a task of its own is always correct.
            tokio::spawn(future);
        }
    }
}

/// hyper's HTTP/2 server connection, as a trait object: [`WithStreams`] holds
/// it boxed, so that the connection task's future names no hyper generics
/// (with them, rustc cannot prove that task `Send`: its higher-ranked
/// lifetime limitation with the executor's bounds).
pub trait Http2Connection: Future<Output = hyper::Result<()>> + Send {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S, B> Http2Connection for hyper::server::conn::http2::Connection<I, S, InConnectionTask>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    InConnectionTask: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
    Self: Send,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper::server::conn::http2::Connection::graceful_shutdown(self);
    }
}

/// A connection future and the stream futures it spawned, polled together.
/// Ready when the connection is done and, if it ended cleanly, its streams
/// too; after an error the streams are dropped with it (their client is gone,
/// as when an HTTP/1.1 client goes away mid-request).
pub struct WithStreams {
    connection: Pin<Box<dyn Http2Connection>>,
    streams: FuturesUnordered<StreamFuture>,
    ended: Option<hyper::Result<()>>,
}

impl WithStreams {
    pub fn new(connection: Pin<Box<dyn Http2Connection>>) -> Self {
        WithStreams {
            connection,
            streams: FuturesUnordered::new(),
            ended: None,
        }
    }

    /// The connection itself (for its graceful shutdown).
    pub fn connection(&mut self) -> Pin<&mut dyn Http2Connection> {
        self.connection.as_mut()
    }

    /// Moves what hyper spawned into this connection's streams; true if anything.
    fn adopt_spawned(&mut self) -> bool {
        SPAWNED.with(|spawned| {
            let mut spawned = spawned.borrow_mut();
            let any = !spawned.is_empty();
            self.streams.extend(spawned.drain(..));
            any
        })
    }
}

/// Runs `poll` with `execute` collecting into this thread's list.
fn collecting<T>(poll: impl FnOnce() -> T) -> T {
    // Restored, not cleared: a poll nested in another (none today) keeps its
    // outer one collecting.
    let outer = COLLECTING.with(|c| c.replace(true));
    let out = poll();
    COLLECTING.with(|c| c.set(outer));
    out
}

impl Future for WithStreams {
    type Output = hyper::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            // Streams first: what they send is queued in h2, and the
            // connection's poll below writes all of it with one flush.
            let streams = &mut this.streams;
            collecting(|| while let Poll::Ready(Some(())) = streams.poll_next_unpin(cx) {});
            let upgraded = this.adopt_spawned();
            let mut accepted = false;
            if this.ended.is_none() {
                let connection = &mut this.connection;
                let polled = collecting(|| connection.as_mut().poll(cx));
                accepted = this.adopt_spawned();
                if let Poll::Ready(ended) = polled {
                    if ended.is_err() {
                        return Poll::Ready(ended);
                    }
                    this.ended = Some(ended);
                }
            }
            // New streams start now (their first poll sends the request
            // upstream); then the connection again, for what they queued.
            if !accepted && !upgraded {
                break;
            }
        }
        match this.ended.take() {
            Some(ended) if this.streams.is_empty() => Poll::Ready(ended),
            ended => {
                this.ended = ended;
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A stand-in connection: on its first poll it "accepts" `streams`
    /// streams through the executor, each of which yields once before
    /// finishing; then it ends with `ends_with`.
    struct FakeConnection {
        streams: usize,
        finished: Arc<AtomicUsize>,
        /// The task each stream ran in.
        ran_in: Arc<std::sync::Mutex<Vec<tokio::task::Id>>>,
        polls: usize,
        ends_with: fn() -> hyper::Result<()>,
    }

    impl Future for FakeConnection {
        type Output = hyper::Result<()>;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            self.polls += 1;
            if self.polls == 1 {
                for _ in 0..self.streams {
                    let finished = self.finished.clone();
                    let ran_in = self.ran_in.clone();
                    hyper::rt::Executor::execute(&InConnectionTask, async move {
                        tokio::task::yield_now().await;
                        ran_in.lock().unwrap().push(tokio::task::id());
                        finished.fetch_add(1, Ordering::SeqCst);
                    });
                }
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Poll::Ready((self.ends_with)())
        }
    }

    impl Http2Connection for FakeConnection {
        fn graceful_shutdown(self: Pin<&mut Self>) {}
    }

    #[tokio::test]
    async fn streams_run_in_the_connection_task_and_finish_before_it() {
        let finished = Arc::new(AtomicUsize::new(0));
        let ran_in = Arc::new(std::sync::Mutex::new(Vec::new()));
        let fake = FakeConnection {
            streams: 10,
            finished: finished.clone(),
            ran_in: ran_in.clone(),
            polls: 0,
            ends_with: || Ok(()),
        };
        let join = tokio::spawn(WithStreams::new(Box::pin(fake)));
        let connection_task = join.id();
        join.await.unwrap().unwrap();
        // The connection ended on its second poll, its streams after it: all
        // of them ran, each in the connection's own task.
        assert_eq!(finished.load(Ordering::SeqCst), 10);
        assert_eq!(*ran_in.lock().unwrap(), vec![connection_task; 10]);
    }

    #[test]
    fn execute_outside_a_connection_spawns_a_task() {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        let seen = ran.clone();
        runtime.block_on(async move {
            hyper::rt::Executor::execute(&InConnectionTask, async move {
                seen.fetch_add(1, Ordering::SeqCst);
            });
            tokio::task::yield_now().await;
        });
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }
}
