//! Lab results end to end, with real peers on both sides: `outpost server` and `outpost agent`
//! as processes; an order created here and pushed to the instrument first (the real
//! `medplum hl7 listen`, or python-astm's receiver); then the instrument's results through an
//! agent channel whose configuration names the lab-results processor — `medplum hl7 send` of
//! an ORU^R01 over MLLP, python-astm's client over ASTM E1381. Each time: the report is found
//! by `DiagnosticReport?based-on=ServiceRequest/<id>`, a rest-hook receiver bound here gets the
//! transaction Bundle, the order is `completed`, a resend creates nothing, and every stored
//! resource validates against FHIR R4 (fhir.resources, scripts/peers/fhir_validate.py). A third
//! test runs labmcp-astm-lis's analyzer simulator (a CBC of 20 results and a chemistry panel,
//! one frame damaged on purpose) through the ASTM channel against two orders.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::{
    Proc, agent_process, medplum, outpost, port_for_peer, relay_process_with, repo, run, scratch,
    token,
};
use test_support::hook::rest_hook;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(60);
const PROCESSOR: &str = "https://outpost.health/fhir/StructureDefinition/inbound-processor";
const ORDER_PUSH: &str = "https://outpost.health/fhir/StructureDefinition/order-push";

/// The relay's registry for one test: the clients, the agent with one results channel
/// (`address`), the instrument as an order-push target (`device_url`, `format`), the patient,
/// and the rest-hook Subscription on reports.
fn registry(address: &str, device_url: &str, format: &str, hook: &str) -> Value {
    json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "ClientApplication", "id": "ehr", "secret": "ehr-secret-0123456"}},
        {"resource": {"resourceType": "ClientApplication", "id": "agent", "secret": "agent-secret-0123456",
            "extension": [{"url": "https://outpost.health/fhir/StructureDefinition/allowed-agent",
                "valueReference": {"reference": "Agent/lab-agent"}}]}},
        {"resource": {"resourceType": "Agent", "id": "lab-agent", "name": "Lab agent", "status": "active",
            "channel": [{"name": "results", "endpoint": {"reference": "Endpoint/results"},
                "extension": [{"url": PROCESSOR, "valueCode": "lab-results"}]}]}},
        {"resource": {"resourceType": "Endpoint", "id": "results", "status": "active", "address": address}},
        {"resource": {"resourceType": "Device", "id": "instrument", "url": device_url}},
        {"resource": {"resourceType": "Patient", "id": "pat-1", "identifier": [{"system": "urn:mrn", "value": "MRN-555"}],
            "name": [{"family": "Doe", "given": ["Jane"]}], "birthDate": "1980-02-03", "gender": "female"}},
        {"resource": {"resourceType": "Subscription", "id": "orders", "status": "active",
            "reason": "lab orders to the instrument", "criteria": "ServiceRequest?status=active", "channel": {"type": "rest-hook"},
            "extension": [{"url": ORDER_PUSH, "extension": [
                {"url": "agent", "valueReference": {"reference": "Agent/lab-agent"}},
                {"url": "device", "valueReference": {"reference": "Device/instrument"}},
                {"url": "format", "valueCode": format}]}]}},
        {"resource": {"resourceType": "Subscription", "id": "results-to-ehr", "status": "active",
            "reason": "lab results to the EHR", "criteria": "DiagnosticReport",
            "channel": {"type": "rest-hook", "endpoint": hook, "payload": "application/fhir+json",
                "header": ["Authorization: Bearer ehr-hook-secret"]}}},
    ]})
}

#[test]
fn labmcp_analyzer_simulator_through_an_astm_channel_completes_both_orders() {
    let rt = Runtime::new().unwrap();
    let dir = scratch("lab-results-labmcp");
    let (hook_url, mut hook) = rt.block_on(rest_hook());
    // No instrument to push to: the orders are only created, with the numbers the simulator's
    // results carry in O.3.
    let mut bundle = registry(
        "astm://127.0.0.1:0",
        "astm://127.0.0.1:1",
        "astm",
        &hook_url,
    );
    bundle["entry"]
        .as_array_mut()
        .unwrap()
        .retain(|e| e["resource"]["id"] != "orders");
    let (mut relay, _agent, base, port) = relay_and_agent(&dir, &bundle, "results");
    let fhir = Fhir {
        rt: &rt,
        token: rt.block_on(token(&base, "ehr", "ehr-secret-0123456")),
        base,
    };
    for (id, number, code) in [
        ("cbc-9", "S26-000123", "58410-2"),
        ("chem-9", "S26-000124", "24323-8"),
    ] {
        let order = json!({"resourceType": "ServiceRequest", "id": id, "status": "active", "intent": "order",
            "identifier": [{"value": number}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": "Patient/pat-1"}});
        assert_eq!(fhir.put(&order), 201);
    }
    // A CBC (20 results) and a chemistry panel; one frame of the first is damaged on purpose,
    // refused by the agent and sent again.
    let mut sim = python("OUTPOST_LABMCP", "labmcp");
    sim.arg(repo().join("scripts/peers/astm_labmcp_sim.py"))
        .arg(port.to_string());
    let (code, out, err) = run("labmcp simulator", sim, WAIT);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.starts_with("messages_sent=2 naks_received=1"), "{out}");
    let mut notified = Vec::new();
    for _ in 0..2 {
        let (auth, b) = recv(&rt, &mut hook);
        assert_eq!(auth, "Bearer ehr-hook-secret");
        notified.push(b);
    }
    let cbc = fhir.search("DiagnosticReport?based-on=ServiceRequest/cbc-9");
    assert_eq!(cbc.len(), 1);
    assert_eq!(cbc[0]["result"].as_array().unwrap().len(), 20);
    let wbc = fhir.search("Observation?based-on=ServiceRequest/cbc-9&code=WBC");
    assert_eq!(wbc.len(), 1, "{wbc:?}");
    assert_eq!(wbc[0]["valueQuantity"]["value"], 11.8);
    assert_eq!(wbc[0]["interpretation"][0]["coding"][0]["code"], "H");
    assert_eq!(
        fhir.search("DiagnosticReport?based-on=ServiceRequest/chem-9")
            .len(),
        1
    );
    assert_eq!(fhir.get("ServiceRequest/cbc-9")["status"], "completed");
    assert_eq!(fhir.get("ServiceRequest/chem-9")["status"], "completed");
    relay.wait_for("ServiceRequest/chem-9 completed", WAIT);
    validate(
        &dir,
        &[
            ("cbc", &fhir.stored("cbc-9")),
            ("chem", &fhir.stored("chem-9")),
            ("notified-1", &notified[0]),
            ("notified-2", &notified[1]),
        ],
    );
}

/// The relay (logging at info, so that the test can wait on what it did) and a connected agent
/// whose results channel listens on a free port; returns them, the base URL and the port.
fn relay_and_agent(
    dir: &std::path::Path,
    bundle: &Value,
    channel: &str,
) -> (Proc, Proc, String, u16) {
    let mut cmd = outpost();
    cmd.env("RUST_LOG", "info,relay=info");
    let (relay, base) = relay_process_with(cmd, dir, bundle, &[]);
    let mut agent = agent_process(
        &base,
        ("agent", "agent-secret-0123456"),
        "lab-agent",
        &dir.join("agent"),
        WAIT,
    );
    let port = agent.channel_port(channel, WAIT);
    (relay, agent, base, port)
}

struct Fhir<'a> {
    rt: &'a Runtime,
    base: String,
    token: String,
}

impl Fhir<'_> {
    fn get(&self, path: &str) -> Value {
        self.rt.block_on(async {
            let r = reqwest::Client::new()
                .get(format!("{}fhir/R4/{path}", self.base))
                .bearer_auth(&self.token)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "GET {path}");
            r.json().await.unwrap()
        })
    }

    fn search(&self, query: &str) -> Vec<Value> {
        self.get(query)["entry"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e["resource"].clone())
            .collect()
    }

    fn put(&self, resource: &Value) -> u16 {
        self.rt.block_on(async {
            reqwest::Client::new()
                .put(format!(
                    "{}fhir/R4/{}/{}",
                    self.base,
                    resource["resourceType"].as_str().unwrap(),
                    resource["id"].as_str().unwrap()
                ))
                .bearer_auth(&self.token)
                .json(resource)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    }

    /// The report of `order`, its results, its patient and specimens, as the relay stores
    /// them, in a transaction Bundle (PUT each) the validator reads.
    fn stored(&self, order: &str) -> Value {
        let mut resources =
            self.search(&format!("DiagnosticReport?based-on=ServiceRequest/{order}"));
        resources.extend(self.search(&format!("Observation?based-on=ServiceRequest/{order}")));
        let mut refs: Vec<String> = Vec::new();
        for r in &resources {
            refs.extend(r["subject"]["reference"].as_str().map(str::to_owned));
            for s in r["specimen"].as_array().into_iter().flatten() {
                refs.extend(s["reference"].as_str().map(str::to_owned));
            }
            refs.extend(r["specimen"]["reference"].as_str().map(str::to_owned));
        }
        refs.sort();
        refs.dedup();
        for r in refs.iter().filter(|r| !r.starts_with('#')) {
            resources.push(self.get(r));
        }
        let entry: Vec<Value> = resources
            .into_iter()
            .map(|r| {
                let ty = r["resourceType"].as_str().unwrap().to_owned();
                let id = r["id"].as_str().unwrap().to_owned();
                json!({"fullUrl": format!("{}fhir/R4/{ty}/{id}", self.base),
                    "request": {"method": "PUT", "url": format!("{ty}/{id}")},
                    "resource": r})
            })
            .collect();
        json!({"resourceType": "Bundle", "type": "transaction", "entry": entry})
    }
}

/// Every resource of `bundles` validates against FHIR R4 (fhir.resources 6.4.0).
fn validate(dir: &std::path::Path, bundles: &[(&str, &Value)]) {
    let python = std::env::var_os("OUTPOST_FHIR_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".tools/python/fhir-r4/bin/python"));
    assert!(
        python.exists(),
        "{} is missing: run `source scripts/peers.sh && ensure_peers`",
        python.display()
    );
    let out = dir.join("fhir");
    std::fs::create_dir_all(&out).unwrap();
    for (name, b) in bundles {
        std::fs::write(
            out.join(format!("{name}.json")),
            serde_json::to_vec_pretty(b).unwrap(),
        )
        .unwrap();
    }
    let mut cmd = Command::new(python);
    cmd.arg(repo().join("scripts/peers/fhir_validate.py"))
        .arg(&out);
    let (code, stdout, stderr) = run("fhir_validate.py", cmd, WAIT);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.starts_with(&format!("validated {} bundles, ", bundles.len())),
        "{stdout}"
    );
}

fn recv(rt: &Runtime, hook: &mut mpsc::Receiver<(String, Value)>) -> (String, Value) {
    rt.block_on(async { tokio::time::timeout(WAIT, hook.recv()).await })
        .expect("a rest-hook notification")
        .expect("the receiver runs")
}

fn count(bundle: &Value, ty: &str) -> usize {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["resource"]["resourceType"] == ty)
        .count()
}

const ORU: &str = "MSH|^~\\&|LABSYS|NORTHLAB|OUTPOST|HOSP|20240301101500+0100||ORU^R01|RES-0001|P|2.5.1\r\
PID|1||MRN-555^^^HOSP^MR||Doe^Jane||19800203|F\r\
ORC|RE|PL-cbc-1^OUTPOST|F-7781^NORTHLAB\r\
OBR|1|PL-cbc-1^OUTPOST|F-7781^NORTHLAB|58410-2^CBC panel - Blood by Automated count^LN|||20240301093000+0100|||||||||||||||20240301101500+0100|||F\r\
OBX|1|NM|6690-2^Leukocytes [#/volume] in Blood by Automated count^LN||7.2|10*3/uL^10*3/uL^UCUM|4.5-11.0|N|||F|||20240301100000+0100\r\
OBX|2|NM|718-7^Hemoglobin [Mass/volume] in Blood^LN||11.9|g/dL^g/dL^UCUM|12.0-16.0|L|||F|||20240301100000+0100\r\
OBX|3|NM|777-3^Platelets [#/volume] in Blood by Automated count^LN||250|10*3/uL^10*3/uL^UCUM|150-400|N|||F|||20240301100000+0100\r\
SPM|1|SP-7781&NORTHLAB||BLD^Whole blood^HL70487|||||||||||||20240301093000+0100\r";

#[test]
fn oru_from_medplum_hl7_send_through_an_mllp_channel_closes_the_order() {
    let rt = Runtime::new().unwrap();
    let dir = scratch("lab-results-hl7");
    let (hook_url, mut hook) = rt.block_on(rest_hook());
    let lis_port = port_for_peer();
    let bundle = registry(
        "mllp://127.0.0.1:0",
        &format!("mllp://127.0.0.1:{lis_port}"),
        "hl7-orm",
        &hook_url,
    );
    let (mut relay, _agent, base, port) = relay_and_agent(&dir, &bundle, "results");
    let mut cmd = medplum();
    cmd.args(["hl7", "listen", &lis_port.to_string()]);
    let mut lis = Proc::spawn("medplum hl7 listen", cmd);
    lis.wait_for(&format!("Listening on port {lis_port}"), WAIT);
    let fhir = Fhir {
        rt: &rt,
        token: rt.block_on(token(&base, "ehr", "ehr-secret-0123456")),
        base,
    };

    // The order goes out first: ORM^O01 at the LIS, placer number PL-cbc-1 in ORC-2.
    let order = json!({"resourceType": "ServiceRequest", "id": "cbc-1", "status": "active", "intent": "order",
        "identifier": [{"system": "urn:placer", "value": "PL-cbc-1", "type": {"coding": [{"code": "PLAC"}]}}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "58410-2", "display": "CBC panel - Blood by Automated count"}]},
        "subject": {"reference": "Patient/pat-1"}, "occurrenceDateTime": "2024-03-01T09:30:00Z"});
    assert_eq!(fhir.put(&order), 201);
    lis.wait_for("ORC|NW|PL-cbc-1|", WAIT);

    // The lab's ORU^R01 comes back through the agent's MLLP channel.
    let file = dir.join("oru.hl7");
    std::fs::write(&file, ORU).unwrap();
    let send = || {
        let mut cmd = medplum();
        cmd.args(["hl7", "send", "127.0.0.1", &port.to_string(), "--file"])
            .arg(&file);
        let (code, out, err) = run("medplum hl7 send", cmd, WAIT);
        assert_eq!(code, 0, "{out}\n{err}");
        out
    };
    let out = send();
    assert!(
        out.contains(
            "MSA|AA|RES-0001|stored 1 report(s), 5 resource(s); ServiceRequest/cbc-1 completed"
        ),
        "{out}"
    );

    let reports = fhir.search("DiagnosticReport?based-on=ServiceRequest/cbc-1");
    assert_eq!(reports.len(), 1);
    let report = &reports[0];
    assert_eq!(report["status"], "final");
    assert_eq!(
        report["subject"]["reference"], "Patient/pat-1",
        "matched by identifier"
    );
    assert_eq!(report["result"].as_array().unwrap().len(), 3);
    assert_eq!(fhir.search("DiagnosticReport?patient=pat-1").len(), 1);
    let hgb = fhir.search("Observation?code=http://loinc.org|718-7");
    assert_eq!(hgb.len(), 1);
    assert_eq!(hgb[0]["valueQuantity"]["code"], "g/dL");
    assert_eq!(hgb[0]["interpretation"][0]["coding"][0]["code"], "L");
    assert_eq!(
        fhir.search("Observation?date=2024-03-01&patient=Patient/pat-1")
            .len(),
        3
    );
    assert_eq!(fhir.get("ServiceRequest/cbc-1")["status"], "completed");

    let (auth, notified) = recv(&rt, &mut hook);
    assert_eq!(auth, "Bearer ehr-hook-secret");
    assert_eq!(notified["type"], "transaction");
    assert_eq!(count(&notified, "DiagnosticReport"), 1);
    assert_eq!(count(&notified, "Observation"), 3);

    // The instrument sends it again: acknowledged, nothing new, no second notification.
    let out = send();
    assert!(
        out.contains("MSA|AA|RES-0001|1 report(s) already stored"),
        "{out}"
    );
    relay.wait_for("1 report(s) already stored", WAIT);
    assert_eq!(
        fhir.search("DiagnosticReport?based-on=ServiceRequest/cbc-1")
            .len(),
        1
    );
    assert_eq!(
        fhir.search("Observation?based-on=ServiceRequest/cbc-1")
            .len(),
        3
    );
    assert_eq!(fhir.search("Specimen").len(), 1);
    assert_eq!(fhir.search("Patient").len(), 1);
    assert!(hook.try_recv().is_err(), "a resend notifies nobody");

    // Not a result message: AE with the reason.
    let adt = dir.join("adt.hl7");
    std::fs::write(
        &adt,
        "MSH|^~\\&|ADT|HOSP|OUTPOST|HOSP|20240301101500||ADT^A01|ADT-1|P|2.5.1\rPID|1||MRN-555\r",
    )
    .unwrap();
    let mut cmd = medplum();
    cmd.args(["hl7", "send", "127.0.0.1", &port.to_string(), "--file"])
        .arg(&adt);
    let (_, out, err) = run("medplum hl7 send", cmd, WAIT);
    assert!(out.contains("MSA|AE|ADT-1|"), "{out}\n{err}");
    assert!(out.contains("is not a result message"), "{out}");

    validate(
        &dir,
        &[("stored", &fhir.stored("cbc-1")), ("notified", &notified)],
    );
}

/// The results python-astm's client sends (scripts/peers/astm_pyastm_send.py): patient
/// PID777, specimen and order number SAMPLE9 (O.3), glucose 5.4 mmol/L, final.
fn python(var: &str, default: &str) -> Command {
    let dir = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".tools/python").join(default));
    assert!(
        dir.join("bin/python").exists(),
        "{} is missing: run `source scripts/peers.sh && ensure_peers`",
        dir.display()
    );
    let mut c = Command::new(dir.join("bin/python"));
    let shim = std::env::var_os("OUTPOST_PYSHIM")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("scripts/peers/pyshim"));
    c.env("PYTHONPATH", shim).env("PYTHONUNBUFFERED", "1");
    c
}

#[test]
fn astm_results_from_python_astm_through_an_astm_channel_close_the_order() {
    let rt = Runtime::new().unwrap();
    let dir = scratch("lab-results-astm");
    let (hook_url, mut hook) = rt.block_on(rest_hook());
    let analyzer_port = port_for_peer();
    let bundle = registry(
        "astm://127.0.0.1:0",
        &format!("astm://127.0.0.1:{analyzer_port}"),
        "astm",
        &hook_url,
    );
    let (mut relay, _agent, base, port) = relay_and_agent(&dir, &bundle, "results");
    // The analyzer's order side: python-astm's receiver.
    let mut recv_cmd = python("OUTPOST_PYASTM", "astm050");
    recv_cmd
        .arg(repo().join("scripts/peers/astm_pyastm_recv.py"))
        .arg(analyzer_port.to_string());
    let mut analyzer = Proc::spawn("python-astm receiver", recv_cmd);
    analyzer.wait_for("listening", WAIT);
    let fhir = Fhir {
        rt: &rt,
        token: rt.block_on(token(&base, "ehr", "ehr-secret-0123456")),
        base,
    };

    // The order goes out first: ASTM O record, specimen/order number SAMPLE9 in O.3.
    let order = json!({"resourceType": "ServiceRequest", "id": "glu-1", "status": "active", "intent": "order",
        "identifier": [{"value": "SAMPLE9", "type": {"coding": [{"code": "PLAC"}]}}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7", "display": "Glucose"}]},
        "subject": {"reference": "Patient/pat-1"}, "occurrenceDateTime": "2024-03-01T09:30:00Z"});
    assert_eq!(fhir.put(&order), 201);
    analyzer.wait_for("RECORD ['O', '1', 'SAMPLE9'", WAIT);

    // The analyzer's results come back through the agent's ASTM channel.
    let send = || {
        let mut cmd = python("OUTPOST_PYASTM", "astm050");
        // 247-byte frames, as E1381 wants (the 300-character comment takes two).
        cmd.arg(repo().join("scripts/peers/astm_pyastm_send.py"))
            .args([port.to_string(), "247".into()]);
        let (code, out, err) = run("python-astm sender", cmd, WAIT);
        assert_eq!(code, 0, "{out}\n{err}");
    };
    send();
    // Stored before the rest-hook hears of it.
    relay.wait_for("lab results stored", WAIT);
    let (auth, notified) = recv(&rt, &mut hook);
    assert_eq!(auth, "Bearer ehr-hook-secret");
    assert_eq!(count(&notified, "DiagnosticReport"), 1);
    let reports = fhir.search("DiagnosticReport?based-on=ServiceRequest/glu-1");
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0]["status"], "final");
    let glucose = fhir.search("Observation?based-on=ServiceRequest/glu-1");
    assert_eq!(glucose.len(), 1);
    assert_eq!(glucose[0]["valueQuantity"]["value"], 5.4);
    assert_eq!(glucose[0]["valueQuantity"]["code"], "mmol/L");
    let patient = reports[0]["subject"]["reference"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(fhir.get(&patient)["identifier"][0]["value"], "PID777");
    assert_eq!(
        fhir.search(&format!("DiagnosticReport?patient={patient}"))
            .len(),
        1
    );
    assert_eq!(fhir.get("ServiceRequest/glu-1")["status"], "completed");

    // Sent again: nothing new, nobody notified.
    send();
    relay.wait_for("1 report(s) already stored", WAIT);
    assert_eq!(
        fhir.search("DiagnosticReport?based-on=ServiceRequest/glu-1")
            .len(),
        1
    );
    assert_eq!(
        fhir.search("Observation?based-on=ServiceRequest/glu-1")
            .len(),
        1
    );
    assert!(hook.try_recv().is_err(), "a resend notifies nobody");

    validate(
        &dir,
        &[("stored", &fhir.stored("glu-1")), ("notified", &notified)],
    );
}
