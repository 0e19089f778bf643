//! [`Path`]: the one path syntax, `PID-5-1`, `PID.5.1`, `OBX(2)-5`, `PID-3[2]-1`.

use std::str::FromStr;

use crate::{Error, Segment, Value};

/// A parsed path to a value.
///
/// Syntax (all numbers 1-based, `-` and `.` interchangeable as separators):
///
/// ```text
/// SEG[occurrence]-FIELD[repetition]-COMPONENT-SUBCOMPONENT
/// ```
///
/// - `SEG` is the three-character segment ID; `(n)` or `[n]` after it picks the n-th segment
///   of that name (default the first): `OBX(2)-5`, `OBX[2].5`.
/// - `FIELD` is numbered as the standard does: `MSH-1` is the field separator, `MSH-3` the
///   sending application.
/// - `(n)` or `[n]` after the field picks a repetition: `PID-3[2]-1`. Without one, a path that
///   stops at the field returns the whole field (every repetition, every component), and a path
///   that goes on to a component reads the first repetition.
/// - `COMPONENT` and `SUBCOMPONENT` are optional: `PID-5` is the whole name, `PID-5-1` the family
///   name, `PID-5-1-1` its first subcomponent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Path {
    segment: String,
    occurrence: usize,
    field: usize,
    repetition: Option<usize>,
    component: Option<usize>,
    subcomponent: Option<usize>,
}

impl Path {
    /// The segment ID.
    pub fn segment(&self) -> &str {
        &self.segment
    }

    /// Which segment of that name (1-based).
    pub fn occurrence(&self) -> usize {
        self.occurrence
    }

    /// The field number.
    pub fn field(&self) -> usize {
        self.field
    }

    /// The repetition, if the path names one.
    pub fn repetition(&self) -> Option<usize> {
        self.repetition
    }

    /// The component, if the path names one.
    pub fn component(&self) -> Option<usize> {
        self.component
    }

    /// The subcomponent, if the path names one.
    pub fn subcomponent(&self) -> Option<usize> {
        self.subcomponent
    }

    /// Applies the field/repetition/component/subcomponent part of the path to a segment.
    pub fn select<'m>(&self, seg: Segment<'m>) -> Value<'m> {
        let mut v = seg.field(self.field);
        if let Some(r) = self.repetition {
            v = v.repetition(r);
        }
        if let Some(c) = self.component {
            v = v.component(c);
        }
        if let Some(s) = self.subcomponent {
            v = v.subcomponent(s);
        }
        v
    }
}

impl FromStr for Path {
    type Err = Error;

    fn from_str(s: &str) -> Result<Path, Error> {
        let err = |reason| Error::InvalidPath {
            path: s.to_owned(),
            reason,
        };
        let b = s.as_bytes();
        if b.len() < 3
            || !b[..3]
                .iter()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        {
            return Err(err(
                "must start with a three-character segment ID such as PID",
            ));
        }
        let mut cur = Cursor { b, pos: 3 };
        let occurrence = cur.index().map_err(err)?.unwrap_or(1);
        if !cur.separator() {
            return Err(err(
                "expected '-' or '.' and a field number after the segment ID",
            ));
        }
        let field = cur.number().map_err(err)?;
        let repetition = cur.index().map_err(err)?;
        let mut parts = [None, None];
        for part in &mut parts {
            if !cur.separator() {
                break;
            }
            *part = Some(cur.number().map_err(err)?);
        }
        if cur.pos != b.len() {
            return Err(err("unexpected characters after the path"));
        }
        Ok(Path {
            segment: s[..3].to_owned(),
            occurrence,
            field,
            repetition,
            component: parts[0],
            subcomponent: parts[1],
        })
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.segment)?;
        if self.occurrence != 1 {
            write!(f, "({})", self.occurrence)?;
        }
        write!(f, "-{}", self.field)?;
        if let Some(r) = self.repetition {
            write!(f, "[{r}]")?;
        }
        for part in [self.component, self.subcomponent].into_iter().flatten() {
            write!(f, "-{part}")?;
        }
        Ok(())
    }
}

struct Cursor<'s> {
    b: &'s [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn separator(&mut self) -> bool {
        if matches!(self.b.get(self.pos), Some(b'-' | b'.')) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// A 1-based number.
    fn number(&mut self) -> Result<usize, &'static str> {
        let start = self.pos;
        while self.b.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        let digits = std::str::from_utf8(&self.b[start..self.pos]).unwrap_or("");
        match digits.parse::<usize>() {
            Ok(0) => Err("numbers in a path start at 1"),
            Ok(n) => Ok(n),
            Err(_) if digits.is_empty() => Err("expected a number"),
            Err(_) => Err("number too large"),
        }
    }

    /// An optional `(n)` or `[n]`.
    fn index(&mut self) -> Result<Option<usize>, &'static str> {
        let close = match self.b.get(self.pos) {
            Some(b'(') => b')',
            Some(b'[') => b']',
            _ => return Ok(None),
        };
        self.pos += 1;
        let n = self.number()?;
        if self.b.get(self.pos) != Some(&close) {
            return Err("unclosed index");
        }
        self.pos += 1;
        Ok(Some(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Path {
        s.parse().unwrap()
    }

    #[test]
    fn forms() {
        let a = p("PID-5-1");
        assert_eq!((a.segment(), a.field(), a.component()), ("PID", 5, Some(1)));
        assert_eq!(p("PID.5.1"), a);
        let o = p("OBX(2)-5");
        assert_eq!((o.occurrence(), o.field()), (2, 5));
        assert_eq!(p("OBX[2].5"), o);
        let r = p("PID-3[2]-1");
        assert_eq!((r.repetition(), r.component()), (Some(2), Some(1)));
        assert_eq!(p("MSH-9-2").component(), Some(2));
        assert_eq!(p("PID-5-1-2").subcomponent(), Some(2));
        assert_eq!(p("ZB1-1").segment(), "ZB1");
    }

    #[test]
    fn display_round_trips() {
        for s in ["PID-5-1", "OBX(2)-5", "PID-3[2]-1", "PID-5-1-2"] {
            assert_eq!(p(s).to_string(), s);
        }
    }

    #[test]
    fn errors() {
        for s in [
            "",
            "PI",
            "pid-5",
            "PID",
            "PID-",
            "PID-0",
            "PID-5-",
            "PID(2-5",
            "PID-5-1-1-1",
            "PID-x",
            "PID-99999999999999999999999",
        ] {
            assert!(s.parse::<Path>().is_err(), "{s}");
        }
    }
}
