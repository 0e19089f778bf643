//! [`SegmentValues`]: every value of a segment in one pass, for readers that want them all.
//!
//! Reading values through [`Segment::fields`](crate::Segment::fields) and the nested iterators
//! searches each level separately, so a value is looked at once per level. This walk finds every
//! separator of the segment in one pass instead, eight bytes at a time ("SWAR": each 64-bit word
//! is compared with the four separators at once, in plain safe Rust, with an exact test so no
//! byte is looked at twice), and hands out the subcomponents between them in order with where
//! they sit; the location is updated without branches.

use crate::{Charset, Delimiters, Value, value::Level};

/// Where a value sits in its segment, numbered from 1 as the standard numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    /// Field number (in `MSH`, 1 is the field separator itself and 2 the encoding characters).
    pub field: usize,
    /// Repetition within the field.
    pub repetition: usize,
    /// Component within the repetition.
    pub component: usize,
    /// Subcomponent within the component.
    pub subcomponent: usize,
}

impl Location {
    fn field(field: usize) -> Location {
        Location {
            field,
            repetition: 1,
            component: 1,
            subcomponent: 1,
        }
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;

/// The high bit of each byte of `word` that equals one of `seps` (each broadcast to eight
/// bytes), and no other bit: the exact zero-byte test (the low seven bits plus `0x7f` carry into
/// the high bit unless they are all zero), so no byte it flags needs checking again.
#[inline(always)]
fn separators(word: u64, seps: &[u64; 4]) -> u64 {
    let zero = |v: u64| !((v & LOW7).wrapping_add(LOW7) | v | LOW7);
    zero(word ^ seps[0]) | zero(word ^ seps[1]) | zero(word ^ seps[2]) | zero(word ^ seps[3])
}

/// Every subcomponent of every field of a segment, in order, with its [`Location`]; see
/// [`Segment::values`](crate::Segment::values).
#[derive(Debug, Clone)]
pub struct SegmentValues<'m> {
    raw: &'m [u8],
    d: Delimiters,
    charset: Charset,
    /// The four separators (the component separator twice when there is no subcomponent
    /// separator), each broadcast to a word.
    seps: [u64; 4],
    /// Start of the value being read.
    start: usize,
    /// Where it sits.
    loc: Location,
    /// Separator bits of the word at `word_at`, those before `start` cleared.
    mask: u64,
    word_at: usize,
    /// How many of the header's MSH-1 and MSH-2 are still to hand out (they are never split);
    /// the walk itself is already set up at MSH-3.
    header: u8,
    /// End of MSH-2 in a header.
    msh2_end: usize,
    done: bool,
}

impl<'m> SegmentValues<'m> {
    pub(crate) fn new(raw: &'m [u8], d: Delimiters, charset: Charset, header: bool) -> Self {
        let sub = d.subcomponent.unwrap_or(d.component);
        let seps = [d.field, d.component, d.repetition, sub].map(|s| u64::from(s) * ONES);
        // No fields at all when the segment is its ID alone.
        let done = raw.len() <= 3;
        let mut walk = SegmentValues {
            raw,
            d,
            charset,
            seps,
            start: 4,
            loc: Location::field(1),
            mask: 0,
            word_at: 4,
            header: 0,
            msh2_end: 4,
            done,
        };
        if done {
            return walk;
        }
        if header {
            // MSH-1 and MSH-2 first; the walk starts after MSH-2's end, at MSH-3, if any.
            let rest = &raw[4..];
            walk.header = 2;
            match memchr::memchr(d.field, rest) {
                Some(e) => {
                    walk.msh2_end = 4 + e;
                    walk.start = 4 + e + 1;
                    walk.word_at = walk.start;
                    walk.loc = Location::field(3);
                }
                None => {
                    walk.msh2_end = raw.len();
                    walk.done = true;
                    return walk;
                }
            }
        }
        walk.load();
        walk
    }

    #[inline(always)]
    fn value(&self, raw: &'m [u8], literal: bool) -> Value<'m> {
        Value::new(raw, self.d, self.charset, Level::Subcomponent, literal)
    }

    /// Loads the candidates of the word starting at `word_at` (padded past the end with a byte
    /// that is never a separator).
    #[inline(always)]
    fn load(&mut self) {
        let rest = self.raw.get(self.word_at..).unwrap_or_default();
        let word = match rest.first_chunk::<8>() {
            Some(w) => u64::from_le_bytes(*w),
            None => {
                let mut w = [0u8; 8];
                w[..rest.len()].copy_from_slice(rest);
                u64::from_le_bytes(w)
            }
        };
        self.mask = separators(word, &self.seps);
    }

    /// The next separator at or after `start`, if any.
    #[inline(always)]
    fn next_separator(&mut self) -> Option<(usize, u8)> {
        while self.mask == 0 {
            self.word_at += 8;
            if self.word_at >= self.raw.len() {
                return None;
            }
            self.load();
        }
        let p = self.word_at + (self.mask.trailing_zeros() / 8) as usize;
        self.mask &= self.mask - 1;
        self.raw.get(p).map(|&b| (p, b))
    }

    /// MSH-1, then MSH-2. Inlined, as everything `next` calls: a call that takes the walk by
    /// reference would keep its state in memory instead of registers (half the speed).
    #[inline(always)]
    fn header_value(&mut self) -> (Location, Value<'m>) {
        self.header -= 1;
        if self.header == 1 {
            (Location::field(1), self.value(&self.raw[3..4], true))
        } else {
            (
                Location::field(2),
                self.value(&self.raw[4..self.msh2_end], true),
            )
        }
    }
}

impl<'m> Iterator for SegmentValues<'m> {
    type Item = (Location, Value<'m>);

    #[inline(always)]
    fn next(&mut self) -> Option<(Location, Value<'m>)> {
        if self.header != 0 {
            return Some(self.header_value());
        }
        if self.done {
            return None;
        }
        let loc = self.loc;
        let Some((p, b)) = self.next_separator() else {
            self.done = true;
            return Some((loc, self.value(&self.raw[self.start..], false)));
        };
        let value = self.value(&self.raw[self.start..p], false);
        self.start = p + 1;
        // Which separator it is, as 0 or 1 each (exactly one is 1), and the location updated
        // without branches: which one comes next is as good as random to a branch predictor.
        let field = usize::from(b == self.d.field);
        let repetition = usize::from(b == self.d.repetition);
        let component = usize::from(b == self.d.component);
        let subcomponent = 1 - field - repetition - component;
        let l = &mut self.loc;
        l.field += field;
        l.repetition = if field == 1 {
            1
        } else {
            l.repetition + repetition
        };
        l.component = if field | repetition == 1 {
            1
        } else {
            l.component + component
        };
        l.subcomponent = if subcomponent == 1 {
            l.subcomponent + 1
        } else {
            1
        };
        Some((loc, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Segment;

    /// (field, repetition, component, subcomponent) and the raw value.
    type Leaves = Vec<((usize, usize, usize, usize), Vec<u8>)>;

    fn walk(raw: &[u8], d: Delimiters) -> Leaves {
        Segment::new(raw, d, Charset::Auto)
            .values()
            .map(|(l, v)| {
                (
                    (l.field, l.repetition, l.component, l.subcomponent),
                    v.raw().to_vec(),
                )
            })
            .collect()
    }

    /// The same, through the nested iterators.
    fn nested(raw: &[u8], d: Delimiters) -> Leaves {
        let mut out = Vec::new();
        for (f, field) in Segment::new(raw, d, Charset::Auto).fields().enumerate() {
            for (r, rep) in field.repetitions().enumerate() {
                for (c, comp) in rep.components().enumerate() {
                    for (s, sub) in comp.subcomponents().enumerate() {
                        out.push(((f + 1, r + 1, c + 1, s + 1), sub.raw().to_vec()));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn same_values_as_the_nested_iterators() {
        let d = Delimiters::default();
        for raw in [
            &b"PID|1||123^^^H&X&Y^MR~456^^^H^PI||DOE^JOHN|"[..],
            b"PID",
            b"PID|",
            b"ZZZ||||",
            b"MSH|^~\\&|APP|FAC|x^y~z&w",
            b"MSH|^~\\&",
            b"MSH|^~\\&|",
            b"NTE|1||a long value with no separators for more than eight bytes at all",
        ] {
            assert_eq!(
                walk(raw, d),
                nested(raw, d),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn header_fields_are_literal() {
        let d = Delimiters::default();
        let got = walk(b"MSH|^~\\&|A^B", d);
        assert_eq!(got[0], ((1, 1, 1, 1), b"|".to_vec()));
        assert_eq!(got[1], ((2, 1, 1, 1), b"^~\\&".to_vec()));
        assert_eq!(got[2], ((3, 1, 1, 1), b"A".to_vec()));
        assert_eq!(got[3], ((3, 1, 2, 1), b"B".to_vec()));
    }

    #[test]
    fn three_encoding_characters_have_no_subcomponents() {
        let d = Delimiters {
            subcomponent: None,
            ..Delimiters::default()
        };
        let raw = b"PID|1||R&D^X";
        assert_eq!(walk(raw, d), nested(raw, d));
        assert!(walk(raw, d).contains(&((3, 1, 1, 1), b"R&D".to_vec())));
    }

    #[test]
    fn near_misses_of_the_word_test_are_not_separators() {
        // `}` is `|` ^ 1 and `_` is `^` ^ 1: bytes the cheap zero-byte test may flag after a
        // real separator.
        let d = Delimiters::default();
        // `\xfc` is `|` with the high bit set, `\xde` `^`, `\xa6` `&`.
        for raw in [
            &b"ZZZ|}}}}}}}}|}_^_"[..],
            b"ZZZ|a|}|_^_~\x7f&'",
            b"ZZZ|\xfc\xde\xfe\xa6|\xfc^\xde~\x00&\xa6\xfc\xfc\xfc",
        ] {
            assert_eq!(
                walk(raw, d),
                nested(raw, d),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }
}
