//! [`MllpCodec`]: the tokio-util codec, a thin shell over [`Framer`].

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::{Error, Framer, encode_frame};

/// MLLP as a tokio-util codec.
///
/// Decoded items are `Result`s: a frame that was too large (or cut short by end of stream) is
/// an `Err` item and the stream goes on, since one bad frame is no reason to drop a connection.
/// Only socket errors end the stream.
#[derive(Debug, Clone, Default)]
pub struct MllpCodec {
    framer: Framer,
}

impl MllpCodec {
    /// A codec accepting frames whose content is at most `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        MllpCodec {
            framer: Framer::new(max_frame),
        }
    }

    /// The framer, for its counters.
    pub fn framer(&self) -> &Framer {
        &self.framer
    }
}

impl Decoder for MllpCodec {
    type Item = Result<BytesMut, Error>;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, std::io::Error> {
        Ok(self.framer.decode(src).transpose())
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, std::io::Error> {
        if let Some(item) = self.decode(src)? {
            return Ok(Some(item));
        }
        Ok(self
            .framer
            .finish(src)
            .map(|len| Err(Error::Truncated { len })))
    }
}

impl<T: AsRef<[u8]>> Encoder<T> for MllpCodec {
    type Error = Error;

    fn encode(&mut self, item: T, dst: &mut BytesMut) -> Result<(), Error> {
        encode_frame(item.as_ref(), dst)
    }
}
