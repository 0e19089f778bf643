//! The order as read from FHIR: a ServiceRequest with its Patient, and optionally the ordering
//! Practitioner, the Encounter and the Specimen, each contained or given alongside.

use serde_json::Value;

use crate::Error;

/// An identifier: value, system, type code (`MR`, `PLAC`, `NPI`...), assigner.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identifier {
    /// `Identifier.value`.
    pub value: String,
    /// `Identifier.system`.
    pub system: Option<String>,
    /// `Identifier.type.coding[0].code`.
    pub type_code: Option<String>,
    /// `Identifier.assigner.display`.
    pub assigner: Option<String>,
}

/// A code.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Coding {
    /// `Coding.system`.
    pub system: Option<String>,
    /// `Coding.code`.
    pub code: String,
    /// `Coding.display`.
    pub display: Option<String>,
}

/// `ServiceRequest.priority`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Priority {
    /// `routine` (or absent).
    #[default]
    Routine,
    /// `urgent`.
    Urgent,
    /// `asap`.
    Asap,
    /// `stat`.
    Stat,
}

impl Priority {
    /// HL7 table 0027 and ASTM O.6: `R`, `A` (urgent and asap), `S`.
    pub fn code(self) -> &'static str {
        match self {
            Priority::Routine => "R",
            Priority::Urgent | Priority::Asap => "A",
            Priority::Stat => "S",
        }
    }
}

/// A postal address.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Address {
    /// `line[0]`.
    pub line1: String,
    /// `line[1..]`, joined by spaces.
    pub line2: String,
    /// `city`.
    pub city: String,
    /// `state`.
    pub state: String,
    /// `postalCode`.
    pub postal_code: String,
    /// `country`.
    pub country: String,
}

/// The patient.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Patient {
    /// `Patient.identifier`, the `MR` one first; the resource id when there is none.
    pub identifiers: Vec<Identifier>,
    /// `name.family` (or `name.text`).
    pub family: String,
    /// `name.given[0]`.
    pub given: String,
    /// `name.given[1..]`, joined by spaces.
    pub middle: String,
    /// `name.prefix[0]`.
    pub prefix: String,
    /// `name.suffix[0]`.
    pub suffix: String,
    /// `birthDate` (FHIR date).
    pub birth_date: Option<String>,
    /// `gender`.
    pub gender: Option<String>,
    /// `address[0]`.
    pub address: Option<Address>,
    /// The first `telecom` with `system` `phone`.
    pub phone: Option<String>,
}

/// A person: the ordering provider.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Person {
    /// The `NPI` identifier, else the first.
    pub identifier: Option<Identifier>,
    /// `name.family`.
    pub family: String,
    /// `name.given[0]`.
    pub given: String,
}

/// The encounter, when known.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Encounter {
    /// `Encounter.class.code` (v3 ActCode: `IMP`, `AMB`, `EMER`...).
    pub class: Option<String>,
    /// `Encounter.identifier[0]`: the visit number.
    pub visit_number: Option<Identifier>,
}

/// The specimen, when known.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Specimen {
    /// `Specimen.accessionIdentifier`, else `identifier[0]`.
    pub id: Option<String>,
    /// `Specimen.type`: first coding, or its text as the code.
    pub kind: Option<Coding>,
}

/// One order, everything the messages need.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Order {
    /// `ServiceRequest.id`.
    pub request_id: String,
    /// The placer order number: the identifier typed `PLAC`, else the first, else the id.
    pub placer: Identifier,
    /// `ServiceRequest.requisition`: the placer group number.
    pub requisition: Option<Identifier>,
    /// `ServiceRequest.status`.
    pub status: String,
    /// `ServiceRequest.priority`.
    pub priority: Priority,
    /// `ServiceRequest.code.coding`, LOINC first.
    pub codes: Vec<Coding>,
    /// `ServiceRequest.code.text`.
    pub code_text: Option<String>,
    /// `occurrenceDateTime` (or `occurrencePeriod.start`).
    pub occurrence: Option<String>,
    /// `authoredOn`.
    pub authored: Option<String>,
    /// `note[].text`.
    pub notes: Vec<String>,
    /// `reasonCode[].coding[0]`.
    pub reasons: Vec<Coding>,
    /// The patient (`subject`).
    pub patient: Patient,
    /// The orderer (`requester`, a Practitioner or PractitionerRole's practitioner).
    pub orderer: Option<Person>,
    /// `encounter`.
    pub encounter: Option<Encounter>,
    /// `specimen[0]`.
    pub specimen: Option<Specimen>,
}

/// The LOINC system URI.
pub const LOINC: &str = "http://loinc.org";

fn text(v: &Value) -> Option<String> {
    v.as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn identifier(v: &Value) -> Option<Identifier> {
    Some(Identifier {
        value: text(&v["value"])?,
        system: text(&v["system"]),
        type_code: v["type"]["coding"]
            .as_array()
            .and_then(|c| c.iter().find_map(|c| text(&c["code"]))),
        assigner: text(&v["assigner"]["display"]),
    })
}

fn identifiers(v: &Value) -> Vec<Identifier> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(identifier)
        .collect()
}

fn coding(v: &Value) -> Option<Coding> {
    Some(Coding {
        system: text(&v["system"]),
        code: text(&v["code"])?,
        display: text(&v["display"]),
    })
}

/// Looks up `Patient/123`-style references among the resources given alongside.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<Value>;

/// Resolves a reference: `#id` among the ServiceRequest's contained resources, else `Type/id`
/// through `lookup`. Checks the resource type.
fn resolve(
    sr: &Value,
    reference: &Value,
    element: &'static str,
    types: &[&str],
    lookup: Lookup<'_>,
) -> Result<Option<Value>, Error> {
    let Some(r) = text(&reference["reference"]) else {
        return Ok(None);
    };
    let found = if let Some(local) = r.strip_prefix('#') {
        sr["contained"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["id"].as_str() == Some(local))
            .cloned()
    } else {
        // Absolute URLs: keep the last `Type/id`.
        let parts: Vec<&str> = r.trim_end_matches('/').rsplitn(3, '/').collect();
        let key = match parts.as_slice() {
            [id, ty, ..] => format!("{ty}/{id}"),
            _ => r.clone(),
        };
        lookup(&key)
    };
    let Some(found) = found else {
        return Err(Error::Unresolved {
            element,
            reference: r,
        });
    };
    let ty = found["resourceType"].as_str().unwrap_or("");
    if !types.contains(&ty) {
        return Err(Error::Invalid {
            element,
            reason: format!("refers to a {ty}, expected {}", types.join(" or ")),
        });
    }
    Ok(Some(found))
}

fn human_name(v: &Value) -> Option<&Value> {
    let names = v["name"].as_array()?;
    names
        .iter()
        .find(|n| n["use"].as_str() == Some("official"))
        .or_else(|| names.first())
}

fn first_text(v: &Value) -> String {
    v.as_array()
        .and_then(|a| a.iter().find_map(text))
        .unwrap_or_default()
}

fn patient(p: &Value) -> Result<Patient, Error> {
    let mut ids = identifiers(&p["identifier"]);
    // The medical record number first.
    ids.sort_by_key(|i| i.type_code.as_deref() != Some("MR"));
    if ids.is_empty() {
        if let Some(id) = text(&p["id"]) {
            ids.push(Identifier {
                value: id,
                ..Identifier::default()
            });
        } else {
            return Err(Error::Missing {
                element: "Patient.identifier",
            });
        }
    }
    let name = human_name(p).ok_or(Error::Missing {
        element: "Patient.name",
    })?;
    let given: Vec<String> = name["given"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(text)
        .collect();
    let family = text(&name["family"])
        .or_else(|| text(&name["text"]))
        .ok_or(Error::Missing {
            element: "Patient.name.family",
        })?;
    let address = p["address"].as_array().and_then(|a| a.first()).map(|a| {
        let lines: Vec<String> = a["line"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(text)
            .collect();
        Address {
            line1: lines.first().cloned().unwrap_or_default(),
            line2: lines.get(1..).map(|l| l.join(" ")).unwrap_or_default(),
            city: text(&a["city"]).unwrap_or_default(),
            state: text(&a["state"]).unwrap_or_default(),
            postal_code: text(&a["postalCode"]).unwrap_or_default(),
            country: text(&a["country"]).unwrap_or_default(),
        }
    });
    let phone = p["telecom"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["system"].as_str() == Some("phone"))
        .and_then(|t| text(&t["value"]));
    Ok(Patient {
        identifiers: ids,
        family,
        given: given.first().cloned().unwrap_or_default(),
        middle: given.get(1..).map(|g| g.join(" ")).unwrap_or_default(),
        prefix: first_text(&name["prefix"]),
        suffix: first_text(&name["suffix"]),
        birth_date: text(&p["birthDate"]),
        gender: text(&p["gender"]),
        address,
        phone,
    })
}

fn person(p: &Value) -> Person {
    let ids = identifiers(&p["identifier"]);
    let npi = ids
        .iter()
        .find(|i| {
            i.system.as_deref() == Some("http://hl7.org/fhir/sid/us-npi")
                || i.type_code.as_deref() == Some("NPI")
        })
        .or(ids.first())
        .cloned();
    let name = human_name(p);
    Person {
        identifier: npi,
        family: name
            .and_then(|n| text(&n["family"]).or_else(|| text(&n["text"])))
            .unwrap_or_default(),
        given: name.map(|n| first_text(&n["given"])).unwrap_or_default(),
    }
}

impl Order {
    /// Reads a ServiceRequest. References (`subject`, `requester`, `encounter`, `specimen`)
    /// resolve to contained resources (`#id`) or through `lookup` (`Patient/123`).
    pub fn from_fhir(sr: &Value, lookup: Lookup<'_>) -> Result<Order, Error> {
        if sr["resourceType"].as_str() != Some("ServiceRequest") {
            return Err(Error::Invalid {
                element: "resourceType",
                reason: format!(
                    "expected ServiceRequest, got {}",
                    sr["resourceType"].as_str().unwrap_or("nothing")
                ),
            });
        }
        let request_id = text(&sr["id"]).unwrap_or_default();
        let mut ids = identifiers(&sr["identifier"]);
        ids.sort_by_key(|i| i.type_code.as_deref() != Some("PLAC"));
        let placer = match ids.into_iter().next() {
            Some(i) => i,
            None if !request_id.is_empty() => Identifier {
                value: request_id.clone(),
                ..Identifier::default()
            },
            None => {
                return Err(Error::Missing {
                    element: "ServiceRequest.identifier",
                });
            }
        };
        let mut codes: Vec<Coding> = sr["code"]["coding"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(coding)
            .collect();
        codes.sort_by_key(|c| c.system.as_deref() != Some(LOINC));
        let code_text = text(&sr["code"]["text"]);
        if codes.is_empty() {
            return Err(Error::Missing {
                element: "ServiceRequest.code",
            });
        }
        let subject = &sr["subject"];
        if subject.is_null() {
            return Err(Error::Missing {
                element: "ServiceRequest.subject",
            });
        }
        let patient_res = resolve(sr, subject, "ServiceRequest.subject", &["Patient"], lookup)?
            .ok_or(Error::Missing {
                element: "ServiceRequest.subject.reference",
            })?;
        let orderer = match resolve(
            sr,
            &sr["requester"],
            "ServiceRequest.requester",
            &["Practitioner", "PractitionerRole"],
            lookup,
        )? {
            Some(r) if r["resourceType"] == "PractitionerRole" => resolve(
                sr,
                &r["practitioner"],
                "PractitionerRole.practitioner",
                &["Practitioner"],
                lookup,
            )?
            .map(|p| person(&p)),
            Some(r) => Some(person(&r)),
            None => None,
        };
        let encounter = resolve(
            sr,
            &sr["encounter"],
            "ServiceRequest.encounter",
            &["Encounter"],
            lookup,
        )?
        .map(|e| Encounter {
            class: text(&e["class"]["code"]),
            visit_number: e["identifier"]
                .as_array()
                .and_then(|a| a.iter().find_map(identifier)),
        });
        let specimen = match sr["specimen"].as_array().and_then(|a| a.first()) {
            Some(r) => resolve(sr, r, "ServiceRequest.specimen", &["Specimen"], lookup)?.map(|s| {
                Specimen {
                    id: text(&s["accessionIdentifier"]["value"]).or_else(|| {
                        s["identifier"]
                            .as_array()
                            .and_then(|a| a.iter().find_map(|i| text(&i["value"])))
                    }),
                    kind: s["type"]["coding"]
                        .as_array()
                        .and_then(|c| c.iter().find_map(coding))
                        .or_else(|| {
                            text(&s["type"]["text"]).map(|t| Coding {
                                code: t,
                                ..Coding::default()
                            })
                        }),
                }
            }),
            None => None,
        };
        let priority = match sr["priority"].as_str() {
            None | Some("routine") => Priority::Routine,
            Some("urgent") => Priority::Urgent,
            Some("asap") => Priority::Asap,
            Some("stat") => Priority::Stat,
            Some(other) => {
                return Err(Error::Invalid {
                    element: "ServiceRequest.priority",
                    reason: format!("{other:?} is not routine, urgent, asap or stat"),
                });
            }
        };
        Ok(Order {
            request_id,
            placer,
            requisition: identifier(&sr["requisition"]),
            status: text(&sr["status"]).unwrap_or_else(|| "active".into()),
            priority,
            codes,
            code_text,
            occurrence: text(&sr["occurrenceDateTime"])
                .or_else(|| text(&sr["occurrencePeriod"]["start"])),
            authored: text(&sr["authoredOn"]),
            notes: sr["note"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|n| text(&n["text"]))
                .collect(),
            reasons: sr["reasonCode"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| {
                    r["coding"]
                        .as_array()
                        .and_then(|c| c.iter().find_map(coding))
                })
                .collect(),
            patient: patient(&patient_res)?,
            orderer,
            encounter,
            specimen,
        })
    }

    /// Whether the order is withdrawn (`revoked` or `entered-in-error`): sent as a cancel.
    pub fn is_cancelled(&self) -> bool {
        matches!(self.status.as_str(), "revoked" | "entered-in-error")
    }
}

/// A lookup over resources given alongside the order (a Bundle's entries, say), by
/// `Type/id`.
pub fn lookup_in(resources: &[Value]) -> impl Fn(&str) -> Option<Value> + '_ {
    move |key: &str| {
        resources
            .iter()
            .find(|r| {
                r["resourceType"]
                    .as_str()
                    .zip(r["id"].as_str())
                    .is_some_and(|(t, i)| key.split_once('/') == Some((t, i)))
            })
            .cloned()
    }
}
