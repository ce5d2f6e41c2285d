//! The JSON Lines ledger: every model and tool call of a real run, read back; torn last lines are skipped.

mod support;

use std::io::Write;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use slm_agents::ledger::{read_jsonl, JsonlLedger, SCHEMA_VERSION};
use slm_agents::prelude::*;
use slm_agents::run::RunEvent;
use slm_agents::Error;

#[derive(Deserialize, JsonSchema)]
struct Lookup {
    #[schemars(length(max = 40))]
    city: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
struct Reply {
    #[schemars(length(max = 80))]
    text: String,
}

#[tokio::test]
async fn a_real_run_is_written_and_read_back() {
    let path = support::scratch_dir("ledger").join("run.jsonl");
    let _ = std::fs::remove_file(&path);
    let ledger = Arc::new(JsonlLedger::create(&path).unwrap());
    let specialist = ModelSpecialist::builder("weather")
        .model(support::smollm2())
        .instructions("You give the weather. First call get_weather with the city.")
        .tool_dyn(Arc::new(tool_fn("get_weather", "Current weather in a city", |a: Lookup| async move {
            Ok::<_, std::io::Error>(serde_json::json!({ "city": a.city, "sky": "sunny" }))
        })))
        .output::<Reply>()
        .max_tool_calls(1)
        .build()
        .unwrap();
    let ctx = RunContext::new().with_recorder(ledger.clone());
    let reply = specialist.run("Weather in Lisbon?".to_string(), &ctx).await.unwrap();
    assert!(reply.text.len() <= 80);

    ledger.flush(); // the writer thread appends in the background
    let (records, skipped) = read_jsonl(&path).unwrap();
    assert_eq!(skipped, 0);
    assert!(records.len() >= 2, "{records:?}");
    assert!(records.iter().all(|r| r.schema == SCHEMA_VERSION));
    assert!(records.windows(2).all(|w| w[0].seq < w[1].seq));
    let model_calls: Vec<_> =
        records.iter().filter_map(|r| if let RunEvent::ModelCall(m) = &r.event { Some(m) } else { None }).collect();
    assert!(!model_calls.is_empty());
    assert!(model_calls.iter().all(|m| m.specialist == "weather" && m.usage.is_some_and(|u| u.prompt_tokens > 0)));

    // A process killed mid-write leaves a torn last line: skipped, with the rest intact.
    let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(br#"{"schema":1,"seq":99,"at_ms":1,"event":{"ModelCall":{"speci"#).unwrap();
    drop(f);
    let (again, skipped) = read_jsonl(&path).unwrap();
    assert_eq!((again.len(), skipped), (records.len(), 1));
}

#[test]
fn a_bad_line_in_the_middle_or_a_newer_schema_is_an_error() {
    let dir = support::scratch_dir("ledger");
    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, "not json\n{}\n").unwrap();
    assert!(matches!(read_jsonl(&bad), Err(Error::LedgerLine { line: 1, .. })));
    let newer = dir.join("newer.jsonl");
    let line = format!(
        r#"{{"schema":{},"seq":0,"at_ms":0,"event":{{"Redaction":{{"model":"m","replaced":[]}}}}}}"#,
        SCHEMA_VERSION + 1
    );
    std::fs::write(&newer, format!("{line}\n")).unwrap();
    assert!(matches!(read_jsonl(&newer), Err(Error::LedgerLine { .. })));
    assert!(matches!(read_jsonl(dir.join("missing.jsonl")), Err(Error::Ledger { .. })));
}

#[test]
fn an_event_of_a_kind_from_a_newer_version_is_skipped() {
    let dir = support::scratch_dir("ledger");
    let path = dir.join("kinds.jsonl");
    let known = r#"{"schema":1,"seq":0,"at_ms":0,"event":{"Redaction":{"run":"r","id":0,"parent":null,"node":null,"model":"m","replaced":[]}}}"#;
    let unknown = r#"{"schema":1,"seq":1,"at_ms":0,"event":{"Teleport":{"run":"r","id":1}}}"#;
    std::fs::write(&path, format!("{unknown}\n{known}\n")).unwrap();
    let (records, skipped) = read_jsonl(&path).unwrap();
    assert_eq!((records.len(), skipped), (1, 1));
    // A known kind with a bad body is still an error.
    let broken = r#"{"schema":1,"seq":1,"at_ms":0,"event":{"ModelCall":{"run":"r"}}}"#;
    std::fs::write(&path, format!("{broken}\n{known}\n")).unwrap();
    assert!(matches!(read_jsonl(&path), Err(Error::LedgerLine { line: 1, .. })));
}
