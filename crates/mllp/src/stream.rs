//! The byte stream under a client [`Connection`](crate::Connection): plain TCP, or TLS over TCP
//! (feature `tls`, rustls) for `mllps://` destinations.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Where a TLS connection goes and whom it trusts: the rustls client configuration (roots,
/// optional client certificate) and the name the server's certificate must carry.
#[cfg(feature = "tls")]
#[derive(Debug, Clone)]
pub struct TlsTarget {
    /// Roots, protocol versions and the client certificate, if any.
    pub config: std::sync::Arc<rustls::ClientConfig>,
    /// The name checked against the server's certificate (a DNS name or an IP address).
    pub server_name: rustls::pki_types::ServerName<'static>,
    /// Tells pools apart: connections to one address with different trust are not shared
    /// (for example the CA file's path).
    pub label: String,
}

#[derive(Debug)]
pub(crate) enum Stream {
    Plain(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    /// Whether the peer has neither closed the connection nor sent anything unasked: a
    /// non-blocking look at the TCP socket that takes nothing from it.
    pub(crate) fn is_quiet(&self) -> bool {
        // One arm without the `tls` feature.
        #[cfg_attr(not(feature = "tls"), allow(clippy::infallible_destructuring_match))]
        let tcp = match self {
            Stream::Plain(s) => s,
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.get_ref().0,
        };
        let mut probe = [0u8; 1];
        let mut buf = ReadBuf::new(&mut probe);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        // Pending: nothing to read, still open. Ready(0): closed. Ready(n): unsolicited bytes
        // (or, under TLS, a record such as close_notify): either way out of step.
        matches!(tcp.poll_peek(&mut cx, &mut buf), Poll::Pending)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
