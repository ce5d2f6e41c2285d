//! Tools that misbehave cannot hold a specialist past its timeout or flood its prompt. The model is scripted
//! (it asks for the tool, then answers), so these tests measure the specialist's handling of the tool alone;
//! tests/specialist.rs runs the same tool loop on the real model.

use std::sync::Arc;
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::Deserialize;
use slm_agents::agent::Agent;
use slm_agents::model::ScriptedModel;
use slm_agents::run::{MemoryRecorder, Outcome, RunContext};
use slm_agents::specialist::ModelSpecialist;
use slm_agents::tool::{tool_fn, tool_fn_blocking};

#[derive(Debug, Deserialize, JsonSchema)]
struct Nothing {}

fn script() -> Arc<ScriptedModel> {
    Arc::new(ScriptedModel::new([r#"{"tool":"slow","arguments":{}}"#, r#"{"answer":"done"}"#]))
}

/// A tool that blocks its thread for 3 s, as a careless synchronous call would.
fn sleeper() -> impl slm_agents::tool::DynTool {
    tool_fn("slow", "Takes its time", |_: Nothing| async move {
        std::thread::sleep(Duration::from_secs(3));
        Ok::<_, std::io::Error>("late")
    })
}

async fn run(specialist: &ModelSpecialist, events: &Arc<MemoryRecorder>) -> (String, Duration) {
    let started = Instant::now();
    let ctx = RunContext::new().with_recorder(events.clone());
    let answer = specialist.run("go".to_string(), &ctx).await.unwrap();
    (answer, started.elapsed())
}

fn assert_timed_out(events: &MemoryRecorder) {
    let calls = events.tool_calls();
    assert_eq!(calls.len(), 1);
    assert!(calls[0].result.is_none(), "a late result must not be used: {:?}", calls[0]);
    assert!(matches!(&calls[0].outcome, Outcome::Failed { error } if error.contains("did not answer within")));
}

#[tokio::test]
async fn an_isolated_tool_that_blocks_its_thread_is_cut_off_at_its_timeout() {
    let model = script();
    let specialist = ModelSpecialist::builder("s")
        .model_arc(model.clone())
        .tool_dyn(Arc::new(sleeper()))
        .tool_timeout(Duration::from_millis(500))
        .isolate_tools(true)
        .build()
        .unwrap();
    let events = Arc::new(MemoryRecorder::default());
    let (answer, took) = run(&specialist, &events).await;
    assert_eq!(answer, "done");
    assert!(took < Duration::from_millis(2000), "held for {took:?}");
    assert_timed_out(&events);
    // The model was told about the timeout.
    let second = format!("{:?}", model.requests()[1].prompt);
    assert!(second.contains("did not answer within"), "{second}");
}

#[tokio::test]
async fn a_blocking_tool_runs_on_its_own_thread_and_is_cut_off_at_its_timeout() {
    let slow = tool_fn_blocking("slow", "Takes its time", |_: Nothing| {
        std::thread::sleep(Duration::from_secs(3));
        Ok::<_, std::io::Error>("late")
    });
    let specialist = ModelSpecialist::builder("s")
        .model_arc(script())
        .tool_dyn(Arc::new(slow))
        .tool_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let events = Arc::new(MemoryRecorder::default());
    let (answer, took) = run(&specialist, &events).await;
    assert_eq!(answer, "done");
    assert!(took < Duration::from_millis(2000), "held for {took:?}");
    assert_timed_out(&events);
}

#[tokio::test]
async fn a_late_result_of_an_inline_tool_is_never_used() {
    // Not isolated: the blocked thread holds the specialist until the tool returns, but what it returns is
    // dropped as a timeout.
    let specialist = ModelSpecialist::builder("s")
        .model_arc(script())
        .tool_dyn(Arc::new(sleeper()))
        .tool_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let events = Arc::new(MemoryRecorder::default());
    let (answer, _) = run(&specialist, &events).await;
    assert_eq!(answer, "done");
    assert_timed_out(&events);
}

#[tokio::test]
async fn a_huge_tool_result_is_cut_to_the_limit_and_names_the_tool() {
    let huge = tool_fn("slow", "Returns a lot", |_: Nothing| async move {
        Ok::<_, std::io::Error>(vec!["x".repeat(1000); 5000]) // about 5 MB of JSON
    });
    let model = script();
    let specialist = ModelSpecialist::builder("s")
        .model_arc(model.clone())
        .tool_dyn(Arc::new(huge))
        .max_tool_result_bytes(2000)
        .build()
        .unwrap();
    let events = Arc::new(MemoryRecorder::default());
    let started = Instant::now();
    let (answer, _) = run(&specialist, &events).await;
    assert_eq!(answer, "done");
    assert!(started.elapsed() < Duration::from_secs(2));
    let shown = events.tool_calls()[0].result.clone().unwrap();
    assert_eq!(shown["tool"], "slow");
    assert_eq!(shown["truncated"], true);
    assert_eq!(shown["limit"], 2000);
    assert!(shown["bytes"].as_u64().unwrap() > 5_000_000);
    let second = format!("{:?}", model.requests()[1].prompt);
    assert!(second.len() < 10_000, "the prompt got {} bytes", second.len());
}
