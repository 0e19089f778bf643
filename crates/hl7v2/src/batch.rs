//! Batch files: FHS/BHS … MSH … BTS/FTS, split into their messages.

use crate::{
    Charset, Error, Message, ParseOptions, Segment,
    message::{Span, check_size, header_delimiters, skip_preamble, split_segments},
};

/// A batch (or a plain file of several messages), split into messages.
#[derive(Debug, Clone)]
pub struct Batch<'a> {
    envelope: Vec<Segment<'a>>,
    messages: Vec<Message<'a>>,
}

impl<'a> Batch<'a> {
    /// Splits with the default [`ParseOptions`].
    pub fn parse(input: &'a [u8]) -> Result<Batch<'a>, Error> {
        Batch::parse_with(input, &ParseOptions::default())
    }

    /// Splits a file that starts with FHS, BHS or MSH into its messages. Each message starts at
    /// an MSH and runs to the next MSH or envelope segment (FHS, BHS, BTS, FTS); each reads its
    /// own delimiters from its own MSH.
    pub fn parse_with(input: &'a [u8], opts: &ParseOptions) -> Result<Batch<'a>, Error> {
        check_size(input, opts)?;
        let start = skip_preamble(input, opts.strict);
        let head = &input[start..];
        if !(head.starts_with(b"FHS") || head.starts_with(b"BHS") || head.starts_with(b"MSH")) {
            return Err(Error::NoMsh { offset: start });
        }
        let d = header_delimiters(input, start)?;
        let spans = split_segments(input, start, d.field, opts.strict)?;
        let charset = opts.charset.unwrap_or(Charset::Auto);
        let mut envelope = Vec::new();
        let mut messages = Vec::new();
        let mut current: Option<usize> = None;
        let flush = |from: usize, to: usize, messages: &mut Vec<Message<'a>>| {
            let first = spans[from];
            let last = spans[to - 1];
            let base = first.start;
            let slice = &input[first.start as usize..last.end as usize];
            let local = spans[from..to]
                .iter()
                .map(|s| Span {
                    start: s.start - base,
                    end: s.end - base,
                })
                .collect();
            let md = header_delimiters(slice, 0)?;
            messages.push(Message::from_parts(slice, md, local, opts.charset));
            Ok::<_, Error>(())
        };
        for (i, span) in spans.iter().enumerate() {
            let name = &input[span.start as usize..span.start as usize + 3];
            let is_envelope = matches!(name, b"FHS" | b"BHS" | b"BTS" | b"FTS");
            if (name == b"MSH" || is_envelope)
                && let Some(from) = current.take()
            {
                flush(from, i, &mut messages)?;
            }
            if name == b"MSH" {
                current = Some(i);
            } else if is_envelope {
                envelope.push(Segment::new(&input[span.range()], d, charset));
            } else if current.is_none() {
                return Err(Error::InvalidBatch {
                    offset: span.start as usize,
                    reason: "segment outside any message",
                });
            }
        }
        if let Some(from) = current {
            flush(from, spans.len(), &mut messages)?;
        }
        Ok(Batch { envelope, messages })
    }

    /// The messages, in file order.
    pub fn messages(&self) -> &[Message<'a>] {
        &self.messages
    }

    /// Takes the messages out.
    pub fn into_messages(self) -> Vec<Message<'a>> {
        self.messages
    }

    /// The FHS, BHS, BTS and FTS segments, in file order.
    pub fn envelope(&self) -> &[Segment<'a>] {
        &self.envelope
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BATCH: &[u8] = b"FHS|^~\\&|SENDER|FAC\rBHS|^~\\&|SENDER|FAC\rMSH|^~\\&|A|B|C|D|1||ADT^A01|M1|P|2.5\rPID|1||111\rMSH|^~\\&|A|B|C|D|1||ADT^A08|M2|P|2.5\rPID|1||222\rNTE|1\rBTS|2\rFTS|1\r";

    #[test]
    fn splits_messages() {
        let b = Batch::parse(BATCH).unwrap();
        assert_eq!(b.messages().len(), 2);
        assert_eq!(b.messages()[0].control_id().raw(), b"M1");
        assert_eq!(b.messages()[1].segment_count(), 3);
        assert_eq!(b.messages()[1].get("PID-3").unwrap().raw(), b"222");
        let env: Vec<_> = b.envelope().iter().map(|s| s.name()).collect();
        assert_eq!(env, ["FHS", "BHS", "BTS", "FTS"]);
        assert_eq!(b.envelope()[0].field(3).raw(), b"SENDER");
        assert_eq!(
            b.messages()[0].raw(),
            b"MSH|^~\\&|A|B|C|D|1||ADT^A01|M1|P|2.5\rPID|1||111"
        );
    }

    #[test]
    fn plain_multi_message_file_with_lf() {
        let input = b"MSH|^~\\&|A\nPID|1\n\nMSH|^~\\&|B\nPID|2\n";
        let b = Batch::parse(input).unwrap();
        assert_eq!(b.messages().len(), 2);
        assert!(b.envelope().is_empty());
    }

    #[test]
    fn stray_segment_is_an_error() {
        let input = b"FHS|^~\\&|A\rPID|1\r";
        assert!(matches!(
            Batch::parse(input),
            Err(Error::InvalidBatch { offset: 11, .. })
        ));
        assert!(matches!(Batch::parse(b"PID|1"), Err(Error::NoMsh { .. })));
    }

    #[test]
    fn empty_batch() {
        let b = Batch::parse(b"BHS|^~\\&|A\rBTS|0\r").unwrap();
        assert!(b.messages().is_empty());
    }
}
