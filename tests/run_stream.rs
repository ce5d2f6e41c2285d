//! A run as one stream of updates: nodes, model calls with their tokens, tool calls, and the output, on a
//! scripted model (every step, in order) and on the real model (tokens tagged with the specialist, adding up
//! to its output); a reader that does not read holds the run back; dropping the stream cancels the run.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use schemars::JsonSchema;
use serde::Deserialize;
use slm_agents::graph::Graph;
use slm_agents::model::ScriptedModel;
use slm_agents::prelude::*;
use slm_agents::run::{CallIds, NodeEvent, Outcome, RunEvent, RunStream, RunUpdate};
use slm_agents::specialist::ModelSpecialist;

#[derive(Deserialize, JsonSchema)]
struct City {
    /// The city
    city: String,
}

fn weather(model: impl LanguageModel + 'static) -> ModelSpecialist {
    ModelSpecialist::builder("weather")
        .description("Tells the weather of a city")
        .model(model)
        .instructions("You tell the weather. Call get_weather for the city the user names.")
        .tool_dyn(Arc::new(tool_fn("get_weather", "Current weather in a city", |a: City| async move {
            Ok::<_, std::io::Error>(format!("sunny, 21 C in {}", a.city))
        })))
        .max_tool_calls(1)
        .max_steps(3)
        .build()
        .unwrap()
}

/// The updates of a run, in order, and its output.
async fn collect<T>(mut updates: RunStream<'_, T>) -> (Vec<RunUpdate<T>>, Option<Result<T>>) {
    let mut seen = Vec::new();
    while let Some(update) = updates.next().await {
        match update {
            RunUpdate::Finished(out) => return (seen, Some(Ok(out))),
            RunUpdate::Failed(e) => return (seen, Some(Err(e))),
            other => seen.push(other),
        }
    }
    (seen, None)
}

fn kind<T>(update: &RunUpdate<T>) -> String {
    match update {
        RunUpdate::NodeStarted { ids } => format!("node started {}", ids.node.as_deref().unwrap_or("")),
        RunUpdate::NodeFinished(e) => format!("node finished {}", e.ids.node.as_deref().unwrap_or("")),
        RunUpdate::ModelCallStarted { specialist, step, .. } => format!("model {specialist} {step}"),
        RunUpdate::Token { .. } => "token".into(),
        RunUpdate::ModelCallFinished(e) => format!("model finished {}", e.step),
        RunUpdate::ToolCallStarted { tool, .. } => format!("tool {tool}"),
        RunUpdate::ToolCallFinished(e) => format!("tool finished {}", e.tool),
        RunUpdate::Event(_) => "event".into(),
        _ => "other".into(),
    }
}

/// The text of each model call from its tokens, by call id.
fn token_text<T>(updates: &[RunUpdate<T>]) -> BTreeMap<u64, String> {
    let mut text = BTreeMap::<u64, String>::new();
    for u in updates {
        if let RunUpdate::Token { call, text: piece, .. } = u {
            text.entry(*call).or_default().push_str(piece);
        }
    }
    text
}

#[test]
fn a_graph_streams_every_step_in_order() {
    let script = ScriptedModel::new([
        r#"{"tool":"get_weather","arguments":{"city":"Lisbon"}}"#,
        r#"{"answer":"Sunny in Lisbon"}"#,
    ]);
    let mut g = Graph::builder::<String>();
    let question = g.input();
    let answer = g.add(weather(script)).named("weather").after(&question);
    let graph = g.output(answer).build().unwrap();
    let events = Arc::new(MemoryRecorder::default());
    let ctx = RunContext::new().with_recorder(events.clone());

    let (updates, output) = futures::executor::block_on(collect(graph.run_stream("Weather in Lisbon?".into(), &ctx)));

    assert_eq!(output.unwrap().unwrap(), "Sunny in Lisbon");
    let mut kinds: Vec<String> = updates.iter().map(kind).collect();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            "node started weather",
            "model weather 0",
            "token",
            "model finished 0",
            "tool get_weather",
            "tool finished get_weather",
            "model weather 1",
            "token",
            "model finished 1",
            "node finished weather",
        ]
    );
    // Each call's tokens add up to its output, and carry its id.
    let calls: Vec<_> = updates
        .iter()
        .filter_map(|u| match u {
            RunUpdate::ModelCallFinished(e) => Some(e.clone()),
            _ => None,
        })
        .collect();
    let text = token_text(&updates);
    for call in &calls {
        assert_eq!(text.get(&call.ids.id), call.output.as_ref(), "call {}", call.ids.id);
    }
    // The started updates name the same ids as the finished ones, and nest under the node.
    let node = updates
        .iter()
        .find_map(|u| match u {
            RunUpdate::NodeStarted { ids } => Some(ids.clone()),
            _ => None,
        })
        .unwrap();
    for u in &updates {
        if let RunUpdate::ModelCallStarted { ids, .. } | RunUpdate::ToolCallStarted { ids, .. } = u {
            assert_eq!(ids.parent, Some(node.id));
        }
    }
    let tool = updates.iter().find_map(|u| match u {
        RunUpdate::ToolCallStarted { ids, arguments, .. } => Some((ids.id, arguments.clone())),
        _ => None,
    });
    let finished = updates.iter().find_map(|u| match u {
        RunUpdate::ToolCallFinished(e) => Some((e.ids.id, e.arguments.clone())),
        _ => None,
    });
    assert_eq!(tool, finished);
    // The recorders still get every event, the same ones the stream's finished updates carry.
    let recorded = events.events();
    let streamed: Vec<RunEvent> = updates
        .into_iter()
        .filter_map(|u| match u {
            RunUpdate::NodeFinished(e) => Some(RunEvent::Node(e)),
            RunUpdate::ModelCallFinished(e) => Some(RunEvent::ModelCall(e)),
            RunUpdate::ToolCallFinished(e) => Some(RunEvent::ToolCall(e)),
            RunUpdate::Event(e) => Some(e),
            _ => None,
        })
        .collect();
    assert_eq!(recorded, streamed);
}

#[test]
fn a_failed_run_ends_with_its_error() {
    let mut g = Graph::builder::<u32>();
    let n = g.input();
    let fails = g
        .add(|_: u32| async move { Err::<u32, _>(Error::InvalidRequest { reason: "no".into() }) })
        .named("fails")
        .after(&n);
    let graph = g.output(fails).build().unwrap();
    let (updates, output) = futures::executor::block_on(collect(graph.run_stream(1, &RunContext::new())));
    assert!(matches!(output, Some(Err(Error::Node { .. }))), "{output:?}");
    match updates.last() {
        Some(RunUpdate::NodeFinished(NodeEvent { outcome: Outcome::Failed { .. }, .. })) => {}
        other => panic!("expected the failed node last, got {other:?}"),
    }
}

#[tokio::test]
async fn a_reader_that_does_not_read_holds_the_run_back() {
    let recorded = Arc::new(AtomicUsize::new(0));
    let counter = recorded.clone();
    let mut updates = RunStream::new(&RunContext::new(), move |ctx| async move {
        for i in 0..200u64 {
            ctx.record(RunEvent::Node(NodeEvent {
                ids: CallIds { id: i, ..ctx.ids() },
                latency: Duration::ZERO,
                attempts: 1,
                outcome: Outcome::Succeeded,
                route_reason: None,
            }));
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
        }
        Ok(200u64)
    });
    for read in 1..=5 {
        assert!(matches!(updates.next().await, Some(RunUpdate::NodeFinished(_))));
        // Give the run every chance to go on without the reader.
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(
            recorded.load(Ordering::SeqCst) <= read,
            "{} events recorded, {read} read",
            recorded.load(Ordering::SeqCst)
        );
    }
    let (rest, output) = collect(updates).await;
    assert_eq!(rest.len(), 195);
    assert_eq!(output.unwrap().unwrap(), 200);
}

#[tokio::test]
async fn dropping_the_stream_cancels_the_run() {
    struct Flag(Arc<AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let mut g = Graph::builder::<u32>();
    let n = g.input();
    let forever = g
        .add(move |x: u32| {
            let guard = Flag(flag.clone());
            async move {
                futures::future::pending::<()>().await;
                drop(guard);
                Ok::<_, Error>(x)
            }
        })
        .named("forever")
        .after(&n);
    let graph = g.output(forever).build().unwrap();
    let mut updates = graph.run_stream(1, &RunContext::new());
    assert!(matches!(updates.next().await, Some(RunUpdate::NodeStarted { .. })));
    let nothing = tokio::time::timeout(Duration::from_millis(50), updates.next()).await;
    assert!(nothing.is_err(), "the node never finishes");
    assert!(!dropped.load(Ordering::SeqCst));
    drop(updates);
    assert!(dropped.load(Ordering::SeqCst), "dropping the stream drops the running node");
}

#[tokio::test]
async fn on_the_real_model_tokens_are_tagged_and_add_up_to_the_output() {
    let specialist = weather(support::smollm2());
    let events = Arc::new(MemoryRecorder::default());
    let ctx = RunContext::new().with_recorder(events.clone());
    let (updates, output) = collect(specialist.run_stream("What is the weather in Paris?".into(), &ctx)).await;
    output.expect("the run ends").expect("the specialist answers");

    let started: Vec<(u64, String)> = updates
        .iter()
        .filter_map(|u| match u {
            RunUpdate::ModelCallStarted { ids, specialist, .. } => Some((ids.id, specialist.clone())),
            _ => None,
        })
        .collect();
    assert!(!started.is_empty());
    let mut tokens = 0;
    for u in &updates {
        if let RunUpdate::Token { call, specialist, .. } = u {
            tokens += 1;
            assert_eq!(specialist, "weather");
            assert!(started.iter().any(|(id, _)| id == call), "a token of an unknown call {call}");
        }
    }
    assert!(tokens > started.len(), "{tokens} token updates for {} calls: the text came whole", started.len());
    let text = token_text(&updates);
    let calls = events.model_calls();
    assert_eq!(calls.len(), started.len());
    for call in &calls {
        assert!(call.outcome.is_success(), "{:?}", call.outcome);
        assert_eq!(text.get(&call.ids.id), call.output.as_ref());
    }
    // The model's first turn asked for the tool, and the stream showed it called and answered.
    assert!(updates.iter().any(|u| matches!(u, RunUpdate::ToolCallStarted { tool, .. } if tool == "get_weather")));
    assert!(updates.iter().any(|u| matches!(u, RunUpdate::ToolCallFinished(e) if e.outcome.is_success())));
}

#[tokio::test]
async fn without_tokens_calls_come_whole() {
    let specialist = weather(support::smollm2());
    let updates = specialist.run_stream("What is the weather in Rome?".into(), &RunContext::new()).tokens(false);
    let (updates, output) = collect(updates).await;
    output.expect("the run ends").expect("the specialist answers");
    assert!(!updates.iter().any(|u| matches!(u, RunUpdate::Token { .. })));
    assert!(updates.iter().any(|u| matches!(u, RunUpdate::ModelCallFinished(e) if e.output.is_some())));
}

/// A host's own model that cannot stream: `stream` is its `complete`, through `TokenStream::from_future`.
#[derive(Clone)]
struct HostModel(Arc<ScriptedModel>);

#[slm_agents::async_trait]
impl LanguageModel for HostModel {
    fn name(&self) -> &str {
        "host"
    }
    async fn complete(&self, request: Request) -> Result<Completion> {
        self.0.complete(request).await
    }
    fn stream(&self, request: Request) -> slm_agents::model::TokenStream {
        let model = self.clone();
        slm_agents::model::TokenStream::from_future(async move { model.complete(request).await })
    }
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        self.0.embed(texts).await
    }
}

#[test]
fn a_model_that_does_not_stream_tokens_has_its_calls_made_whole() {
    let host = HostModel(Arc::new(ScriptedModel::new([r#"{"answer":"Cloudy"}"#, "plain text"])));
    let specialist = weather(host.clone());
    let (updates, output) =
        futures::executor::block_on(collect(specialist.run_stream("Weather in Oslo?".into(), &RunContext::new())));
    assert_eq!(output.unwrap().unwrap(), "Cloudy");
    assert!(!updates.iter().any(|u| matches!(u, RunUpdate::Token { .. })));
    assert!(updates.iter().any(|u| matches!(u, RunUpdate::ModelCallFinished(e) if e.output.is_some())));
    // Its stream, from its `complete`: the text as one piece, and the completion at the end.
    let mut stream = host.stream(Request::chat([Message::user("hi")]));
    let pieces: Vec<String> = futures::executor::block_on(async {
        let mut pieces = Vec::new();
        while let Some(piece) = stream.next().await {
            pieces.push(piece.unwrap());
        }
        pieces
    });
    assert_eq!(pieces, ["plain text"]);
    assert_eq!(stream.completion().unwrap().text, "plain text");
}
