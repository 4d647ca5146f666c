//! The accept loop: a place per connection (see `limits`), TLS when configured, HTTP/1.1 with a
//! header read timeout and a bounded header size, and graceful shutdown — stop accepting, let
//! requests in progress finish for up to `Timeouts::shutdown_grace`, close the rest.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::{GracefulShutdown, Watcher},
    service::TowerToHyperService,
};
use log::{debug, warn};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::TlsAcceptor;

use super::{
    Web,
    limits::{Admission, MAX_HEADER_BYTES, Timeouts, WriteDeadline},
    source::WebSource,
};

/// What a plain-HTTP request to the HTTPS port gets (as Go's servers say it).
const HTTP_TO_HTTPS: &[u8] = b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\n\
    Connection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// Serves `app` (already wrapped in the guard) on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    app: axum::Router,
    web: Web,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // Wait for a free place before accepting (see `ConnectionLimits::place`).
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = web.limits.place() => permit,
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(admission) = web.limits.admit(permit, peer.ip()) else {
            debug!("closing a connection from {peer}: it holds its share of connections");
            continue;
        };
        let source = web.source.clone().filter(|s| s.tls());
        let conn = Conn {
            peer,
            timeouts: web.timeouts,
            app: app.clone(),
            watcher: graceful.watcher(),
            _admission: admission,
        };
        tokio::spawn(conn.serve(stream, source));
    }
    drop(listener);
    let grace = web.timeouts.shutdown_grace;
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        debug!("closing connections still open after {grace:?}");
    }
}

/// One accepted connection and what it holds.
struct Conn {
    peer: SocketAddr,
    timeouts: Timeouts,
    app: axum::Router,
    watcher: Watcher,
    _admission: Admission,
}

impl Conn {
    async fn serve(self, stream: TcpStream, tls: Option<Arc<WebSource>>) {
        let _ = stream.set_nodelay(true);
        let Some(source) = tls else {
            let io = WriteDeadline::new(stream, self.timeouts.write_stall);
            return self.http(io).await;
        };
        let (peer, limit) = (self.peer, self.timeouts.handshake);
        match tokio::time::timeout(limit, self.handshake(stream, &source)).await {
            Ok(Some(tls)) => self.http(tls).await,
            Ok(None) => {}
            Err(_) => debug!("TLS handshake with {peer} timed out after {limit:?}"),
        }
    }

    async fn handshake(
        &self,
        stream: TcpStream,
        source: &WebSource,
    ) -> Option<tokio_rustls::server::TlsStream<WriteDeadline<TcpStream>>> {
        if speaks_plain_http(&stream).await {
            turn_away(stream).await;
            return None;
        }
        // The certificate and settings in force now: a rotated certificate is used from the
        // first handshake after the files change.
        let config = source.current().tls.clone()?;
        let io = WriteDeadline::new(stream, self.timeouts.write_stall);
        TlsAcceptor::from(config)
            .accept(io)
            .await
            .inspect_err(|e| debug!("TLS handshake with {} failed: {e}", self.peer))
            .ok()
    }

    async fn http<S>(self, io: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.timeouts.header_read)
            .max_buf_size(MAX_HEADER_BYTES)
            .serve_connection(TokioIo::new(io), TowerToHyperService::new(self.app));
        if let Err(e) = self.watcher.watch(conn).await {
            debug!("connection from {}: {e}", self.peer);
        }
    }
}

/// Answers 400 and closes — after the client's request is read, so that the close does not
/// reset the connection before the client has read the answer. (Bounded by the handshake
/// timeout.)
async fn turn_away(mut stream: TcpStream) {
    let _ = stream.write_all(HTTP_TO_HTTPS).await;
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
}

/// A TLS client starts with a handshake record (0x16); an HTTP client with a method's letters.
async fn speaks_plain_http(stream: &TcpStream) -> bool {
    let mut first = [0u8; 1];
    matches!(stream.peek(&mut first).await, Ok(1) if first[0].is_ascii_uppercase())
}
