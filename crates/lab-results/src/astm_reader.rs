//! ASTM E1394 (CLSI LIS02) result messages → the result model.
//!
//! H: sender (H.5) and message control ID (H.3). P: the patient (P.3 practice-assigned ID,
//! P.4 laboratory-assigned, P.5, P.6 name, P.8 birth date, P.9 sex). O: one report (O.3
//! specimen ID, O.4 instrument specimen ID, O.5 tests, O.8 collection time, O.15 received,
//! O.16 specimen type, O.23 results reported, O.26 report type). R: one result (R.3 test,
//! R.4 value, R.5 units, R.6 reference range, R.7 abnormal flags, R.9 status, R.11 operator,
//! R.13 completed, R.14 instrument). C: a note on the record before it.

use std::collections::HashMap;

use astm::{Message, Record};

use crate::codes;
use crate::dates::{self, DateTime};
use crate::hl7_types::{clean_code, clean_text};
use crate::key::{KeySource, ReportKey};
use crate::model::{
    Coding, Concept, Ident, Name, Note, Obs, ObsValue, OrderNumber, OrderRole, Party, Patient,
    Quantity, Report, Results, Specimen,
};
use crate::values;
use crate::{Error, Location, Options};

#[derive(Clone, Copy)]
enum Last {
    None,
    Report,
    Obs(usize, usize),
}

struct Draft {
    report: Report,
    number: Option<(String, KeySource)>,
    code: String,
    /// O.23, O.8, O.7 as sent (the first found), and the first R.13.
    times: [String; 4],
    occurrence: usize,
}

struct Walk<'o> {
    opts: &'o Options,
    d: astm::Delimiters,
    out: Results,
    drafts: Vec<Draft>,
    patient: Option<usize>,
    last: Last,
    sender: String,
}

/// Reads an ASTM result message into the model.
///
/// # Errors
/// See [`crate::convert`].
pub(crate) fn read(input: &[u8], opts: &Options) -> Result<Results, Error> {
    let msg = Message::parse(input)?;
    let records = msg.records();
    if !records.iter().any(|r| r.kind() == b'R') {
        let kinds: Vec<String> = records
            .iter()
            .map(|r| char::from(r.kind()).to_string())
            .collect();
        return Err(Error::NotResults {
            location: Location::new("R", 1, 1),
            found: format!("a message of records {}", kinds.join("-")),
            expected: "ASTM E1394 H-P-O-R-L with R records",
        });
    }
    let header = msg.header();
    let mut w = Walk {
        opts,
        d: msg.delimiters(),
        out: Results::default(),
        drafts: Vec::new(),
        patient: None,
        last: Last::None,
        sender: String::new(),
    };
    w.sender = w.code(&header, 5, 1, 1);
    w.out.loose_anchor = format!("{}^{}", w.sender, w.code(&header, 3, 1, 1));
    let mut seen: HashMap<u8, usize> = HashMap::new();
    for rec in &records[1..] {
        let n = seen.entry(rec.kind()).or_insert(0);
        *n += 1;
        let n = *n;
        match rec.kind() {
            b'P' => w.patient_record(rec, n)?,
            b'O' => w.order(rec, n)?,
            b'R' => w.result(rec, n)?,
            b'C' => w.comment(rec),
            _ => {}
        }
    }
    Ok(w.finish())
}

impl Walk<'_> {
    /// Component `c` of repeat `r` of field `n`, raw.
    fn raw<'r>(&self, rec: &Record<'r>, n: usize, r: usize, c: usize) -> &'r [u8] {
        let rep = rec.repeat(n, r);
        rep.split(|&b| b == self.d.component)
            .nth(c.saturating_sub(1))
            .unwrap_or(&[])
    }

    fn text(&self, rec: &Record<'_>, n: usize, r: usize, c: usize) -> String {
        clean_text(&rec.text(self.raw(rec, n, r, c)))
    }

    fn code(&self, rec: &Record<'_>, n: usize, r: usize, c: usize) -> String {
        clean_code(&self.text(rec, n, r, c))
    }

    /// A field with every component, as text joined by spaces.
    fn joined(&self, rec: &Record<'_>, n: usize) -> String {
        let parts: Vec<String> = rec
            .repeat(n, 1)
            .split(|&b| b == self.d.component)
            .map(|c| clean_text(&rec.text(c)))
            .filter(|t| !t.is_empty())
            .collect();
        parts.join(" ")
    }

    fn repeats(&self, rec: &Record<'_>, n: usize) -> usize {
        rec.field(n).split(|&b| b == self.d.repeat).count()
    }

    fn date_time(&self, raw: &str, at: Location) -> Result<Option<DateTime>, Error> {
        dates::date_time(raw, &at, self.opts.local_offset)
    }

    /// A universal test ID (`^^^code^...`): the manufacturer's code (component 4), else the
    /// universal test ID (component 1), with its name (component 2).
    fn test(&self, rec: &Record<'_>, n: usize, r: usize) -> Option<Coding> {
        let code = Some(self.code(rec, n, r, 4))
            .filter(|c| !c.is_empty())
            .or_else(|| Some(self.code(rec, n, r, 1)).filter(|c| !c.is_empty()))?;
        let display = self.text(rec, n, r, 2);
        Some(Coding {
            system: self.opts.local_code_system.clone(),
            version: None,
            code,
            display: (!display.is_empty()).then_some(display),
        })
    }

    fn patient_record(&mut self, rec: &Record<'_>, n: usize) -> Result<(), Error> {
        let mut identifiers = Vec::new();
        for (field, kind) in [(3, Some("MR")), (4, Some("PI")), (5, None)] {
            let value = self.code(rec, field, 1, 1);
            if !value.is_empty() {
                identifiers.push(Ident {
                    value,
                    system: self.opts.patient_system.clone(),
                    type_code: kind.map(str::to_owned),
                    ..Ident::default()
                });
            }
        }
        let family = self.text(rec, 6, 1, 1);
        let given: Vec<String> = [2, 3]
            .iter()
            .map(|&c| self.text(rec, 6, 1, c))
            .filter(|s| !s.is_empty())
            .collect();
        let name = (!family.is_empty() || !given.is_empty()).then(|| Name {
            family: (!family.is_empty()).then_some(family),
            given,
            suffix: Some(self.text(rec, 6, 1, 4)).filter(|s| !s.is_empty()),
            prefix: Some(self.text(rec, 6, 1, 5)).filter(|s| !s.is_empty()),
            use_: None,
        });
        let patient = Patient {
            identifiers,
            names: name.into_iter().collect(),
            birth_date: dates::date(&self.code(rec, 8, 1, 1), &Location::new("P", n, 8))?,
            gender: codes::gender(&self.code(rec, 9, 1, 1)),
        };
        self.out.patients.push(patient);
        self.patient = Some(self.out.patients.len() - 1);
        self.last = Last::None;
        Ok(())
    }

    fn order(&mut self, rec: &Record<'_>, n: usize) -> Result<(), Error> {
        let at = |f| Location::new("O", n, f);
        let tests: Vec<Coding> = (1..=self.repeats(rec, 5))
            .filter_map(|r| self.test(rec, 5, r))
            .collect();
        let code = match tests.as_slice() {
            [] => {
                return Err(Error::Missing {
                    location: at(5),
                    what: "the tests (universal test ID)",
                });
            }
            [one] => Concept {
                codings: vec![one.clone()],
                text: None,
            },
            many => Concept::text(
                many.iter()
                    .map(|c| c.display.clone().unwrap_or_else(|| c.code.clone()))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        };
        let specimen_id = self.code(rec, 3, 1, 1);
        let instrument_id = self.code(rec, 4, 1, 1);
        let kind = self.text(rec, 16, 1, 1);
        let collected = self.date_time(&self.code(rec, 8, 1, 1), at(8))?;
        let specimen = Specimen {
            identifiers: (!instrument_id.is_empty())
                .then(|| Ident {
                    value: instrument_id.clone(),
                    ..Ident::default()
                })
                .into_iter()
                .collect(),
            accession: (!specimen_id.is_empty()).then(|| Ident {
                value: specimen_id.clone(),
                ..Ident::default()
            }),
            kind: (!kind.is_empty()).then(|| Concept::text(kind)),
            collected: collected.clone(),
            received: self.date_time(&self.code(rec, 15, 1, 1), at(15))?,
            ..Specimen::default()
        };
        let mut specimens = Vec::new();
        if !specimen.is_empty() {
            self.out.specimens.push(specimen);
            specimens.push(self.out.specimens.len() - 1);
        }
        let report = Report {
            patient: self.patient,
            identifiers: (!specimen_id.is_empty())
                .then(|| Ident {
                    value: specimen_id.clone(),
                    type_code: Some("ACSN".into()),
                    ..Ident::default()
                })
                .into_iter()
                .collect(),
            order: (!specimen_id.is_empty()).then(|| {
                (
                    OrderNumber {
                        value: specimen_id.clone(),
                        namespace: None,
                        role: OrderRole::Specimen,
                    },
                    self.opts.placer_system.clone(),
                )
            }),
            code,
            categories: vec![Concept::service_section(String::new())],
            status: codes::astm_report_status(&self.code(rec, 26, 1, 1)),
            effective: collected,
            effective_end: None,
            issued: dates::instant(&self.code(rec, 23, 1, 1), &at(23), self.opts.local_offset)?,
            performers: Vec::new(),
            interpreters: Vec::new(),
            specimens,
            observations: Vec::new(),
            notes: Vec::new(),
            key: ReportKey::new("", "", "", "", KeySource::Message),
        };
        let number = [
            (specimen_id, KeySource::Specimen),
            (instrument_id, KeySource::Specimen),
        ]
        .into_iter()
        .find(|(v, _)| !v.is_empty());
        self.drafts.push(Draft {
            report,
            number,
            code: tests.first().map(|c| c.code.clone()).unwrap_or_default(),
            times: [
                self.code(rec, 23, 1, 1),
                self.code(rec, 8, 1, 1),
                self.code(rec, 7, 1, 1),
                String::new(),
            ],
            occurrence: n,
        });
        self.last = Last::Report;
        Ok(())
    }

    fn result(&mut self, rec: &Record<'_>, n: usize) -> Result<(), Error> {
        let at = |f| Location::new("R", n, f);
        let Some(report) = self.drafts.len().checked_sub(1) else {
            return Err(Error::invalid(at(1), "R", "comes before any O record"));
        };
        let code = self.test(rec, 3, 1).ok_or(Error::Missing {
            location: at(3),
            what: "the test (universal test ID)",
        })?;
        let unit = values::unit(&self.code(rec, 5, 1, 1), "", "");
        let text = self.joined(rec, 4);
        let value = if text.is_empty() {
            None
        } else {
            Some(match values::compared_number(&text) {
                Some((comparator, value)) => ObsValue::Quantity(Quantity {
                    value,
                    comparator,
                    unit: unit.clone(),
                }),
                None => ObsValue::String(text),
            })
        };
        let status_raw = self.code(rec, 9, 1, 1);
        let status = codes::astm_result_status(&status_raw).map_err(|()| {
            Error::invalid(at(9), &status_raw, "is not an E1394 result status (R.9)")
        })?;
        let interpretation = (1..=self.repeats(rec, 7))
            .map(|r| self.code(rec, 7, r, 1))
            .filter_map(|c| Concept::interpretation(c, String::new()))
            .collect();
        let completed = self.code(rec, 13, 1, 1);
        let operator = self.code(rec, 11, 1, 1);
        let instrument = Some(self.code(rec, 14, 1, 1))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| self.sender.clone());
        let obs = Obs {
            code: Concept {
                codings: vec![code],
                text: None,
            },
            status,
            absent: (value.is_none() && status == Some("cancelled")).then_some("not-performed"),
            value,
            interpretation,
            range: values::reference_range(&self.text(rec, 6, 1, 1), &unit),
            effective: if self.drafts[report].report.effective.is_none() {
                self.date_time(&completed, at(13))?
            } else {
                None
            },
            issued: dates::instant(&completed, &at(13), self.opts.local_offset)?,
            performers: (!operator.is_empty())
                .then(|| Party {
                    kind: "Practitioner",
                    id: Some(Ident {
                        value: operator,
                        ..Ident::default()
                    }),
                    name: None,
                })
                .into_iter()
                .collect(),
            device: (!instrument.is_empty()).then(|| Party {
                kind: "Device",
                id: Some(Ident {
                    value: instrument,
                    ..Ident::default()
                }),
                name: None,
            }),
            ..Obs::default()
        };
        let d = &mut self.drafts[report];
        if d.times[3].is_empty() {
            d.times[3] = completed;
        }
        d.report.observations.push(obs);
        self.last = Last::Obs(report, d.report.observations.len() - 1);
        Ok(())
    }

    fn comment(&mut self, rec: &Record<'_>) {
        let text = self.joined(rec, 4);
        if text.is_empty() {
            return;
        }
        let note = Note {
            text,
            author: None,
            time: None,
        };
        match self.last {
            Last::Obs(r, o) => self.drafts[r].report.observations[o].notes.push(note),
            Last::Report => {
                if let Some(d) = self.drafts.last_mut() {
                    d.report.notes.push(note);
                }
            }
            // R4 Patient has no note; a comment on the header or patient is not carried.
            Last::None => {}
        }
    }

    fn finish(mut self) -> Results {
        for d in self.drafts.drain(..) {
            let mut report = d.report;
            // O.23, else the first R.13, else O.8, else O.7.
            let [reported, collected, requested, completed] = d.times;
            let time = [reported, completed, collected, requested]
                .into_iter()
                .find(|t| !t.is_empty())
                .unwrap_or_default();
            report.key = match d.number {
                Some((number, source)) => ReportKey::new(&number, "", &d.code, &time, source),
                None => ReportKey::new(
                    &format!("{}#O{}", self.out.loose_anchor, d.occurrence),
                    "",
                    &d.code,
                    &time,
                    KeySource::Message,
                ),
            };
            report.performers = report
                .observations
                .iter()
                .flat_map(|o| o.performers.iter().cloned())
                .fold(Vec::new(), |mut all, p| {
                    if !all.contains(&p) {
                        all.push(p);
                    }
                    all
                });
            report.settle_statuses();
            self.out.reports.push(report);
        }
        self.out
    }
}
