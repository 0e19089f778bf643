//! Lab results as FHIR: converts a result message — by default the NIST CBC `ORU^R01` of the
//! corpus — into a FHIR R4 transaction Bundle, and prints what a relay would look at: each
//! report's key (a resend has the same), its status and the order it answers, the results, and
//! the Bundle's conditional creates. `--json` prints the Bundle itself.
//!
//! `cargo run -p outpost-examples --example lab_results [-- [FILE] [--json]]` (FILE: HL7 ER7 or
//! ASTM E1394 records)

use lab_results::{Format, Options, convert};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let path = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .cloned()
        .unwrap_or_else(|| {
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../corpus/hl7v2/fhir-converter/LRI_2.0-NG_CBC_Typ_Message.hl7"
            )
            .to_owned()
        });
    let bytes = std::fs::read(&path)?;
    let format = Format::detect(&bytes).ok_or("neither an HL7 (MSH) nor an ASTM (H) message")?;
    let out = convert(&bytes, format, &Options::default())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&out.bundle)?);
        return Ok(());
    }
    for r in &out.reports {
        println!("DiagnosticReport {} ({} results)", r.status, r.observations);
        println!("  key       {}", r.key.value);
        if let (Some(order), Some(search)) = (&r.order, &r.order_search) {
            println!(
                "  order     {:?} {} -> ServiceRequest?{search}",
                order.role, order.value
            );
        }
    }
    println!();
    for o in out
        .resources()
        .filter(|r| r["resourceType"] == "Observation")
    {
        let code = &o["code"]["coding"][0];
        let value = match (
            &o["valueQuantity"],
            &o["valueString"],
            &o["valueCodeableConcept"],
        ) {
            (q, _, _) if q.is_object() => format!(
                "{}{} {}",
                q["comparator"].as_str().unwrap_or(""),
                q["value"],
                q["unit"].as_str().unwrap_or("")
            ),
            (_, s, _) if s.is_string() => s.as_str().unwrap_or("").to_owned(),
            (_, _, c) if c.is_object() => c["text"]
                .as_str()
                .or(c["coding"][0]["display"].as_str())
                .unwrap_or("")
                .to_owned(),
            _ => "-".to_owned(),
        };
        let flag = o["interpretation"][0]["coding"][0]["code"]
            .as_str()
            .unwrap_or("");
        println!(
            "  {:<10} {:<48} {:<24} {flag}",
            code["code"].as_str().unwrap_or(""),
            code["display"]
                .as_str()
                .unwrap_or("")
                .chars()
                .take(48)
                .collect::<String>(),
            value
        );
    }
    println!();
    // The Bundle: every entry a conditional create (one line per kind of resource).
    let mut shown = std::collections::BTreeSet::new();
    for e in out.bundle["entry"].as_array().into_iter().flatten() {
        let request = &e["request"];
        let kind = request["url"].as_str().unwrap_or("");
        let count = out
            .resources()
            .filter(|r| r["resourceType"] == kind)
            .count();
        if shown.insert(kind.to_owned()) {
            println!(
                "  {} {kind} x{count}, first: ifNoneExist={}",
                request["method"].as_str().unwrap_or(""),
                request["ifNoneExist"].as_str().unwrap_or("")
            );
        }
    }
    Ok(())
}
