//! `outpost fleet status|stats|logs|reload|ping|upgrade`: one bulk request to the relay per
//! selection of agents (`Agent/$op?_id=a,b`, the caller's own search, or every Agent), a row
//! per agent, printed as a table or as one JSON array. The exit code is the worst row's: 4 the
//! relay refused the credentials, 2 no such agent or a bad search, 3 an agent did not answer,
//! 1 an agent answered no (or, for `status`, is not connected), 0 all well.

use std::process::ExitCode;
use std::time::Duration;

use agent_core::{PushAnswer, PushOptions, RelayClient};
use serde_json::{Value, json};

use super::{Op, Targets};
use crate::exit;

/// What came of one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// The agent answered no, or is not connected (`status`).
    Negative(String),
    /// The agent did not answer in time, or is not reachable.
    NoAnswer(String),
}

/// One agent's line of the report.
#[derive(Debug)]
struct Row {
    id: String,
    name: String,
    outcome: Outcome,
    /// What the agent answered, as the operation reads it.
    data: Value,
}

/// A request that failed as a whole: its exit code and the message.
struct Failure(u8, String);

pub(crate) fn run(targets: &Targets, op: Op) -> anyhow::Result<ExitCode> {
    let client = match super::client(&targets.relay)? {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let selections = match selections(&targets.agents) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(exit::USAGE));
        }
    };
    let rows = crate::runtime()?.block_on(async {
        let mut rows = Vec::new();
        for query in &selections {
            rows.extend(rows_of(&client, &op, query).await?);
        }
        Ok::<_, Failure>(rows)
    });
    let rows = match rows {
        Ok(r) => r,
        Err(Failure(code, text)) => {
            eprintln!("error: {text}");
            if code == exit::AUTH {
                eprintln!(
                    "hint: check --client-id and --client-secret (or MEDPLUM_CLIENT_ID and MEDPLUM_CLIENT_SECRET)"
                );
            }
            return Ok(ExitCode::from(code));
        }
    };
    if targets.json {
        println!(
            "{}",
            Value::Array(rows.iter().map(|r| row_json(&op, r)).collect())
        );
    } else {
        print_table(&op, &rows);
    }
    let worst = rows
        .iter()
        .map(|r| match r.outcome {
            Outcome::Ok => exit::OK,
            Outcome::Negative(_) => exit::NEGATIVE,
            Outcome::NoAnswer(_) => exit::NO_ANSWER,
        })
        .max_by_key(|c| match *c {
            exit::NO_ANSWER => 2,
            exit::NEGATIVE => 1,
            _ => 0,
        })
        .unwrap_or(exit::OK);
    Ok(ExitCode::from(worst))
}

/// The Agent searches that `agents` name: one `_id=` search for the plain ids, one per
/// `Agent?...` search, or every Agent when there are none.
fn selections(agents: &[String]) -> Result<Vec<String>, String> {
    let mut ids = Vec::new();
    let mut queries = Vec::new();
    for a in agents {
        if let Some(q) = a.strip_prefix("Agent?") {
            queries.push(q.replace(' ', "%20"));
        } else {
            let id = a.strip_prefix("Agent/").unwrap_or(a);
            if id.is_empty()
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            {
                return Err(format!(
                    "{a:?} names no agent: give its id, Agent/<id>, or a search such as Agent?name=Lab or Agent?identifier=[system|]value"
                ));
            }
            ids.push(id.to_owned());
        }
    }
    if !ids.is_empty() {
        queries.insert(0, format!("_id={}", ids.join(",")));
    }
    if agents.is_empty() {
        queries.push(String::new());
    }
    Ok(queries)
}

/// The operation and its own parameters.
fn operation(op: &Op) -> (&'static str, Vec<String>) {
    match op {
        Op::Status | Op::Ping(..) => ("$bulk-status", Vec::new()),
        Op::Stats => ("$stats", Vec::new()),
        Op::Logs(limit) => (
            "$fetch-logs",
            limit.iter().map(|l| format!("limit={l}")).collect(),
        ),
        Op::Reload => ("$reload-config", Vec::new()),
        Op::Upgrade(u) => {
            let pair = |k: &str, v: &str| {
                form_urlencoded::Serializer::new(String::new())
                    .append_pair(k, v)
                    .finish()
            };
            let given = [
                ("version", &u.version),
                ("binary", &u.binary),
                ("sha256", &u.sha256),
            ];
            (
                "$upgrade",
                given
                    .into_iter()
                    .filter_map(|(k, v)| v.as_deref().map(|v| pair(k, v)))
                    .chain(u.force.then(|| "force=true".to_owned()))
                    .collect(),
            )
        }
    }
}

/// Runs `op` on the agents `query` selects.
async fn rows_of(client: &RelayClient, op: &Op, query: &str) -> Result<Vec<Row>, Failure> {
    let (name, params) = operation(op);
    let all: Vec<&str> = std::iter::once(query)
        .filter(|q| !q.is_empty())
        .chain(params.iter().map(String::as_str))
        .collect();
    let path = if all.is_empty() {
        name.to_owned()
    } else {
        format!("{name}?{}", all.join("&"))
    };
    let bundle = client.read("Agent", &path).await.map_err(failure)?;
    let mut rows: Vec<Row> = bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| row(op, &e["resource"]))
        .collect();
    if let Op::Ping(host, count) = op {
        for r in &mut rows {
            ping(client, r, host, *count).await.map_err(failure)?;
        }
    }
    Ok(rows)
}

/// A whole request's failure: whose fault, and the exit code that says so.
fn failure(e: agent_core::Error) -> Failure {
    let code = match &e {
        agent_core::Error::Unauthorized
        | agent_core::Error::Login {
            status: 400 | 401 | 403,
            ..
        }
        | agent_core::Error::Status {
            status: 401 | 403, ..
        } => exit::AUTH,
        // "No agent(s) for given query", a bad search parameter.
        agent_core::Error::Status {
            status: 400 | 404, ..
        } => exit::USAGE,
        _ => exit::NO_ANSWER,
    };
    Failure(code, e.to_string())
}

/// One bulk entry (`Parameters` with `agent` and `result`) as a row.
fn row(op: &Op, entry: &Value) -> Row {
    let part = |n: &str| {
        entry["parameter"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == n))
            .map(|p| p["resource"].clone())
            .unwrap_or(Value::Null)
    };
    let agent = part("agent");
    let result = part("result");
    let mut row = Row {
        id: agent["id"].as_str().unwrap_or_default().to_owned(),
        name: agent["name"].as_str().unwrap_or_default().to_owned(),
        outcome: Outcome::Ok,
        data: Value::Null,
    };
    if result["resourceType"] == "OperationOutcome" {
        let issue = &result["issue"][0];
        if matches!(issue["severity"].as_str(), Some("error" | "fatal")) {
            let text = issue["details"]["text"]
                .as_str()
                .unwrap_or("error")
                .to_owned();
            row.outcome = match issue["code"].as_str() {
                Some("timeout" | "transient") => Outcome::NoAnswer(text),
                _ => Outcome::Negative(text),
            };
            return row;
        }
    }
    let param = |n: &str| {
        result["parameter"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == n))
            .cloned()
            .unwrap_or(Value::Null)
    };
    match op {
        Op::Status | Op::Ping(..) => {
            let status = param("status")["valueCode"]
                .as_str()
                .unwrap_or("unknown")
                .to_owned();
            row.data = json!({
                "enabledStatus": agent["status"].as_str().unwrap_or("unknown"),
                "connectionStatus": status,
                "version": param("version")["valueString"].as_str().unwrap_or(""),
                "statusLastUpdated": param("lastUpdated")["valueInstant"].as_str().unwrap_or("N/A"),
            });
            if status != "connected" {
                row.outcome = Outcome::Negative(format!("agent is {status}"));
            }
        }
        Op::Stats => {
            row.data = param("stats")["valueString"]
                .as_str()
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or(Value::Null);
        }
        Op::Logs(_) => {
            row.data = Value::Array(
                param("logs")["valueString"]
                    .as_str()
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect(),
            );
        }
        Op::Reload | Op::Upgrade(..) => {}
    }
    row
}

/// Pings `host` from the agent of `row` (which came from `$bulk-status`); an agent that is
/// not connected is not asked.
async fn ping(
    client: &RelayClient,
    row: &mut Row,
    host: &str,
    count: u32,
) -> Result<(), agent_core::Error> {
    if row.outcome != Outcome::Ok {
        row.outcome = Outcome::NoAnswer(format!(
            "not connected ({})",
            row.data["connectionStatus"].as_str().unwrap_or("unknown")
        ));
        row.data = json!({"host": host});
        return Ok(());
    }
    let opts = PushOptions {
        wait_for_response: true,
        wait_timeout: Some(Duration::from_secs(10 + 2 * u64::from(count))),
        return_ack: None,
    };
    let answer = client
        .push_to_agent(
            &format!("Agent/{}", row.id),
            host,
            &format!("PING {count}"),
            agent_protocol::CONTENT_TYPE_PING,
            &opts,
        )
        .await;
    row.data = json!({"host": host});
    match answer {
        Ok(PushAnswer::Answer { body, .. }) => row.data["output"] = body.into(),
        Ok(PushAnswer::Delivered) => {}
        Err(agent_core::Error::Push { code, text, .. }) => {
            row.outcome = if code == "timeout" || code == "transient" {
                Outcome::NoAnswer(text)
            } else {
                Outcome::Negative(text)
            };
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

/// A row as the JSON output has it: `id`, `name`, `outcome` (`ok`, `negative`,
/// `no-answer`), `error` when not ok, and the operation's fields.
fn row_json(op: &Op, r: &Row) -> Value {
    let mut o = json!({"id": r.id, "name": r.name});
    match &r.outcome {
        Outcome::Ok => o["outcome"] = "ok".into(),
        Outcome::Negative(e) => {
            o["outcome"] = "negative".into();
            o["error"] = e.clone().into();
        }
        Outcome::NoAnswer(e) => {
            o["outcome"] = "no-answer".into();
            o["error"] = e.clone().into();
        }
    }
    match op {
        Op::Status | Op::Ping(..) => {
            if let Value::Object(m) = &r.data {
                for (k, v) in m {
                    o[k] = v.clone();
                }
            }
        }
        Op::Stats if !r.data.is_null() => o["stats"] = r.data.clone(),
        Op::Logs(_) if !r.data.is_null() => o["logs"] = r.data.clone(),
        _ => {}
    }
    o
}

/// `text` cells in aligned columns, two spaces apart.
fn print_columns(lines: &[Vec<String>]) {
    let mut widths = Vec::new();
    for l in lines {
        for (i, c) in l.iter().enumerate() {
            if widths.len() <= i {
                widths.push(0);
            }
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    for l in lines {
        let mut out = String::new();
        for (i, c) in l.iter().enumerate() {
            if i + 1 == l.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    }
}

/// What went wrong, for a table cell.
fn problem(r: &Row) -> Option<String> {
    match &r.outcome {
        Outcome::Ok => None,
        Outcome::Negative(e) => Some(format!("error: {e}")),
        Outcome::NoAnswer(e) => Some(format!("no answer: {e}")),
    }
}

/// Milliseconds as the table shows them.
fn ms(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x >= 0.0 => format!("{x:.1}"),
        _ => "-".to_owned(),
    }
}

fn rtt_cells(rtt: &Value) -> Vec<String> {
    vec![
        rtt["count"].to_string(),
        ms(&rtt["p50"]),
        ms(&rtt["p95"]),
        ms(&rtt["p99"]),
        rtt["pendingCount"].to_string(),
    ]
}

fn print_table(op: &Op, rows: &[Row]) {
    let mut lines: Vec<Vec<String>> = Vec::new();
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    match op {
        Op::Status => {
            lines.push(
                [
                    "AGENT",
                    "NAME",
                    "ENABLED",
                    "CONNECTION",
                    "VERSION",
                    "LAST UPDATED",
                ]
                .map(String::from)
                .to_vec(),
            );
            for r in rows {
                lines.push(vec![
                    r.id.clone(),
                    r.name.clone(),
                    s(&r.data["enabledStatus"]),
                    s(&r.data["connectionStatus"]),
                    s(&r.data["version"]),
                    s(&r.data["statusLastUpdated"]),
                ]);
            }
        }
        Op::Reload | Op::Upgrade(..) => {
            lines.push(["AGENT", "NAME", "RESULT"].map(String::from).to_vec());
            for r in rows {
                lines.push(vec![
                    r.id.clone(),
                    r.name.clone(),
                    problem(r).unwrap_or_else(|| "ok".to_owned()),
                ]);
            }
        }
        Op::Ping(..) => {
            for r in rows {
                println!("{} ({}): ping {}", r.id, r.name, s(&r.data["host"]));
                match problem(r) {
                    Some(p) => println!("  {p}"),
                    None => {
                        for l in s(&r.data["output"]).lines() {
                            println!("  {l}");
                        }
                    }
                }
            }
            return;
        }
        Op::Logs(_) => {
            for r in rows {
                if let Some(p) = problem(r) {
                    lines.push(vec![r.id.clone(), String::new(), String::new(), p]);
                    continue;
                }
                for l in r.data.as_array().into_iter().flatten() {
                    lines.push(vec![
                        r.id.clone(),
                        s(&l["timestamp"]),
                        s(&l["level"]),
                        s(&l["msg"]),
                    ]);
                }
            }
        }
        Op::Stats => {
            lines.push(
                ["AGENT", "NAME", "LIVE", "CONNECTIONS", "QUEUED"]
                    .map(String::from)
                    .to_vec(),
            );
            for r in rows {
                if let Some(p) = problem(r) {
                    lines.push(vec![r.id.clone(), r.name.clone(), p]);
                    continue;
                }
                let d = &r.data;
                lines.push(vec![
                    r.id.clone(),
                    r.name.clone(),
                    d["live"].to_string(),
                    d["hl7ConnectionsOpen"].to_string(),
                    d["hl7QueueDepth"].to_string(),
                ]);
                let channels = d["channelStats"].as_object().cloned().unwrap_or_default();
                if !channels.is_empty() {
                    lines.push(
                        [
                            "", "CHANNEL", "RECEIVED", "SENT", "ERRORED", "QUEUED", "RTT N",
                            "P50 MS", "P95 MS", "P99 MS", "PENDING",
                        ]
                        .map(String::from)
                        .to_vec(),
                    );
                }
                for (name, c) in &channels {
                    let mut l = vec![
                        String::new(),
                        name.clone(),
                        c["received"].to_string(),
                        c["sent"].to_string(),
                        c["errored"].to_string(),
                        c["queued"].to_string(),
                    ];
                    l.extend(rtt_cells(&c["rtt"]));
                    lines.push(l);
                }
                let remotes = d["clientStats"].as_object().cloned().unwrap_or_default();
                if !remotes.is_empty() {
                    lines.push(
                        [
                            "", "REMOTE", "", "", "", "", "RTT N", "P50 MS", "P95 MS", "P99 MS",
                            "PENDING",
                        ]
                        .map(String::from)
                        .to_vec(),
                    );
                }
                for (remote, c) in &remotes {
                    let mut l = vec![String::new(), remote.clone()];
                    l.extend(std::iter::repeat_n(String::new(), 4));
                    l.extend(rtt_cells(&c["rtt"]));
                    lines.push(l);
                }
            }
        }
    }
    print_columns(&lines);
}
