//! What one client can hold: connections (in all and per client address), and how long a
//! connection may stall while the server waits on it — for the TLS handshake, for request
//! headers (slowloris; idle keep-alive connections too), for the client to read a response.
//!
//! HTTP/1.1 serves one request at a time per connection, so the connection limits bound the
//! requests in progress as well.

use std::{
    collections::HashMap,
    io,
    net::IpAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, ready},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Sleep,
};

/// The request line and headers together (hyper's read buffer; its minimum is 8 KiB). Larger
/// requests get 431.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// How long the server waits on a client.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// To complete the TLS handshake.
    pub handshake: Duration,
    /// To send a request's headers, counted from the end of the previous response (or the
    /// connection's start): a slow (slowloris) or idle client is cut off after it.
    pub header_read: Duration,
    /// For the client to read what a response write is waiting to send.
    pub write_stall: Duration,
    /// For requests in progress at shutdown.
    pub shutdown_grace: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            handshake: Duration::from_secs(10),
            header_read: Duration::from_secs(10),
            write_stall: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(1),
        }
    }
}

/// Connection limits, shared by the accept loop and the connections.
pub struct ConnectionLimits {
    all: Arc<Semaphore>,
    per_client: usize,
    clients: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// A connection's place: released when dropped.
pub struct Admission {
    _permit: OwnedSemaphorePermit,
    client: IpAddr,
    clients: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl ConnectionLimits {
    pub fn new(max_connections: usize, max_per_client: usize) -> Self {
        Self {
            all: Arc::new(Semaphore::new(max_connections)),
            per_client: max_per_client,
            clients: Arc::default(),
        }
    }

    /// Waits for a free place (before accepting: while every place is taken, new connections
    /// wait in the kernel's backlog rather than being accepted and starved).
    pub async fn place(&self) -> OwnedSemaphorePermit {
        self.all
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }

    /// Admits a connection from `client` on `permit`, unless that client already holds its
    /// share: one address cannot take every place.
    pub fn admit(&self, permit: OwnedSemaphorePermit, client: IpAddr) -> Option<Admission> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let held = clients.entry(client).or_insert(0);
        if *held >= self.per_client {
            return None;
        }
        *held += 1;
        Some(Admission {
            _permit: permit,
            client,
            clients: self.clients.clone(),
        })
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = clients.get_mut(&self.client) {
            *held -= 1;
            if *held == 0 {
                clients.remove(&self.client);
            }
        }
    }
}

/// A stream whose writes fail with `TimedOut` once they have waited `limit` on a client that
/// does not read.
pub struct WriteDeadline<S> {
    inner: S,
    limit: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteDeadline<S> {
    pub fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            stalled: None,
        }
    }

    /// After a write that is not ready: starts the stall clock, or fails once it has run out.
    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let limit = self.limit;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        ready!(sleep.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client stopped reading",
        )))
    }

    fn poll_with<T>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut S>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>>
    where
        S: Unpin,
    {
        match op(Pin::new(&mut self.inner), cx) {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.pending(cx),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_with(cx, |s, cx| s.poll_write(cx, buf))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_with(cx, |s, cx| s.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_with(cx, |s, cx| s.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_with(cx, |s, cx| s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_client_cannot_take_every_place() {
        let limits = ConnectionLimits::new(4, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = limits.admit(limits.place().await, a).unwrap();
        let _a2 = limits.admit(limits.place().await, a).unwrap();
        assert!(
            limits.admit(limits.place().await, a).is_none(),
            "a's share is 2"
        );
        let _b1 = limits.admit(limits.place().await, b).unwrap();
        drop(a1);
        assert!(
            limits.admit(limits.place().await, a).is_some(),
            "a place freed"
        );
    }

    #[tokio::test]
    async fn places_run_out_and_come_back() {
        let limits = ConnectionLimits::new(1, 1);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let held = limits.admit(limits.place().await, ip).unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(50), limits.place()).await;
        assert!(waiting.is_err(), "no place while the only one is held");
        drop(held);
        let _ = tokio::time::timeout(Duration::from_secs(1), limits.place())
            .await
            .expect("the place came back");
    }

    #[tokio::test]
    async fn a_write_to_a_client_that_does_not_read_times_out() {
        use tokio::io::AsyncWriteExt as _;
        // A 64-byte pipe that nobody reads fills at once.
        let (ours, _theirs) = tokio::io::duplex(64);
        let mut w = WriteDeadline::new(ours, Duration::from_millis(100));
        let started = std::time::Instant::now();
        let err = w.write_all(&[0u8; 4096]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
