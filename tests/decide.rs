//! A specialist's decision without running anything: the calls it would make, for an approval step or an
//! evaluation. Scripted model here; tests/specialist.rs does the same on the real model.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use slm_agents::model::ScriptedModel;
use slm_agents::run::{MemoryRecorder, RunContext};
use slm_agents::specialist::{Decided, ModelSpecialist};
use slm_agents::tool::tool_fn;

#[derive(Debug, Deserialize, JsonSchema)]
struct Lookup {
    #[schemars(length(max = 40))]
    city: String,
}

fn specialist(reply: &str, runs: Arc<AtomicUsize>) -> ModelSpecialist {
    // A dotted name, as MCP servers and BFCL write them.
    let tool = tool_fn("weather.current", "Current weather in a city", move |a: Lookup| {
        let runs = runs.clone();
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(format!("sunny in {}", a.city))
        }
    });
    ModelSpecialist::builder("weather").model(ScriptedModel::new([reply])).tool_dyn(Arc::new(tool)).build().unwrap()
}

#[tokio::test]
async fn decide_returns_the_call_without_running_it() {
    let runs = Arc::new(AtomicUsize::new(0));
    let s = specialist(r#"{"tool":"weather.current","arguments":{"city":"Lisbon"}}"#, runs.clone());
    let events = Arc::new(MemoryRecorder::default());
    let decided = s.decide("Weather in Lisbon?".to_string(), &RunContext::new().with_recorder(events.clone())).await;
    match decided.unwrap() {
        Decided::Calls(calls) => {
            assert_eq!(calls.len(), 1);
            assert_eq!(calls[0].tool, "weather.current");
            assert_eq!(calls[0].arguments["city"], "Lisbon");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0, "nothing ran");
    let calls = events.model_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].tool_calls.len(), 1, "the decided call is recorded");
}

#[tokio::test]
async fn decide_returns_a_typed_answer() {
    let s = specialist(r#"{"answer":"I only know the weather."}"#, Arc::new(AtomicUsize::new(0)));
    let decided = s.decide("Who won the match?".to_string(), &RunContext::new()).await.unwrap();
    assert_eq!(decided, Decided::Answer("I only know the weather.".to_string()));
}
