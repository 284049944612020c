//! The socket and the request and response bodies, instrumented so that each
//! connection's watchdog sees bytes arrive, writes stall and requests start and
//! end.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Conn;

/// The socket, reporting to its [`Conn`] when a byte arrives and when writes
/// stall or move.
pub(super) struct Tracked<T> {
    pub(super) io: T,
    pub(super) conn: Arc<Conn>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.first_byte();
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> Tracked<T> {
    fn track<R>(&self, res: Poll<std::io::Result<R>>) -> Poll<std::io::Result<R>> {
        self.conn.write_progress(res.is_pending());
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.io).poll_write(cx, buf);
        self.track(res)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.track(res)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let res = Pin::new(&mut self.io).poll_flush(cx);
        self.track(res)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// One request between its head and the end of its response.
pub(super) struct InFlight(Arc<Conn>);

impl InFlight {
    pub(super) fn start(conn: Arc<Conn>) -> Self {
        conn.request_started();
        InFlight(conn)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// A request body, due in full within `body_timeout` of its head.
pub(super) struct RequestBody<B> {
    inner: B,
    conn: Arc<Conn>,
    pending: Option<u64>,
}

impl<B: Body> RequestBody<B> {
    pub(super) fn new(inner: B, conn: Arc<Conn>) -> Self {
        let pending = (!inner.is_end_stream()).then(|| conn.body_started());
        RequestBody {
            inner,
            conn,
            pending,
        }
    }
}

impl<B> RequestBody<B> {
    fn finish(&mut self) {
        if let Some(id) = self.pending.take() {
            self.conn.body_finished(id);
        }
    }
}

impl<B> Drop for RequestBody<B> {
    fn drop(&mut self) {
        self.finish();
    }
}

impl<B: Body + Unpin> Body for RequestBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let res = Pin::new(&mut self.inner).poll_frame(cx);
        match &res {
            Poll::Ready(None | Some(Err(_))) => self.finish(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.finish(),
            _ => {}
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body; the request is finished when hyper drops it (sent, or the
/// connection gone).
pub(super) struct ResponseBody<B> {
    pub(super) inner: B,
    pub(super) _request: InFlight,
}

impl<B: Body + Unpin> Body for ResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
