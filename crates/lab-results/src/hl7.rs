//! HL7 v2 ORU^R01 and OUL^R21..R24 → the result model.
//!
//! The segments are read in order and grouped as the message structures group them: PID starts
//! a patient, ORC and OBR a report (ORC before OBR in ORU; after it in OUL), OBX a result of the
//! report (or of the patient, or — in OUL^R22/R23, before any OBR — of the specimen), SPM a
//! specimen (of the report in ORU^R01 and OUL^R24; of the OBRs that follow in OUL^R22/R23), NTE
//! a note on what precedes it. Other segments are skipped.

use std::collections::HashMap;

use hl7v2::{Message, ParseOptions, Segment, Value};

use crate::codes;
use crate::dates::{self, DateTime};
use crate::hl7_types::Reader;
use crate::key::{KeySource, ReportKey};
use crate::model::{
    Concept, Ident, Note, Obs, ObsValue, OrderNumber, OrderRole, Patient, Report, Results, Specimen,
};
use crate::values;
use crate::{Error, Location, Options};

/// What a following NTE or OBX belongs to.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Last {
    None,
    Patient,
    Report,
    Obs(Target),
    Specimen(usize),
}

/// Where a result goes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    /// `(report, observation)`.
    Report(usize, usize),
    /// Index in `Results::loose`.
    Loose(usize),
}

/// A report being read: what its key and order link are made from, known only once its ORC
/// (which may follow the OBR) and results are read.
struct Draft {
    report: Report,
    placer: Option<Ident>,
    filler: Option<Ident>,
    has_orc: bool,
    /// OBR-22, else OBR-7, as sent.
    time: String,
    /// OBR-4-1.
    code: String,
    /// The first OBX-14 of the report, as sent.
    obs_time: String,
    /// `OBR(n)`.
    occurrence: usize,
}

struct Walk<'m, 'o> {
    r: Reader<'o>,
    msg: &'m Message<'m>,
    out: Results,
    drafts: Vec<Draft>,
    patient: Option<usize>,
    specimen: Option<usize>,
    /// An ORC waiting for its OBR.
    orc: Option<(Segment<'m>, usize)>,
    last: Last,
    /// OUL^R22 / R23: SPM opens a group that the following OBRs belong to.
    specimen_groups: bool,
    /// Last of PID / OBR / SPM seen.
    opener: &'static str,
}

/// Reads an HL7 result message into the model.
///
/// # Errors
/// See [`crate::convert`].
pub(crate) fn read(input: &[u8], opts: &Options) -> Result<Results, Error> {
    let parse = ParseOptions {
        max_size: opts.max_size,
        ..ParseOptions::default()
    };
    let msg = Message::parse_with(input, &parse)?;
    let msh9 = msg.msh().field(9);
    let (kind, event) = (msh9.component(1).text(), msh9.component(2).text());
    let (kind, event) = (kind.trim(), event.trim());
    let supported = matches!(
        (kind, event),
        ("ORU", "R01") | ("OUL", "R21" | "R22" | "R23" | "R24")
    );
    if !supported {
        return Err(Error::NotResults {
            location: Location::new("MSH", 1, 9),
            found: format!("{kind}^{event}"),
            expected: "ORU^R01 or OUL^R21..R24",
        });
    }
    let mut w = Walk {
        r: Reader {
            d: msg.delimiters(),
            charset: msg.charset(),
            opts,
        },
        msg: &msg,
        out: Results::default(),
        drafts: Vec::new(),
        patient: None,
        specimen: None,
        orc: None,
        last: Last::None,
        specimen_groups: kind == "OUL" && matches!(event, "R22" | "R23"),
        opener: "",
    };
    w.out.loose_anchor = format!(
        "{}^{}",
        w.r.code(msg.msh().field(3).component(1)),
        w.r.code(msg.control_id())
    );
    w.walk()?;
    Ok(w.finish())
}

impl<'m> Walk<'m, '_> {
    fn walk(&mut self) -> Result<(), Error> {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for seg in self.msg.segments() {
            let n = seen.entry(seg.name()).or_insert(0);
            *n += 1;
            let n = *n;
            match seg.name() {
                "PID" => self.pid(seg, n)?,
                "ORC" => self.orc(seg, n),
                "OBR" => self.obr(seg, n)?,
                "OBX" => self.obx(seg, n)?,
                "SPM" => self.spm(seg, n)?,
                "NTE" => self.nte(seg, n)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn at(seg: &str, n: usize, field: usize) -> Location {
        Location::new(seg, n, field)
    }

    fn date_time(&self, v: Value<'_>, at: Location) -> Result<Option<DateTime>, Error> {
        dates::date_time(&self.r.text(v.component(1)), &at, self.r.opts.local_offset)
    }

    fn instant(&self, v: Value<'_>, at: Location) -> Result<Option<String>, Error> {
        dates::instant(&self.r.text(v.component(1)), &at, self.r.opts.local_offset)
    }

    fn pid(&mut self, seg: Segment<'_>, n: usize) -> Result<(), Error> {
        let r = &self.r;
        let mut identifiers: Vec<Ident> = Vec::new();
        for field in [3, 2, 4] {
            for rep in seg.field(field).repetitions() {
                if let Some(mut id) = r.cx(rep) {
                    if id.system.is_none() {
                        id.system = r.opts.patient_system.clone();
                    }
                    if !identifiers.contains(&id) {
                        identifiers.push(id);
                    }
                }
            }
        }
        let patient = Patient {
            identifiers,
            names: seg
                .field(5)
                .repetitions()
                .filter_map(|v| r.xpn(v))
                .collect(),
            birth_date: dates::date(&r.text(seg.field(7).component(1)), &Self::at("PID", n, 7))?,
            gender: codes::gender(&r.code(seg.field(8).component(1))),
        };
        let index = match self
            .out
            .patients
            .iter()
            .position(|p| !p.identifiers.is_empty() && p.identifiers == patient.identifiers)
        {
            Some(i) => i,
            None => {
                self.out.patients.push(patient);
                self.out.patients.len() - 1
            }
        };
        self.patient = Some(index);
        self.opener = "PID";
        self.last = Last::Patient;
        Ok(())
    }

    fn orc(&mut self, seg: Segment<'m>, n: usize) {
        // In OUL the ORC follows its OBR; in ORU it comes before it.
        let (placer, filler) = self.order_numbers(seg);
        if let Some(d) = self.drafts.last_mut()
            && self.opener == "OBR"
            && !d.has_orc
            && d.report.observations.is_empty()
        {
            d.placer = d.placer.take().or(placer);
            d.filler = d.filler.take().or(filler);
            d.has_orc = true;
            self.last = Last::Report;
            return;
        }
        self.orc = Some((seg, n));
        // A note here would be on an order whose report has not started.
        self.last = Last::None;
    }

    /// ORC-2 / ORC-3, or OBR-2 / OBR-3.
    fn order_numbers(&self, seg: Segment<'_>) -> (Option<Ident>, Option<Ident>) {
        let r = &self.r;
        let (p, f) = (seg.field(2), seg.field(3));
        (
            r.ei(|i| p.component(i), "PLAC"),
            r.ei(|i| f.component(i), "FILL"),
        )
    }

    fn obr(&mut self, seg: Segment<'m>, n: usize) -> Result<(), Error> {
        let r = &self.r;
        let at = |f| Self::at("OBR", n, f);
        let code = r.concept(|i| seg.field(4).component(i));
        if code.is_empty() {
            return Err(Error::Missing {
                location: at(4),
                what: "the report's code (universal service identifier)",
            });
        }
        let status_raw = r.code(seg.field(25).component(1));
        let status = codes::report_status(&status_raw)
            .map_err(|reason| Error::invalid(at(25), &status_raw, reason))?;
        let (mut placer, mut filler) = self.order_numbers(seg);
        let mut has_orc = false;
        if let Some((orc, _)) = self.orc.take() {
            let (p, f) = self.order_numbers(orc);
            placer = placer.or(p);
            filler = filler.or(f);
            has_orc = true;
        }
        let categories = vec![Concept::service_section(r.code(seg.field(24).component(1)))];
        let effective = self.date_time(seg.field(7), at(7))?;
        let time = [22, 7]
            .iter()
            .map(|&f| r.code(seg.field(f).component(1)))
            .find(|t| !t.is_empty())
            .unwrap_or_default();
        let mut report = Report {
            patient: self.patient,
            identifiers: Vec::new(),
            order: None,
            code,
            categories,
            status,
            effective: effective.clone(),
            effective_end: self.date_time(seg.field(8), at(8))?,
            issued: self.instant(seg.field(22), at(22))?,
            performers: seg
                .field(34)
                .repetitions()
                .filter_map(|v| r.ndl(v))
                .collect(),
            interpreters: seg
                .field(32)
                .repetitions()
                .filter_map(|v| r.ndl(v))
                .collect(),
            specimens: Vec::new(),
            observations: Vec::new(),
            notes: Vec::new(),
            key: ReportKey::new("", "", "", "", KeySource::Message),
        };
        if self.specimen_groups
            && let Some(s) = self.specimen
        {
            report.specimens.push(s);
        }
        // OBR-15 (specimen source, up to v2.4): a specimen without an identifier.
        let sps = seg.field(15);
        let kind = r.concept(|i| sps.component(1).subcomponent(i));
        if !kind.is_empty() {
            let site = r.concept(|i| sps.component(4).subcomponent(i));
            self.out.specimens.push(Specimen {
                kind: Some(kind),
                collected: effective,
                received: self.date_time(seg.field(14), at(14))?,
                body_site: (!site.is_empty()).then_some(site),
                ..Specimen::default()
            });
            report.specimens.push(self.out.specimens.len() - 1);
        }
        let code_key = self.r.code(seg.field(4).component(1));
        self.drafts.push(Draft {
            report,
            placer,
            filler,
            has_orc,
            time,
            code: code_key,
            obs_time: String::new(),
            occurrence: n,
        });
        self.opener = "OBR";
        self.last = Last::Report;
        Ok(())
    }

    fn obx(&mut self, seg: Segment<'_>, n: usize) -> Result<(), Error> {
        let mut obs = self.observation(seg, n)?;
        let obs_time = self.r.code(seg.field(14).component(1));
        let report = self.drafts.len().checked_sub(1);
        let target = match (self.opener, report) {
            ("SPM", _) if self.specimen_groups => None,
            ("SPM", Some(r)) => {
                obs.specimen = self.specimen;
                Some(r)
            }
            ("OBR", Some(r)) => Some(r),
            _ => None,
        };
        self.last = Last::Obs(match target {
            Some(r) => {
                let d = &mut self.drafts[r];
                if d.obs_time.is_empty() {
                    d.obs_time = obs_time;
                }
                let list = &mut d.report.observations;
                list.push(obs);
                Target::Report(r, list.len() - 1)
            }
            None => {
                if self.opener == "SPM" {
                    obs.specimen = self.specimen;
                }
                self.out.loose.push((obs, self.patient));
                Target::Loose(self.out.loose.len() - 1)
            }
        });
        Ok(())
    }

    fn observation(&self, seg: Segment<'_>, n: usize) -> Result<Obs, Error> {
        let r = &self.r;
        let at = |f| Self::at("OBX", n, f);
        let code = r.concept(|i| seg.field(3).component(i));
        if code.is_empty() {
            return Err(Error::Missing {
                location: at(3),
                what: "the observation identifier",
            });
        }
        let status_raw = r.code(seg.field(11).component(1));
        let status = codes::observation_status(&status_raw).map_err(|()| {
            Error::invalid(
                at(11),
                &status_raw,
                "is not in HL7 table 0085 (result status)",
            )
        })?;
        let units = seg.field(6);
        let unit = values::unit(
            &r.code(units.component(1)),
            &r.text(units.component(2)),
            &r.code(units.component(3)),
        );
        let kind = r.code(seg.field(2).component(1)).to_ascii_uppercase();
        let (value, components) = self.value(seg.field(5), &kind, &unit, at(5))?;
        let absent = match (
            value.is_none() && components.is_empty(),
            status_raw.as_str(),
        ) {
            (true, "N") => Some("not-asked"),
            (true, "X") => Some("not-performed"),
            _ => None,
        };
        let interpretation = seg
            .field(8)
            .repetitions()
            .filter_map(|v| Concept::interpretation(r.code(v.component(1)), r.text(v.component(2))))
            .collect();
        let method = r.concept(|i| seg.field(17).component(i));
        let mut performers: Vec<_> = seg
            .field(16)
            .repetitions()
            .filter_map(|v| r.xcn(v))
            .collect();
        performers.extend(r.xon(seg.field(23)));
        let device = seg.field(18);
        Ok(Obs {
            code,
            status,
            value,
            components,
            absent,
            interpretation,
            range: values::reference_range(&r.text(seg.field(7)), &unit),
            notes: Vec::new(),
            effective: self.date_time(seg.field(14), at(14))?,
            issued: None,
            performers,
            method: (!method.is_empty()).then_some(method),
            device: r
                .ei(|i| device.component(i), "")
                .map(|id| crate::model::Party {
                    kind: "Device",
                    id: Some(id),
                    name: None,
                }),
            identifiers: r
                .ei(|i| seg.field(21).component(i), "FILL")
                .into_iter()
                .collect(),
            specimen: None,
        })
    }

    /// OBX-5 by OBX-2: the value, or the values of a repeating field as components.
    fn value(
        &self,
        field: Value<'_>,
        kind: &str,
        unit: &Option<crate::model::Unit>,
        at: Location,
    ) -> Result<(Option<ObsValue>, Vec<ObsValue>), Error> {
        let r = &self.r;
        let reps: Vec<Value<'_>> = field
            .repetitions()
            .filter(|v| !v.is_empty() && !v.is_null())
            .collect();
        if reps.is_empty() {
            return Ok((None, Vec::new()));
        }
        if matches!(kind, "ST" | "TX" | "FT" | "") {
            let text = r.lines(field);
            return Ok((
                (!text.is_empty()).then_some(ObsValue::String(text)),
                Vec::new(),
            ));
        }
        let mut out = Vec::new();
        for v in &reps {
            if let Some(value) = self.one_value(*v, kind, unit, &at)? {
                out.push(value);
            }
        }
        Ok(match out.len() {
            0 => (None, Vec::new()),
            1 => (out.pop(), Vec::new()),
            _ => (None, out),
        })
    }

    fn one_value(
        &self,
        v: Value<'_>,
        kind: &str,
        unit: &Option<crate::model::Unit>,
        at: &Location,
    ) -> Result<Option<ObsValue>, Error> {
        let r = &self.r;
        let joined = || {
            let parts: Vec<String> = v
                .components()
                .map(|c| r.text(c))
                .filter(|t| !t.is_empty())
                .collect();
            parts.join(" ")
        };
        let lenient = |text: String, reason: &str| {
            if r.opts.lenient_values {
                Ok(Some(ObsValue::String(text)))
            } else {
                Err(Error::invalid(at.clone(), &text, reason))
            }
        };
        Ok(match kind {
            "NM" => {
                let text = r.text(v);
                match values::compared_number(&text) {
                    Some((comparator, value)) => Some(ObsValue::Quantity(crate::model::Quantity {
                        value,
                        comparator,
                        unit: unit.clone(),
                    })),
                    None => return lenient(text, "is not a number (OBX-2 is NM)"),
                }
            }
            "SN" => {
                let parts = [1, 2, 3, 4].map(|i| r.text(v.component(i)));
                let refs = [&*parts[0], &*parts[1], &*parts[2], &*parts[3]];
                match values::structured_numeric(refs, unit) {
                    Some(value) => Some(value),
                    None => return lenient(joined(), "is not a structured numeric (OBX-2 is SN)"),
                }
            }
            "CE" | "CWE" | "CNE" | "CF" | "IS" | "ID" => {
                let c = r.concept(|i| v.component(i));
                (!c.is_empty()).then_some(ObsValue::Concept(c))
            }
            "DT" | "DTM" | "TS" => {
                dates::date_time(&r.text(v.component(1)), at, r.opts.local_offset)?
                    .map(ObsValue::DateTime)
            }
            "TM" => dates::time(&r.text(v.component(1)), at)?.map(ObsValue::Time),
            "DR" => {
                let local = r.opts.local_offset;
                let end =
                    |c: usize| dates::date_time(&r.text(v.component(c).subcomponent(1)), at, local);
                Some(ObsValue::Period {
                    start: end(1)?,
                    end: end(2)?,
                })
            }
            "NR" => {
                let low = values::decimal(&r.text(v.component(1)));
                let high = values::decimal(&r.text(v.component(2)));
                let q = |d| crate::model::Quantity {
                    value: d,
                    comparator: None,
                    unit: unit.clone(),
                };
                Some(ObsValue::Range {
                    low: low.map(q),
                    high: high.map(q),
                    original: None,
                })
            }
            "ED" => Some(ObsValue::Attachment(r.ed(v, at)?)),
            "RP" => Some(ObsValue::Attachment(r.rp(v))),
            // The guide's rule for every other type: the components as text.
            _ => {
                let text = joined();
                (!text.is_empty()).then_some(ObsValue::String(text))
            }
        })
    }

    fn spm(&mut self, seg: Segment<'_>, n: usize) -> Result<(), Error> {
        let r = &self.r;
        let at = |f| Self::at("SPM", n, f);
        let eip = seg.field(2);
        let mut identifiers = Vec::new();
        identifiers.extend(r.ei(|i| eip.component(1).subcomponent(i), "PLAC"));
        identifiers.extend(r.ei(|i| eip.component(2).subcomponent(i), "FILL"));
        let concept = |f: usize| {
            let c = r.concept(|i| seg.field(f).component(i));
            (!c.is_empty()).then_some(c)
        };
        let collected = seg.field(17);
        let specimen = Specimen {
            identifiers,
            accession: r.cx(seg.field(30)),
            kind: concept(4),
            collected: self.date_time(collected.component(1), at(17))?,
            collected_end: self.date_time(collected.component(2), at(17))?,
            received: self.date_time(seg.field(18), at(18))?,
            body_site: concept(8),
            method: concept(7),
            condition: seg
                .field(24)
                .repetitions()
                .map(|v| r.concept(|i| v.component(i)))
                .filter(|c| !c.is_empty())
                .collect(),
            notes: seg
                .field(14)
                .repetitions()
                .map(|v| r.text(v))
                .filter(|t| !t.is_empty())
                .collect(),
        };
        let existing = self.out.specimens.iter().position(|s| {
            !specimen.identifiers.is_empty() && s.identifiers == specimen.identifiers
        });
        let index = existing.unwrap_or_else(|| {
            self.out.specimens.push(specimen);
            self.out.specimens.len() - 1
        });
        if !self.specimen_groups
            && let Some(d) = self.drafts.last_mut()
            && !d.report.specimens.contains(&index)
        {
            // SPM replaces what OBR-15 said of the same report's specimen.
            d.report
                .specimens
                .retain(|&s| !self.out.specimens[s].identifiers.is_empty());
            d.report.specimens.push(index);
        }
        self.specimen = Some(index);
        self.opener = "SPM";
        self.last = Last::Specimen(index);
        Ok(())
    }

    fn nte(&mut self, seg: Segment<'_>, n: usize) -> Result<(), Error> {
        let r = &self.r;
        let text = r.lines(seg.field(3));
        if text.is_empty() {
            return Ok(());
        }
        let note = Note {
            text,
            author: r
                .xcn(seg.field(5))
                .and_then(|p| p.name.or(p.id.map(|i| i.value))),
            time: self.date_time(seg.field(6), Self::at("NTE", n, 6))?,
        };
        match self.last {
            Last::Obs(Target::Report(rep, o)) => {
                self.drafts[rep].report.observations[o].notes.push(note);
            }
            Last::Obs(Target::Loose(i)) => self.out.loose[i].0.notes.push(note),
            Last::Report => {
                if let Some(d) = self.drafts.last_mut() {
                    d.report.notes.push(note);
                }
            }
            Last::Specimen(s) => self.out.specimens[s].notes.push(note.text),
            // R4 Patient has no note: a note on the patient is not carried.
            Last::Patient | Last::None => {}
        }
        Ok(())
    }

    /// Order links, keys and statuses, once every segment is read.
    fn finish(mut self) -> Results {
        let control = self.out.loose_anchor.clone();
        let opts = self.r.opts;
        for d in self.drafts.drain(..) {
            let mut report = d.report;
            report.identifiers.extend(d.placer.clone());
            report.identifiers.extend(d.filler.clone());
            report.order = match (&d.placer, &d.filler) {
                (Some(p), _) => Some((
                    order_number(p, OrderRole::Placer),
                    opts.placer_system.clone(),
                )),
                (None, Some(f)) => Some((
                    order_number(f, OrderRole::Filler),
                    opts.filler_system.clone(),
                )),
                (None, None) => None,
            };
            let time = if d.time.is_empty() {
                d.obs_time
            } else {
                d.time
            };
            report.key = match (&d.filler, &d.placer) {
                (Some(f), _) => key(f, &d.code, &time, KeySource::FillerOrder),
                (None, Some(p)) => key(p, &d.code, &time, KeySource::PlacerOrder),
                (None, None) => ReportKey::new(
                    &format!("{control}#OBR{}", d.occurrence),
                    "",
                    &d.code,
                    &time,
                    KeySource::Message,
                ),
            };
            report.settle_statuses();
            self.out.reports.push(report);
        }
        for (obs, _) in &mut self.out.loose {
            obs.status.get_or_insert("unknown");
        }
        self.out
    }
}

fn order_number(id: &Ident, role: OrderRole) -> OrderNumber {
    OrderNumber {
        value: id.value.clone(),
        namespace: id.assigner.clone(),
        role,
    }
}

fn key(id: &Ident, code: &str, time: &str, source: KeySource) -> ReportKey {
    ReportKey::new(
        &id.value,
        id.assigner.as_deref().unwrap_or(""),
        code,
        time,
        source,
    )
}
