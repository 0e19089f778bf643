//! Numbers, units, structured numerics (SN) and reference ranges.

use serde_json::Number;

use crate::model::{Decimal, ObsValue, Quantity, RefRange, Unit};
use crate::ucum::is_ucum;

/// More significant digits than this do not survive a JSON number (an IEEE double).
const MAX_DIGITS: usize = 15;

/// Reads an HL7 NM (`[+|-]digits[.digits]`, leading zeros allowed, `.5` and `5.` too) as a FHIR
/// decimal. `None` when it is not one.
pub(crate) fn decimal(text: &str) -> Option<Decimal> {
    let t = text.trim();
    let (negative, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let int = int.trim_start_matches('0');
    if int.len() + frac.len() > MAX_DIGITS {
        return None;
    }
    let int = if int.is_empty() { "0" } else { int };
    let zero = int == "0" && frac.bytes().all(|b| b == b'0');
    let sign = if negative && !zero { "-" } else { "" };
    if frac.is_empty() {
        let n: i64 = format!("{sign}{int}").parse().ok()?;
        return Some(Decimal {
            number: Number::from(n),
            precision: None,
        });
    }
    let v: f64 = format!("{sign}{int}.{frac}").parse().ok()?;
    let number = Number::from_f64(v)?;
    // The JSON number drops trailing zeros (5.40 → 5.4): say how many decimals there were.
    let shown = number
        .to_string()
        .split_once('.')
        .map_or(0, |(_, f)| f.len());
    let precision = (shown < frac.len()).then_some(frac.len() as u32);
    Some(Decimal { number, precision })
}

/// A comparator as written in SN-1, ASTM values and ranges → the FHIR `Quantity.comparator`.
/// `Some(None)` for `=`.
fn comparator(c: &str) -> Option<Option<&'static str>> {
    match c.trim() {
        "" | "=" => Some(None),
        "<" => Some(Some("<")),
        "<=" => Some(Some("<=")),
        ">=" => Some(Some(">=")),
        ">" => Some(Some(">")),
        _ => None,
    }
}

/// `<5`, `>= 10`, `5.4`: a number with an optional comparator in front.
pub(crate) fn compared_number(text: &str) -> Option<(Option<&'static str>, Decimal)> {
    let t = text.trim();
    let split = t
        .find(|c: char| !matches!(c, '<' | '>' | '='))
        .unwrap_or(t.len());
    let (c, n) = t.split_at(split);
    Some((comparator(c)?, decimal(n)?))
}

/// A unit from its code (CWE-1 / ASTM R.5), text (CWE-2) and coding system (CWE-3). It is UCUM
/// when the code parses as UCUM and no other coding system is named.
pub(crate) fn unit(code: &str, text: &str, system: &str) -> Option<Unit> {
    let (code, text, system) = (code.trim(), text.trim(), system.trim());
    if code.is_empty() && text.is_empty() {
        return None;
    }
    let ucum_allowed = system.is_empty() || system.eq_ignore_ascii_case("UCUM");
    let ucum = (ucum_allowed && is_ucum(code)).then(|| code.to_owned());
    let text = if text.is_empty() { code } else { text };
    Some(Unit {
        text: text.to_owned(),
        ucum,
    })
}

fn quantity(value: Decimal, comparator: Option<&'static str>, unit: &Option<Unit>) -> Quantity {
    Quantity {
        value,
        comparator,
        unit: unit.clone(),
    }
}

/// An HL7 SN (`comparator ^ num1 ^ separator/suffix ^ num2`) as the V2-to-FHIR guide maps it:
/// a Quantity (`<5`), a Range (`10-20`), a Ratio (`1:128`, `1/2`), else a string. `None`: not
/// a structured numeric.
pub(crate) fn structured_numeric(parts: [&str; 4], unit: &Option<Unit>) -> Option<ObsValue> {
    let [c, n1, sep, n2] = parts.map(str::trim);
    let original = || {
        Some(
            [c, n1, sep, n2]
                .iter()
                .filter(|p| !p.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(" "),
        )
    };
    if c == "<>" || sep == "+" || sep == "." {
        let text = original()?;
        return (!text.is_empty()).then_some(ObsValue::String(text));
    }
    let cmp = comparator(c)?;
    let first = decimal(n1);
    match sep {
        "" if n2.is_empty() => Some(ObsValue::Quantity(quantity(first?, cmp, unit))),
        "-" if cmp.is_none() => Some(ObsValue::Range {
            low: Some(quantity(first?, None, unit)),
            high: Some(quantity(decimal(n2)?, None, unit)),
            original: original(),
        }),
        ":" | "/" => Some(ObsValue::Ratio {
            numerator: quantity(first?, cmp, unit),
            denominator: quantity(decimal(n2)?, None, &None),
            original: original(),
        }),
        _ => None,
    }
}

/// OBX-7 / ASTM R.6: always the text; low and high when it reads as `a-b`, `a - b`, `a to b`,
/// `<b`, `<=b`, `>a` or `>=a`.
pub(crate) fn reference_range(text: &str, unit: &Option<Unit>) -> Option<RefRange> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    let mut range = RefRange {
        low: None,
        high: None,
        text: t.to_owned(),
    };
    let q = |d: Decimal| Some(quantity(d, None, unit));
    if let Some((c @ Some(_), n)) = compared_number(t) {
        if matches!(c, Some("<" | "<=")) {
            range.high = q(n);
        } else {
            range.low = q(n);
        }
        return Some(range);
    }
    let split = |sep: &str| {
        t.match_indices(sep).find_map(|(i, _)| {
            let (a, b) = (t[..i].trim(), t[i + sep.len()..].trim());
            if a.is_empty() {
                return None;
            }
            Some((decimal(a)?, decimal(b)?))
        })
    };
    if let Some((low, high)) = split(" to ").or_else(|| split("-")) {
        range.low = q(low);
        range.high = q(high);
    }
    Some(range)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> String {
        let d = decimal(s).unwrap();
        format!(
            "{}{}",
            d.number,
            d.precision.map(|p| format!("/{p}")).unwrap_or_default()
        )
    }

    #[test]
    fn nm_values() {
        assert_eq!(d("5.4"), "5.4");
        assert_eq!(d("5.40"), "5.4/2");
        assert_eq!(d("+007"), "7");
        assert_eq!(d(".5"), "0.5");
        assert_eq!(d("5."), "5");
        assert_eq!(d("-0.0"), "0.0");
        assert_eq!(d("-12.25"), "-12.25");
        assert_eq!(d("105600"), "105600");
        assert_eq!(d("0.10"), "0.1/2");
        for bad in [
            "",
            ".",
            "-",
            "1e3",
            "5,4",
            "abc",
            "1.2.3",
            "1234567890123456",
            "< 5",
        ] {
            assert!(decimal(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn units() {
        assert_eq!(
            unit("mmol/L", "", "").unwrap().ucum.as_deref(),
            Some("mmol/L")
        );
        let u = unit("10*3/uL", "thousand per microliter", "UCUM").unwrap();
        assert_eq!(
            (u.text.as_str(), u.ucum.as_deref()),
            ("thousand per microliter", Some("10*3/uL"))
        );
        assert_eq!(unit("tera.l-1", "", "").unwrap().ucum, None);
        // Another coding system is named: not claimed as UCUM.
        assert_eq!(unit("mg", "", "ISO+").unwrap().ucum, None);
        assert!(unit("", "", "UCUM").is_none());
    }

    #[test]
    fn sn_forms() {
        let none = None;
        assert!(matches!(
            structured_numeric(["<", "5", "", ""], &none),
            Some(ObsValue::Quantity(Quantity {
                comparator: Some("<"),
                ..
            }))
        ));
        assert!(matches!(
            structured_numeric(["", "182", "", ""], &none),
            Some(ObsValue::Quantity(Quantity {
                comparator: None,
                ..
            }))
        ));
        assert!(matches!(
            structured_numeric(["", "10", "-", "20"], &none),
            Some(ObsValue::Range { .. })
        ));
        assert!(matches!(
            structured_numeric(["", "1", ":", "128"], &none),
            Some(ObsValue::Ratio { .. })
        ));
        assert_eq!(
            structured_numeric(["", "2", "+", ""], &none),
            Some(ObsValue::String("2 +".into()))
        );
        assert_eq!(
            structured_numeric(["<>", "1", "", ""], &none),
            Some(ObsValue::String("<> 1".into()))
        );
        assert!(structured_numeric(["~", "1", "", ""], &none).is_none());
        assert!(structured_numeric(["", "x", "", ""], &none).is_none());
        assert!(structured_numeric([">", "1", "-", "2"], &none).is_none());
    }

    #[test]
    fn ranges() {
        let r = reference_range("3.9-6.1", &None).unwrap();
        assert!(r.low.is_some() && r.high.is_some());
        let r = reference_range("4300 to 10800", &None).unwrap();
        assert_eq!(r.high.unwrap().value.number.to_string(), "10800");
        let r = reference_range("-5 - -1", &None).unwrap();
        assert_eq!(r.low.unwrap().value.number.to_string(), "-5");
        let r = reference_range("<5", &None).unwrap();
        assert!(r.low.is_none() && r.high.is_some());
        let r = reference_range(">= 60", &None).unwrap();
        assert!(r.low.is_some() && r.high.is_none());
        let r = reference_range("negative", &None).unwrap();
        assert_eq!((r.text.as_str(), r.low, r.high), ("negative", None, None));
        assert!(reference_range(" ", &None).is_none());
    }
}
