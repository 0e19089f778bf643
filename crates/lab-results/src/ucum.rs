//! Is a unit string a UCUM code? A parser for the case-sensitive UCUM syntax (The Unified Code
//! for Units of Measure, §§1-7 and the grammar of its Appendix), with the prefixes and a table
//! of the atoms lab results use.
//!
//! The check errs on the safe side: a unit whose syntax is valid but that names an atom outside
//! the table is reported as not UCUM, and is then sent as unit text only — a FHIR `Quantity`
//! never claims `http://unitsofmeasure.org` for a code that is not one.

/// Prefixes (UCUM §10, table 1, and the binary prefixes of table 2), longest first.
const PREFIXES: &[&str] = &[
    "da", "Ki", "Mi", "Gi", "Ti", "Y", "Z", "E", "P", "T", "G", "M", "k", "h", "d", "c", "m", "u",
    "n", "p", "f", "a", "z", "y",
];

/// Atoms that take a prefix ("metric" in the UCUM tables).
const METRIC: &[&str] = &[
    // base units
    "m",
    "s",
    "g",
    "rad",
    "K",
    "C",
    "cd", //
    // SI and other metric units
    "mol",
    "sr",
    "Hz",
    "N",
    "Pa",
    "J",
    "W",
    "A",
    "V",
    "F",
    "Ohm",
    "S",
    "Wb",
    "Cel",
    "T",
    "H",
    "lm",
    "lx",
    "Bq",
    "Gy",
    "Sv",
    "l",
    "L",
    "ar",
    "t",
    "bar",
    "u",
    "eV",
    "pc",
    "Ci",
    "R",
    "RAD",
    "REM",
    "cal",
    "dyn",
    "erg",
    "P",
    "St",
    "Gal",
    "G",
    "Mx",
    "Oe",
    "Gb",
    "Ky",
    "ph",
    "sb",
    "Lmb",
    "mho",
    "gf",
    "st",
    "B",
    "Np",
    "bit",
    "By",
    "Bd",
    "kat",
    "U",
    "eq",
    "osm",
    "g%",
    "m[Hg]",
    "m[H2O]",
    "[iU]",
    "[IU]",
    "[arb'U]",
    "[USP'U]",
    "[GPL'U]",
    "[MPL'U]",
    "[APL'U]",
    "[beth'U]",
    "[anti'Xa'U]",
    "[todd'U]",
    "[dye'U]",
    "[smgy'U]",
    "[bdsk'U]",
    "[ka'U]",
    "[knk'U]",
    "[mclg'U]",
    "[tb'U]",
    "[CCID_50]",
    "[TCID_50]",
    "[EID_50]",
    "[PFU]",
    "[FFU]",
    "[CFU]",
    "[BAU]",
    "[AU]",
    "[Amb'a'1'U]",
    "[PNU]",
    "[Lf]",
    "[D'ag'U]",
    "[c]",
    "[h]",
    "[k]",
    "[e]",
    "[m_e]",
    "[m_p]",
    "[G]",
    "[g]",
    "[eps_0]",
    "[mu_0]",
    "[S]",
];

/// Atoms that take no prefix.
const PLAIN: &[&str] = &[
    "10*",
    "10^",
    "[pi]",
    "%",
    "[ppth]",
    "[ppm]",
    "[ppb]",
    "[pptr]",
    "min",
    "h",
    "d",
    "a",
    "wk",
    "mo",
    "a_t",
    "a_j",
    "a_g",
    "mo_s",
    "mo_j",
    "mo_g",
    "deg",
    "'",
    "''",
    "gon",
    "[degF]",
    "[degR]",
    "[in_i]",
    "[ft_i]",
    "[yd_i]",
    "[mi_i]",
    "[lb_av]",
    "[oz_av]",
    "[gr]",
    "[pH]",
    "[HPF]",
    "[LPF]",
    "[drp]",
    "[tsp_us]",
    "[tbs_us]",
    "[foz_us]",
    "[pt_us]",
    "[qt_us]",
    "[gal_us]",
    "[Cal]",
    "[diop]",
    "[mesh_i]",
    "[hnsf'U]",
    "[EU]",
    "[ELU]",
    "[car_m]",
    "[in_i'Hg]",
    "[in_i'H2O]",
    "[hp'_X]",
    "[hp'_C]",
    "[kp_X]",
    "[kp_C]",
    "[mi_us]",
];

/// Whether `unit` is a UCUM code (case-sensitive form) built from the known atoms.
pub(crate) fn is_ucum(unit: &str) -> bool {
    if unit.is_empty() || unit.len() > 128 || !unit.bytes().all(|b| (33..=126).contains(&b)) {
        return false;
    }
    let mut p = Parser {
        s: unit.as_bytes(),
        i: 0,
        depth: 0,
    };
    // A leading `/` (`/uL`) is a unit over nothing.
    p.eat(b'/');
    p.term() && p.i == p.s.len()
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn term(&mut self) -> bool {
        if !self.component() {
            return false;
        }
        while matches!(self.peek(), Some(b'.' | b'/')) {
            self.i += 1;
            if !self.component() {
                return false;
            }
        }
        true
    }

    fn component(&mut self) -> bool {
        match self.peek() {
            Some(b'(') => {
                // Bounded nesting: a hostile unit string cannot recurse deeply.
                if self.depth >= 8 {
                    return false;
                }
                self.i += 1;
                self.depth += 1;
                let ok = self.term() && self.eat(b')');
                self.depth -= 1;
                ok
            }
            Some(b'{') => self.annotation(),
            Some(_) => {
                let start = self.i;
                let mut brackets = 0usize;
                while let Some(b) = self.peek() {
                    match b {
                        b'[' => brackets += 1,
                        b']' if brackets > 0 => brackets -= 1,
                        b'.' | b'/' | b'(' | b')' | b'{' if brackets == 0 => break,
                        _ => {}
                    }
                    self.i += 1;
                }
                if brackets != 0 {
                    return false;
                }
                let ok = simple_unit(&self.s[start..self.i]);
                ok && (self.peek() != Some(b'{') || self.annotation())
            }
            None => false,
        }
    }

    fn annotation(&mut self) -> bool {
        if !self.eat(b'{') {
            return false;
        }
        while let Some(b) = self.peek() {
            self.i += 1;
            match b {
                b'}' => return true,
                b'{' => return false,
                _ => {}
            }
        }
        false
    }
}

/// A factor (`10`), or an atom with an optional prefix and exponent (`mmol`, `l-1`, `10*3`).
fn simple_unit(token: &[u8]) -> bool {
    if token.is_empty() {
        return false;
    }
    if token.iter().all(u8::is_ascii_digit) {
        return true;
    }
    let digits = token
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_digit())
        .count();
    let mut rest = &token[..token.len() - digits];
    if digits > 0 && matches!(rest.last(), Some(b'+' | b'-')) {
        rest = &rest[..rest.len() - 1];
    }
    let Ok(atom) = std::str::from_utf8(rest) else {
        return false;
    };
    if METRIC.contains(&atom) || PLAIN.contains(&atom) {
        return true;
    }
    PREFIXES.iter().any(|p| {
        atom.strip_prefix(p)
            .is_some_and(|a| !a.is_empty() && METRIC.contains(&a))
    })
}

#[cfg(test)]
mod tests {
    use super::is_ucum;

    #[test]
    fn lab_units() {
        for u in [
            "mmol/L",
            "10*3/uL",
            "10*6/uL",
            "g/dL",
            "mg/dl",
            "%",
            "fL",
            "pg",
            "U/L",
            "[IU]/L",
            "m[IU]/mL",
            "{cells}/uL",
            "pg/{cell}",
            "mm[Hg]",
            "mm/h",
            "/uL",
            "10*9/L",
            "mL/min/{1.73_m2}",
            "ug/(24.h)",
            "mol/L",
            "kg.m-2",
            "1",
            "g/l-1",
            "[pH]",
            "/[HPF]",
            "meq/L",
            "mosm/kg",
            "[CFU]/mL",
            "s",
            "ng/mL",
            "umol/L",
            "cm[H2O]",
            "10*-3",
            "[arb'U]/mL",
        ] {
            assert!(is_ucum(u), "{u}");
        }
    }

    #[test]
    fn not_ucum() {
        for u in [
            "",
            "tera.l-1",
            "giga.l-1",
            "beats/min",
            "mIU/mL",
            "mmol/l ",
            "cells/uL",
            "x10E3/uL",
            "mg/dL)",
            "(mg",
            "{open",
            "mg//dL",
            "µg/L",
            "mm[Hg",
            "IU/L",
            "mEq/L",
            "sec",
            "((((((((((m))))))))))",
        ] {
            assert!(!is_ucum(u), "{u}");
        }
    }
}
