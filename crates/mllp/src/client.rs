//! [`Connection`]: one MLLP connection that sends messages and waits for their acknowledgements.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hl7v2::{AckCode, Acknowledgment, Message};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use crate::stream::Stream;
use crate::{DEFAULT_MAX_FRAME, Error, MllpCodec};

/// Which acknowledgement ends the wait for a message (Medplum's `returnAck`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReturnAck {
    /// The first acknowledgement, whatever it is (a commit ACK `CA` counts).
    #[default]
    First,
    /// The application acknowledgement: a `CA` is noted and the wait goes on for `AA`/`AE`/`AR`
    /// (a `CE`/`CR` still ends it, negatively).
    Application,
}

impl std::str::FromStr for ReturnAck {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "first" => Ok(ReturnAck::First),
            "application" => Ok(ReturnAck::Application),
            _ => Err(format!("expected \"first\" or \"application\", got {s:?}")),
        }
    }
}

/// How a client connects and waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Limit on establishing the TCP connection.
    pub connect_timeout: Duration,
    /// Limit on waiting for the acknowledgement of one message.
    pub ack_timeout: Duration,
    /// Which acknowledgement ends the wait.
    pub return_ack: ReturnAck,
    /// Largest acknowledgement frame accepted.
    pub max_frame: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(10),
            ack_timeout: Duration::from_secs(30),
            return_ack: ReturnAck::First,
            max_frame: DEFAULT_MAX_FRAME,
        }
    }
}

/// A positive acknowledgement (`AA` or `CA`), as received. Negative ones are
/// [`Error::Negative`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    code: AckCode,
    bytes: Bytes,
    commit: Option<Bytes>,
}

impl Ack {
    /// MSA-1.
    pub fn code(&self) -> AckCode {
        self.code
    }

    /// The acknowledgement message as received (segments ended by `\r`).
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// With [`ReturnAck::Application`], the commit acknowledgement (`CA`) that came first, if one did.
    pub fn commit(&self) -> Option<&Bytes> {
        self.commit.as_ref()
    }

    /// The acknowledgement parsed.
    pub fn message(&self) -> Result<Message<'_>, hl7v2::Error> {
        Message::parse(&self.bytes)
    }
}

/// One MLLP connection to a receiver. Messages are sent one at a time; each `send` waits for
/// the acknowledgement whose MSA-2 matches the message's MSH-10 (others are logged and skipped).
///
/// After an error the connection may be out of step with the peer; drop it and connect again
/// ([`Pool`](crate::Pool) does this).
#[derive(Debug)]
pub struct Connection {
    framed: Framed<Stream, MllpCodec>,
    peer: String,
    opts: ClientOptions,
    healthy: bool,
}

impl Connection {
    /// Connects to `addr` (`host:port`), with `TCP_NODELAY` so each frame leaves at once.
    pub async fn connect(addr: &str, opts: ClientOptions) -> Result<Connection, Error> {
        let (stream, peer) = Connection::tcp(addr, &opts).await?;
        Ok(Connection::over(Stream::Plain(stream), peer, opts))
    }

    /// Connects to `addr` and runs a TLS handshake (TLS 1.2 or 1.3) as `tls` says; connecting
    /// and the handshake together within `opts.connect_timeout`. A certificate that does not
    /// verify is [`Error::Tls`], naming the problem (`invalid peer certificate: UnknownIssuer`).
    #[cfg(feature = "tls")]
    pub async fn connect_tls(
        addr: &str,
        tls: &crate::TlsTarget,
        opts: ClientOptions,
    ) -> Result<Connection, Error> {
        let started = tokio::time::Instant::now();
        let (stream, peer) = Connection::tcp(addr, &opts).await?;
        let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
        let left = opts.connect_timeout.saturating_sub(started.elapsed());
        let stream = tokio::time::timeout(left, connector.connect(tls.server_name.clone(), stream))
            .await
            .map_err(|_| Error::ConnectTimeout {
                addr: addr.to_owned(),
                timeout: opts.connect_timeout,
            })?
            .map_err(|source| Error::Tls {
                addr: addr.to_owned(),
                source,
            })?;
        Ok(Connection::over(Stream::Tls(Box::new(stream)), peer, opts))
    }

    fn over(stream: Stream, peer: String, opts: ClientOptions) -> Connection {
        Connection {
            framed: Framed::new(stream, MllpCodec::new(opts.max_frame)),
            peer,
            opts,
            healthy: true,
        }
    }

    async fn tcp(addr: &str, opts: &ClientOptions) -> Result<(TcpStream, String), Error> {
        let stream = tokio::time::timeout(opts.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| Error::ConnectTimeout {
                addr: addr.to_owned(),
                timeout: opts.connect_timeout,
            })?
            .map_err(|source| Error::Connect {
                addr: addr.to_owned(),
                source,
            })?;
        stream.set_nodelay(true)?;
        let peer = stream
            .peer_addr()
            .map_or_else(|_| addr.to_owned(), |a| a.to_string());
        Ok((stream, peer))
    }

    /// The peer's address.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// The options this connection uses.
    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    /// Whether the connection can carry another message: no error so far, nothing unread, and
    /// the peer has not closed it. Cheap (one non-blocking read attempt).
    pub fn is_reusable(&self) -> bool {
        if !self.healthy || !self.framed.read_buffer().is_empty() {
            return false;
        }
        self.framed.get_ref().is_quiet()
    }

    /// Sends `message` and waits for its acknowledgement with this connection's options.
    ///
    /// The bytes sent are `message` exactly when its segments end with `\r`. Segments may also
    /// end with `\n` or `\r\n`; then they go on the wire ended by `\r` and nothing else changes
    /// (see [`hl7v2::Message::to_wire`]: a `\n` inside a value of a `\r` or `\r\n` message is
    /// data and is sent as it is).
    pub async fn send(&mut self, message: &[u8]) -> Result<Ack, Error> {
        let (timeout, return_ack) = (self.opts.ack_timeout, self.opts.return_ack);
        self.send_with(message, timeout, return_ack).await
    }

    /// [`send`](Self::send) with a per-message wait limit and `returnAck`.
    pub async fn send_with(
        &mut self,
        message: &[u8],
        timeout: Duration,
        return_ack: ReturnAck,
    ) -> Result<Ack, Error> {
        let (control_id, wire) = prepare(message)?;
        self.healthy = false;
        self.framed.send(&wire[..]).await?;
        let result = tokio::time::timeout(timeout, self.wait_ack(&control_id, return_ack))
            .await
            .map_err(|_| Error::AckTimeout {
                control_id: control_id.clone(),
                timeout,
            })?;
        // A negative acknowledgement is an answer: the connection is still in step.
        self.healthy = matches!(result, Ok(_) | Err(Error::Negative { .. }));
        result
    }

    async fn wait_ack(&mut self, control_id: &str, return_ack: ReturnAck) -> Result<Ack, Error> {
        let mut commit = None;
        loop {
            let Some(item) = self.framed.next().await else {
                return Err(Error::Closed {
                    peer: self.peer.clone(),
                    control_id: control_id.to_owned(),
                });
            };
            let frame = item??.freeze();
            let Ok(msg) = Message::parse(&frame) else {
                tracing::warn!(peer = %self.peer, "skipping a frame that is not HL7");
                continue;
            };
            let Some(ack) = Acknowledgment::read(&msg) else {
                tracing::warn!(peer = %self.peer, "skipping a message without MSA");
                continue;
            };
            if ack.control_id().raw() != control_id.as_bytes() {
                tracing::warn!(
                    peer = %self.peer,
                    expected = control_id,
                    got = %ack.control_id().text(),
                    "skipping an acknowledgement for another message"
                );
                continue;
            }
            let code = ack.code();
            if !code.is_positive() {
                let description = ack.describe();
                return Err(Error::Negative {
                    code,
                    control_id: control_id.to_owned(),
                    description,
                    ack: frame.clone(),
                });
            }
            if code == AckCode::CA && return_ack == ReturnAck::Application {
                commit = Some(frame.clone());
                continue;
            }
            return Ok(Ack {
                code,
                bytes: frame.clone(),
                commit,
            });
        }
    }
}

/// MSH-10 of a message to send, and the bytes to send ([`Message::to_wire`]).
pub(crate) fn prepare(message: &[u8]) -> Result<(String, std::borrow::Cow<'_, [u8]>), Error> {
    let msg = Message::parse(message)?;
    let id = msg.control_id();
    if id.is_empty() {
        return Err(Error::MissingControlId);
    }
    let control_id = String::from_utf8_lossy(id.raw()).into_owned();
    let wire = match msg.to_wire() {
        // Borrowed from `msg`, which borrows `message`: the same bytes.
        std::borrow::Cow::Borrowed(_) => std::borrow::Cow::Borrowed(message),
        std::borrow::Cow::Owned(bytes) => std::borrow::Cow::Owned(bytes),
    };
    Ok((control_id, wire))
}
