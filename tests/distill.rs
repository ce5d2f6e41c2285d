//! The conversion loop's curation (S2) over a ledger of real runs: failed calls dropped, duplicates dropped,
//! personal data gone from everything kept; near-duplicates found with the real model's embeddings.

mod support;

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use slm_agents::distill::{curate, remove_near_duplicates};
use slm_agents::ledger::LedgerRecord;
use slm_agents::model::ScriptedModel;
use slm_agents::prelude::*;
use slm_agents::run::MemoryRecorder;
use slm_agents::tool::tool_fn;

#[derive(Deserialize, JsonSchema)]
struct Mail {
    #[schemars(length(max = 80))]
    to: String,
}

fn records(events: &MemoryRecorder) -> Vec<LedgerRecord> {
    events
        .events()
        .into_iter()
        .enumerate()
        .map(|(i, event)| LedgerRecord { schema: 1, seq: i as u64, at_ms: 0, event })
        .collect()
}

fn run(events: &Arc<MemoryRecorder>, request: &str, reply: &str) {
    let s = ModelSpecialist::builder("mailer")
        .model(ScriptedModel::new([reply, r#"{"answer": "sent"}"#]))
        .tool_dyn(Arc::new(tool_fn("mail.send", "Sends a mail to an address", |m: Mail| async move {
            Ok::<_, std::io::Error>(format!("sent to {}", m.to))
        })))
        .build()
        .unwrap();
    let ctx = RunContext::new().with_recorder(events.clone());
    let _ = futures::executor::block_on(s.run(request.to_string(), &ctx));
}

#[test]
fn curation_drops_failures_and_duplicates_and_scrubs_personal_data() {
    let events = Arc::new(MemoryRecorder::default());
    let call = r#"{"tool": "mail.send", "arguments": {"to": "dana@example.com"}}"#;
    run(&events, "Send the mail to dana@example.com", call);
    run(&events, "Send the mail to dana@example.com", call);
    run(
        &events,
        "Mail the report to joe@example.org, or call +44 20 7946 0958",
        r#"{"tool": "mail.send", "arguments": {"to": "joe@example.org"}}"#,
    );
    run(&events, "Send it", "this is not JSON");
    let curated = curate(&records(&events));
    let r = &curated.report;
    eprintln!("{r}");
    // Per run: a call turn and an answer turn; the last run's only turn failed.
    assert_eq!(r.calls, 7);
    assert_eq!(r.failed_dropped, 1);
    assert_eq!(r.duplicates_removed, 2, "the second run repeats the first, both turns");
    assert_eq!(r.kept, 4);
    assert!(r.redacted_calls >= 3, "{r:?}");
    let all = serde_json::to_string(&curated.calls).unwrap();
    for secret in ["dana@example.com", "joe@example.org", "7946"] {
        assert!(!all.contains(secret), "{secret} left in {all}");
    }
    // One numbering per call: the address in the request and in the call's arguments is one placeholder.
    let first = &curated.calls[0];
    let placeholder = first.tool_calls[0].arguments["to"].as_str().unwrap();
    assert!(placeholder.starts_with('[') && first.request().contains(placeholder), "{first:?}");
    // The tools the model was shown travel with the call.
    assert_eq!(first.tools[0].name, "mail.send");
}

#[tokio::test]
async fn near_duplicates_are_found_with_the_real_models_embeddings() {
    let events = Arc::new(MemoryRecorder::default());
    let call = r#"{"tool": "mail.send", "arguments": {"to": "the team"}}"#;
    run(&events, "Send the weekly report to the team", call);
    run(&events, "Send the weekly report to the team!", call);
    run(&events, "What is the capital of France?", r#"{"answer": "Paris"}"#);
    let mut curated = curate(&records(&events));
    let before = curated.calls.len();
    let model = support::smollm2();
    let dropped = remove_near_duplicates(&mut curated, &model, 0.97).await.unwrap();
    eprintln!("{}", curated.report);
    assert!(dropped >= 1, "the retyped request is a near-duplicate");
    assert_eq!(curated.calls.len(), before - dropped);
    assert!(curated.calls.iter().any(|c| c.request().contains("capital")), "a different request is kept");
    assert_eq!(curated.report.near_duplicates_removed, dropped);
}
