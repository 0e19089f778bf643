//! [`Connection`]: drives a [`Link`] over any byte stream (TCP, a serial port), with tokio.

use std::collections::VecDeque;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{Error, Link, LinkEvent, LinkOptions};

/// An E1381 link over a byte stream. Each frame or control byte is written with one call; use
/// [`connect`] for TCP, which also sets `TCP_NODELAY`.
#[derive(Debug)]
pub struct Connection<S> {
    io: S,
    link: Link,
    buf: Vec<u8>,
    received: VecDeque<Vec<u8>>,
    eof: bool,
}

/// Connects over TCP with `TCP_NODELAY` (a frame held back by Nagle's algorithm waits ~45 ms
/// for the peer's delayed ACK).
pub async fn connect(
    addr: &str,
    opts: LinkOptions,
) -> Result<Connection<tokio::net::TcpStream>, Error> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(Connection::new(stream, opts))
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Wraps a stream.
    pub fn new(io: S, opts: LinkOptions) -> Self {
        Connection {
            io,
            link: Link::new(opts),
            buf: vec![0; 4096],
            received: VecDeque::new(),
            eof: false,
        }
    }

    /// The link, for its counters.
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// Sends one message (records separated by CR) and waits until every frame is acknowledged
    /// or the link gives up. Messages the peer sends meanwhile (after winning contention, say)
    /// are kept for [`Connection::next_message`].
    pub async fn send(&mut self, message: &[u8]) -> Result<(), Error> {
        self.link.send(message, Instant::now())?;
        loop {
            self.flush().await?;
            while let Some(ev) = self.link.poll_event() {
                match ev {
                    LinkEvent::Sent => {
                        self.flush().await?;
                        return Ok(());
                    }
                    LinkEvent::Failed(e) => {
                        self.flush().await?;
                        return Err(e);
                    }
                    LinkEvent::Received(m) => self.received.push_back(m),
                    LinkEvent::Discarded(_) => {}
                }
            }
            if self.eof {
                return Err(Error::Closed);
            }
            self.step().await?;
        }
    }

    /// The next message from the peer; `None` when the connection closed.
    pub async fn next_message(&mut self) -> Result<Option<Vec<u8>>, Error> {
        loop {
            if let Some(m) = self.received.pop_front() {
                return Ok(Some(m));
            }
            self.flush().await?;
            while let Some(ev) = self.link.poll_event() {
                if let LinkEvent::Received(m) = ev {
                    self.received.push_back(m);
                }
            }
            if !self.received.is_empty() {
                continue;
            }
            if self.eof {
                return Ok(None);
            }
            self.step().await?;
        }
    }

    /// With [`LinkOptions::confirm_before_ack`]: answers the last frame of the message
    /// [`Connection::next_message`] returned — ACK once the caller has stored it (`stored`), NAK
    /// to have the sender send it again. Call it after each message in that mode.
    pub async fn confirm(&mut self, stored: bool) -> Result<(), Error> {
        self.link.confirm(stored, Instant::now());
        self.flush().await
    }

    async fn flush(&mut self) -> Result<(), Error> {
        while let Some(bytes) = self.link.poll_transmit() {
            self.io.write_all(&bytes).await?;
        }
        self.io.flush().await?;
        Ok(())
    }

    /// Waits for bytes or the next timer, and feeds the link.
    async fn step(&mut self) -> Result<(), Error> {
        let deadline = self.link.poll_timeout();
        let sleep = async {
            match deadline {
                Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            n = self.io.read(&mut self.buf) => {
                let n = n?;
                if n == 0 {
                    self.eof = true;
                } else {
                    self.link.handle_bytes(&self.buf[..n], Instant::now());
                }
            }
            () = sleep => self.link.handle_timeout(Instant::now()),
        }
        Ok(())
    }
}
