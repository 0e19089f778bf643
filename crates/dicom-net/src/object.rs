//! What a file (or a buffer) holds, found before anything is sent: its meta group if it has
//! one, the transfer syntax (named by the meta group, or told from the first element the way
//! dcmtk does for a bare data set), the SOP Class and Instance UIDs *of the data set*, and
//! whether any value has odd length. Only element headers are read; values are skipped (a file
//! is sought past them), so pixel data is never held in memory.

use crate::Error;
use crate::part10::{FileMeta, MAX_META, meta_without_preamble, read_group};
use crate::reader::{ElementReader, Kind, Token, is_standard_vr};
use crate::transcode::Inflater;
use crate::uids::{self, Encoding, transfer_syntax_name};

/// (0008,0016) SOP Class UID.
const SOP_CLASS: u32 = 0x0008_0016;
/// (0008,0018) SOP Instance UID.
const SOP_INSTANCE: u32 = 0x0008_0018;

/// A file or buffer ready to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// The meta group, when there is one.
    pub meta: Option<FileMeta>,
    /// Where the data set starts.
    pub data_offset: u64,
    /// The data set's length as stored (deflated, for Deflate).
    pub data_length: u64,
    /// The data set's transfer syntax.
    pub transfer_syntax: String,
    /// (0008,0016) of the data set: what the C-STORE names.
    pub sop_class: String,
    /// (0008,0018) of the data set.
    pub sop_instance: String,
    /// How many values (and pixel data fragments) have odd length: they are sent padded.
    pub odd_values: u32,
    /// How it was read, for a verbose listing ("no meta header; read as ...").
    pub notes: Vec<String>,
    /// Defects that do not stop it being sent (the meta group and the data set disagree).
    pub warnings: Vec<String>,
}

/// Tells the encoding of a data set without a meta group from its first element, as dcmtk
/// does: explicit when bytes 4-5 are a VR, and then the byte order that reads the smaller
/// group number; implicit (little endian) otherwise.
pub fn detect_encoding(b: &[u8]) -> Option<Encoding> {
    let h = b.get(..8)?;
    if is_standard_vr([h[4], h[5]]) {
        let le = u16::from_le_bytes([h[0], h[1]]);
        let be = u16::from_be_bytes([h[0], h[1]]);
        Some(if le <= be {
            Encoding::EXPLICIT_LE
        } else {
            Encoding::EXPLICIT_BE
        })
    } else {
        Some(Encoding::IMPLICIT_LE)
    }
}

/// The sans-IO inspection: [`Inspection::start`] with the first bytes of the file, then
/// [`Inspection::feed`] with the data set's bytes, skipping what it says to skip, then
/// [`Inspection::finish`].
#[derive(Debug)]
pub struct Inspection {
    object: Object,
    reader: ElementReader,
    inflater: Option<Inflater>,
    inflated: Vec<u8>,
    capture: Option<u32>,
    class: Vec<u8>,
    instance: Vec<u8>,
    in_fragments: bool,
}

/// Largest UID value read (PS3.5 §9: 64 characters).
const MAX_UID: u32 = 64;

impl Inspection {
    /// Reads the meta group (or detects the encoding) from `head`, the first bytes of a file of
    /// `total` bytes (at least 64 KiB of it, or all of it when smaller). The data set starts at
    /// the returned inspection's `data_offset()`.
    ///
    /// # Errors
    /// [`Error::NotPart10`] for a meta group that does not fit in 64 KiB, or a file too short to
    /// hold a data set.
    pub fn start(head: &[u8], total: u64) -> Result<Inspection, Error> {
        let mut notes = Vec::new();
        let (meta, offset) = if head.get(128..132) == Some(b"DICM") {
            let (m, end) = read_group(head, 132)?;
            (Some(m), end)
        } else if meta_without_preamble(head) {
            notes.push("no preamble: the meta group starts the file".to_owned());
            let (m, end) = read_group(head, 0)?;
            (Some(m), end)
        } else {
            (None, 0)
        };
        if offset >= MAX_META && head.len() >= MAX_META {
            return Err(Error::NotPart10(format!(
                "no complete meta group in the first {MAX_META} bytes"
            )));
        }
        let data = &head[offset.min(head.len())..];
        let ts = match &meta {
            Some(m) if !m.transfer_syntax.is_empty() => m.transfer_syntax.clone(),
            _ => {
                let enc = detect_encoding(data).ok_or_else(|| {
                    Error::NotPart10(format!(
                        "{} bytes after the meta group: too short for a data set",
                        data.len()
                    ))
                })?;
                let ts = enc.transfer_syntax().to_owned();
                notes.push(match &meta {
                    None => format!("no meta header; read as {}", transfer_syntax_name(&ts)),
                    Some(_) => format!(
                        "the meta header names no transfer syntax; read as {}",
                        transfer_syntax_name(&ts)
                    ),
                });
                ts
            }
        };
        let syntax = uids::syntax(&ts);
        let data_length = total.saturating_sub(offset as u64);
        Ok(Inspection {
            object: Object {
                meta,
                data_offset: offset as u64,
                data_length,
                transfer_syntax: ts,
                sop_class: String::new(),
                sop_instance: String::new(),
                odd_values: 0,
                notes,
                warnings: Vec::new(),
            },
            reader: ElementReader::new(syntax.encoding, (!syntax.deflated).then_some(data_length)),
            inflater: syntax.deflated.then(Inflater::new),
            inflated: Vec::new(),
            capture: None,
            class: Vec::new(),
            instance: Vec::new(),
            in_fragments: false,
        })
    }

    /// Where the data set starts in the file.
    pub fn data_offset(&self) -> u64 {
        self.object.data_offset
    }

    /// Takes data-set bytes: returns how many it used and how many following bytes the caller
    /// should skip without reading (a value nobody needs). `(0, 0)`: it needs more bytes.
    ///
    /// # Errors
    /// [`Error::DataSet`] when the bytes are not a data set in the syntax.
    pub fn feed(&mut self, input: &[u8]) -> Result<(usize, u64), Error> {
        if let Some(mut inf) = self.inflater.take() {
            let mut at = 0;
            let result = loop {
                let used = match inf.push(&input[at..], &mut self.inflated) {
                    Ok(n) => n,
                    Err(e) => break Err(e),
                };
                at += used;
                let buf = std::mem::take(&mut self.inflated);
                let step = self.tokens(&buf, true);
                self.inflated = buf;
                match step {
                    Ok((n, _)) => {
                        self.inflated.drain(..n);
                    }
                    Err(e) => break Err(e),
                }
                if used == 0 || at == input.len() {
                    break Ok((at, 0));
                }
            };
            self.inflater = Some(inf);
            return result;
        }
        self.tokens(input, false)
    }

    fn tokens(&mut self, input: &[u8], keep_all: bool) -> Result<(usize, u64), Error> {
        let mut at = 0;
        while let Some((token, n)) = self.reader.next(&input[at..])? {
            at += n;
            match token {
                Token::Element(h) => {
                    if h.kind == Kind::Encapsulated {
                        self.in_fragments = true;
                    }
                    if h.kind != Kind::Primitive {
                        continue;
                    }
                    let len = h.length.unwrap_or(0);
                    if len % 2 == 1 {
                        self.object.odd_values += 1;
                    }
                    if h.depth == 0
                        && (h.tag == SOP_CLASS || h.tag == SOP_INSTANCE)
                        && len <= MAX_UID
                    {
                        self.capture = Some(h.tag);
                        continue;
                    }
                    self.capture = None;
                    if let Some(skip) = self.skip(input.len() - at, keep_all) {
                        at += skip.0;
                        if skip.1 > 0 {
                            return Ok((input.len(), skip.1));
                        }
                    }
                }
                Token::Value(v) => match self.capture {
                    Some(SOP_CLASS) => self.class.extend_from_slice(v),
                    Some(_) => self.instance.extend_from_slice(v),
                    None => {}
                },
                Token::Item { length } => {
                    if self.in_fragments && length.is_some_and(|l| l % 2 == 1) {
                        self.object.odd_values += 1;
                    }
                    if self.in_fragments
                        && let Some(skip) = self.skip(input.len() - at, keep_all)
                    {
                        at += skip.0;
                        if skip.1 > 0 {
                            return Ok((input.len(), skip.1));
                        }
                    }
                }
                Token::SequenceEnd => self.in_fragments = false,
                Token::ItemEnd => {}
            }
        }
        Ok((at, 0))
    }

    /// Skips the current value: how much of the `here` bytes at hand it covers, and how many
    /// more the caller must skip. Inflated bytes are not skipped (the reader hands the value
    /// out piece by piece instead, and it is ignored).
    fn skip(&mut self, here: usize, inflated: bool) -> Option<(usize, u64)> {
        if inflated {
            return None;
        }
        let n = self.reader.skip_value();
        let here = here as u64;
        Some(if n <= here {
            (n as usize, 0)
        } else {
            (here as usize, n - here)
        })
    }

    /// Ends the inspection. `unread`: bytes given to `feed` but not used.
    ///
    /// # Errors
    /// [`Error::DataSet`] for a truncated data set; [`Error::Object`] when the data set has no
    /// SOP Class or Instance UID (a C-STORE needs both).
    pub fn finish(mut self, unread: usize) -> Result<Object, Error> {
        if let Some(inf) = &self.inflater {
            if !inf.finished() {
                return Err(Error::DataSet {
                    offset: self.reader.position() as usize,
                    reason: "deflated data set: the deflate stream is cut short".into(),
                });
            }
            self.reader.finish(self.inflated.len())?;
        } else {
            self.reader.finish(unread)?;
        }
        let text = |b: &[u8]| {
            String::from_utf8_lossy(b)
                .trim_end_matches(['\0', ' '])
                .trim()
                .to_owned()
        };
        let o = &mut self.object;
        o.sop_class = text(&self.class);
        o.sop_instance = text(&self.instance);
        for (what, tag, value) in [
            ("SOP Class UID", "(0008,0016)", &o.sop_class),
            ("SOP Instance UID", "(0008,0018)", &o.sop_instance),
        ] {
            if value.is_empty() {
                return Err(Error::Object(format!(
                    "the data set has no {what} {tag}: a C-STORE needs it"
                )));
            }
        }
        if let Some(m) = &o.meta {
            for (what, in_meta, in_data) in [
                ("SOP Class UID", &m.sop_class, &o.sop_class),
                ("SOP Instance UID", &m.sop_instance, &o.sop_instance),
            ] {
                if !in_meta.is_empty() && in_meta != in_data {
                    o.warnings.push(format!(
                        "the meta header's Media Storage {what} {in_meta} differs from the data set's {in_data}; the data set's is sent"
                    ));
                }
            }
        }
        if o.odd_values > 0 {
            o.notes.push(format!(
                "{} value{} of odd length, padded to even length (PS3.5 §7.1)",
                o.odd_values,
                if o.odd_values == 1 { "" } else { "s" }
            ));
        }
        Ok(self.object)
    }
}

/// Inspects a file held whole in memory (as the agent receives them).
///
/// # Errors
/// As [`Inspection::start`], [`Inspection::feed`] and [`Inspection::finish`].
pub fn inspect(bytes: &[u8]) -> Result<Object, Error> {
    let head = &bytes[..bytes.len().min(MAX_META)];
    let mut s = Inspection::start(head, bytes.len() as u64)?;
    let mut at = s.data_offset() as usize;
    loop {
        let (used, skip) = s.feed(&bytes[at..])?;
        at += used + skip as usize;
        if used == 0 && skip == 0 {
            break;
        }
    }
    s.finish(bytes.len().saturating_sub(at))
}

/// Inspects a file on disk: its first 64 KiB, then element headers only, seeking past values.
///
/// # Errors
/// As [`inspect`], and [`Error::Io`].
#[cfg(feature = "tokio")]
pub async fn inspect_file(path: &std::path::Path) -> Result<Object, Error> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};

    let mut f = tokio::fs::File::open(path).await?;
    let total = f.metadata().await?.len();
    let mut head = vec![0; (total as usize).min(MAX_META)];
    f.read_exact(&mut head).await?;
    let mut s = Inspection::start(&head, total)?;
    let mut pos = head.len() as u64;
    let mut buf = head.split_off((s.data_offset() as usize).min(head.len()));
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let (used, skip) = s.feed(&buf)?;
        buf.drain(..used);
        if skip > 0 {
            pos += skip;
            f.seek(std::io::SeekFrom::Start(pos)).await?;
        }
        if used == 0 && skip == 0 {
            let n = f.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            pos += n as u64;
            buf.extend_from_slice(&chunk[..n]);
        }
    }
    s.finish(buf.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_set(enc: Encoding) -> Vec<u8> {
        let mut ds = crate::DataSet::default();
        ds.set_text(SOP_CLASS, "1.2.840.10008.5.1.4.1.1.7");
        ds.set_text(SOP_INSTANCE, "2.25.77");
        ds.set_text(0x0010_0010, "Doe^J");
        let mut out = Vec::new();
        ds.write_encoded(enc, &mut out);
        out
    }

    #[test]
    fn bare_data_sets_in_each_encoding() {
        for (enc, name) in [
            (Encoding::IMPLICIT_LE, "Implicit VR Little Endian"),
            (Encoding::EXPLICIT_LE, "Explicit VR Little Endian"),
            (Encoding::EXPLICIT_BE, "Explicit VR Big Endian"),
        ] {
            let b = data_set(enc);
            assert_eq!(detect_encoding(&b), Some(enc));
            let o = inspect(&b).unwrap();
            assert_eq!(o.sop_instance, "2.25.77");
            assert_eq!(o.transfer_syntax, enc.transfer_syntax());
            assert!(o.meta.is_none());
            assert!(o.notes[0].contains(name), "{:?}", o.notes);
        }
    }

    #[test]
    fn the_data_set_wins_over_the_meta_group() {
        let meta = FileMeta {
            sop_class: "1.2.840.10008.5.1.4.1.1.2".into(),
            sop_instance: "2.25.1".into(),
            transfer_syntax: uids::EXPLICIT_VR_LE.into(),
        };
        let mut f = Vec::new();
        meta.encode(None, &mut f);
        f.extend_from_slice(&data_set(Encoding::EXPLICIT_LE));
        let o = inspect(&f).unwrap();
        assert_eq!(o.sop_class, "1.2.840.10008.5.1.4.1.1.7");
        assert_eq!(o.sop_instance, "2.25.77");
        assert_eq!(o.warnings.len(), 2, "{:?}", o.warnings);
        // truncated: refused before anything is sent
        assert!(matches!(
            inspect(&f[..f.len() - 3]),
            Err(Error::DataSet { .. })
        ));
        // no SOP instance: refused
        let mut g = Vec::new();
        meta.encode(None, &mut g);
        g.extend_from_slice(&[0x08, 0x00, 0x16, 0x00, b'U', b'I', 2, 0, b'1', 0]);
        assert!(matches!(inspect(&g), Err(Error::Object(_))));
    }
}
