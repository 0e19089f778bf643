//! [`Value`]: a field, repetition, component or subcomponent, as a slice of the message.

use std::borrow::Cow;

use crate::{
    Charset, Delimiters,
    escape::unescape,
    segment::{Pieces, nth},
};

/// How deep in the field hierarchy a [`Value`] sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// A whole field, with every repetition.
    Field,
    /// One repetition of a field.
    Repetition,
    /// One component.
    Component,
    /// One subcomponent.
    Subcomponent,
}

/// A field, repetition, component or subcomponent: a slice of the message plus what is needed to
/// split and decode it.
///
/// Reading deeper always works: `component(1)` of a field is the first component of its first
/// repetition, and `component(1)` of a component is the component itself (a value without
/// deeper structure is its own first part). Anything absent is empty.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Value<'m> {
    raw: &'m [u8],
    d: Delimiters,
    charset: Charset,
    level: Level,
    /// MSH-1, MSH-2 and segment IDs: never split, never unescaped.
    literal: bool,
}

impl<'m> Value<'m> {
    pub(crate) fn new(
        raw: &'m [u8],
        d: Delimiters,
        charset: Charset,
        level: Level,
        literal: bool,
    ) -> Self {
        Value {
            raw,
            d,
            charset,
            level,
            literal,
        }
    }

    pub(crate) fn empty(d: Delimiters, charset: Charset) -> Self {
        Value::new(b"", d, charset, Level::Field, false)
    }

    /// The bytes as they are in the message (escaped).
    pub fn raw(&self) -> &'m [u8] {
        self.raw
    }

    /// Whether the value is empty (absent).
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Whether the value is the explicit HL7 null `""` (delete this value in the receiver).
    pub fn is_null(&self) -> bool {
        self.raw == b"\"\""
    }

    /// The level this value was read at.
    pub fn level(&self) -> Level {
        self.level
    }

    fn child(&self, raw: &'m [u8], level: Level) -> Value<'m> {
        Value::new(raw, self.d, self.charset, level, false)
    }

    /// Descends to `level`, picking piece `n` (1-based) split on `sep` when this value is exactly
    /// one level above, and the first piece of every level in between.
    fn descend(&self, level: Level, n: usize) -> Value<'m> {
        if n == 0 {
            return self.child(b"", level);
        }
        if self.literal || self.level >= level {
            // A value has no deeper structure at this level: it is its own first part.
            return if n == 1 {
                Value {
                    level: self.level.max(level),
                    ..*self
                }
            } else {
                self.child(b"", level)
            };
        }
        let (parent_level, sep) = match level {
            Level::Field => return *self,
            Level::Repetition => (Level::Field, Some(self.d.repetition)),
            Level::Component => (Level::Repetition, Some(self.d.component)),
            Level::Subcomponent => (Level::Component, self.d.subcomponent),
        };
        let parent = if self.level == parent_level {
            *self
        } else {
            self.descend(parent_level, 1)
        };
        match sep {
            Some(sep) => parent.child(nth(parent.raw, sep, n - 1), level),
            // No subcomponent separator (three-character MSH-2): a component is its only part.
            None if n == 1 => parent.child(parent.raw, level),
            None => parent.child(b"", level),
        }
    }

    /// Repetition `n` (1-based) of a field.
    pub fn repetition(&self, n: usize) -> Value<'m> {
        self.descend(Level::Repetition, n)
    }

    /// Component `n` (1-based); of a field, the component of its first repetition.
    pub fn component(&self, n: usize) -> Value<'m> {
        self.descend(Level::Component, n)
    }

    /// Subcomponent `n` (1-based); of a field or repetition, the subcomponent of its first component.
    pub fn subcomponent(&self, n: usize) -> Value<'m> {
        self.descend(Level::Subcomponent, n)
    }

    fn pieces(self, level: Level, sep: Option<u8>) -> Values<'m> {
        match sep {
            Some(sep) if !self.literal && self.level < level => Values {
                parent: self,
                level,
                pieces: Pieces::new(self.raw, sep),
                whole: false,
            },
            Some(_) => Values {
                parent: self,
                level,
                pieces: Pieces::done(),
                whole: true,
            },
            // No separator at this level: the value is its own only part.
            None => Values {
                parent: Value { level, ..self },
                level,
                pieces: Pieces::done(),
                whole: true,
            },
        }
    }

    /// Every repetition of a field (one for a field without repetitions).
    pub fn repetitions(&self) -> Values<'m> {
        self.pieces(Level::Repetition, Some(self.d.repetition))
    }

    /// Every component of this repetition (of the first repetition, for a field).
    pub fn components(&self) -> Values<'m> {
        let base = if self.level < Level::Repetition {
            self.repetition(1)
        } else {
            *self
        };
        base.pieces(Level::Component, Some(self.d.component))
    }

    /// Every subcomponent of this component (of the first component, for a field or repetition).
    pub fn subcomponents(&self) -> Values<'m> {
        let base = if self.level < Level::Component {
            self.component(1)
        } else {
            *self
        };
        base.pieces(Level::Subcomponent, self.d.subcomponent)
    }

    /// The bytes the value stands for, escape sequences decoded (see [`unescape`]). `\Xhh\` may
    /// produce bytes that are not UTF-8. Delimiters inside the value (a field read whole) are
    /// left as they are.
    pub fn unescaped(&self) -> Cow<'m, [u8]> {
        if self.literal {
            Cow::Borrowed(self.raw)
        } else {
            unescape(self.raw, &self.d)
        }
    }

    /// The value as text: escapes decoded, then bytes decoded with the message's character set.
    pub fn text(&self) -> Cow<'m, str> {
        self.text_as(self.charset)
    }

    /// The value as text in a character set the caller names, overriding MSH-18.
    pub fn text_as(&self, charset: Charset) -> Cow<'m, str> {
        match self.unescaped() {
            Cow::Borrowed(b) => charset.decode(b),
            Cow::Owned(b) => Cow::Owned(charset.decode(&b).into_owned()),
        }
    }
}

/// Iterator over the repetitions, components or subcomponents of a [`Value`].
#[derive(Debug, Clone)]
pub struct Values<'m> {
    parent: Value<'m>,
    level: Level,
    pieces: Pieces<'m>,
    /// The parent has no structure at this level: yield it once, whole.
    whole: bool,
}

impl<'m> Iterator for Values<'m> {
    type Item = Value<'m>;

    #[inline]
    fn next(&mut self) -> Option<Value<'m>> {
        if self.whole {
            self.whole = false;
            self.pieces = Pieces::done();
            return Some(self.parent);
        }
        let raw = self.pieces.next()?;
        Some(self.parent.child(raw, self.level))
    }
}

impl std::fmt::Debug for Value<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Value({:?}, {:?})",
            self.level,
            String::from_utf8_lossy(self.raw)
        )
    }
}

impl std::fmt::Display for Value<'_> {
    /// The value as [`text`](Value::text).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(raw: &[u8]) -> Value<'_> {
        Value::new(
            raw,
            Delimiters::default(),
            Charset::Auto,
            Level::Field,
            false,
        )
    }

    #[test]
    fn hierarchy() {
        let f = field(b"a1^a2&x&y~b1^b2");
        assert_eq!(f.repetition(1).raw(), b"a1^a2&x&y");
        assert_eq!(f.repetition(2).raw(), b"b1^b2");
        assert_eq!(f.repetition(3).raw(), b"");
        assert_eq!(f.component(2).raw(), b"a2&x&y");
        assert_eq!(f.repetition(2).component(2).raw(), b"b2");
        assert_eq!(f.component(2).subcomponent(2).raw(), b"x");
        assert_eq!(f.subcomponent(1).raw(), b"a1");
        assert_eq!(f.component(1).component(1).raw(), b"a1");
        assert_eq!(f.component(1).component(2).raw(), b"");
        assert_eq!(f.component(0).raw(), b"");
        assert_eq!(f.repetitions().count(), 2);
        assert_eq!(
            f.components().map(|c| c.raw()).collect::<Vec<_>>(),
            [&b"a1"[..], b"a2&x&y"]
        );
        assert_eq!(f.component(2).subcomponents().count(), 3);
    }

    #[test]
    fn text_decodes_escapes_and_charset() {
        let f = Value::new(
            br"Jos\Xe9\ \T\ Co",
            Delimiters::default(),
            Charset::Latin1,
            Level::Field,
            false,
        );
        assert_eq!(f.text(), "José & Co");
        let u = field("Zoë".as_bytes());
        assert!(matches!(u.text(), Cow::Borrowed("Zoë")));
        let w = field(b"Zo\xeb");
        assert_eq!(w.text(), "Zoë");
        assert_eq!(w.text_as(Charset::Utf8), "Zo\u{fffd}");
    }

    #[test]
    fn null_value() {
        assert!(field(b"\"\"").is_null());
        assert!(!field(b"").is_null());
    }
}
