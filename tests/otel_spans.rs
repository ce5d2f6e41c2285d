//! The `tracing` spans after the OpenTelemetry GenAI conventions: names, attributes and nesting, captured by a
//! layer, on a scripted model (a tool call for certain) and on the real model (usage from llama.cpp).

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use schemars::JsonSchema;
use serde::Deserialize;
use slm_agents::agent::Agent;
use slm_agents::model::{LanguageModel, Message, Request, ScriptedModel};
use slm_agents::run::RunContext;
use slm_agents::specialist::ModelSpecialist;
use slm_agents::tool::tool_fn;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// One captured span: its name, its fields as text, and the index of its parent span.
#[derive(Debug, Clone)]
struct Rec {
    name: String,
    parent: Option<usize>,
    fields: BTreeMap<String, String>,
}

impl Rec {
    fn get(&self, field: &str) -> Option<&str> {
        self.fields.get(field).map(String::as_str)
    }
}

#[derive(Default)]
struct State {
    spans: Vec<Rec>,
    live: HashMap<u64, usize>,
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<State>>);

impl Capture {
    fn spans(&self) -> Vec<Rec> {
        self.0.lock().unwrap().spans.clone()
    }
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut state = self.0.lock().unwrap();
        let parent = ctx.span(id).and_then(|s| s.parent()).and_then(|p| state.live.get(&p.id().into_u64()).copied());
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        state.spans.push(Rec { name: attrs.metadata().name().to_owned(), parent, fields });
        let index = state.spans.len() - 1;
        state.live.insert(id.into_u64(), index);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        let mut state = self.0.lock().unwrap();
        if let Some(&i) = state.live.get(&id.into_u64()) {
            values.record(&mut Fields(&mut state.spans[i].fields));
        }
    }

    fn on_close(&self, id: Id, _ctx: Context<'_, S>) {
        self.0.lock().unwrap().live.remove(&id.into_u64());
    }
}

/// Runs `f` with the capturing layer as this thread's subscriber; returns the spans.
fn captured(f: impl FnOnce()) -> Vec<Rec> {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    tracing::subscriber::with_default(subscriber, f);
    capture.spans()
}

#[derive(Debug, Deserialize, JsonSchema)]
struct City {
    city: String,
}

fn weather_tool(fail: bool) -> impl slm_agents::tool::DynTool {
    tool_fn("weather.current", "The current weather in a city", move |a: City| async move {
        if fail {
            Err(std::io::Error::other("the weather service is down"))
        } else {
            Ok(format!("sunny in {}", a.city))
        }
    })
}

#[test]
fn a_specialist_run_is_an_invoke_agent_span_over_its_chat_and_tool_spans() {
    let specialist = ModelSpecialist::builder("weather")
        .model(ScriptedModel::new([
            r#"{"tool": "weather.current", "arguments": {"city": "Oslo"}}"#,
            r#"{"answer": "Sunny."}"#,
        ]))
        .tool_dyn(Arc::new(weather_tool(false)))
        .relevance_threshold(None)
        .build()
        .unwrap();
    let spans = captured(|| {
        let ctx = RunContext::new().with_run_id("run-7");
        let answer = futures::executor::block_on(specialist.run("Weather in Oslo?".to_string(), &ctx)).unwrap();
        assert_eq!(answer, "Sunny.");
    });
    let agent = spans.iter().position(|s| s.name == "invoke_agent").expect("an invoke_agent span");
    let a = &spans[agent];
    assert_eq!(a.get("otel.name"), Some("invoke_agent weather"));
    assert_eq!(a.get("gen_ai.operation.name"), Some("invoke_agent"));
    assert_eq!(a.get("gen_ai.agent.name"), Some("weather"));
    assert_eq!(a.get("gen_ai.conversation.id"), Some("run-7"));

    let chats: Vec<&Rec> = spans.iter().filter(|s| s.name == "chat").collect();
    assert_eq!(chats.len(), 2, "{spans:#?}");
    for chat in &chats {
        assert_eq!(chat.parent, Some(agent), "a model call nests in the agent's run");
        assert_eq!(chat.get("otel.name"), Some("chat scripted"));
        assert_eq!(chat.get("gen_ai.operation.name"), Some("chat"));
        assert_eq!(chat.get("gen_ai.provider.name"), Some("scripted"));
        assert_eq!(chat.get("gen_ai.request.model"), Some("scripted"));
        assert_eq!(chat.get("gen_ai.conversation.id"), Some("run-7"));
        assert!(chat.get("gen_ai.usage.output_tokens").is_some(), "{chat:?}");
        assert!(chat.get("gen_ai.response.finish_reasons").is_some(), "{chat:?}");
    }
    let tools: Vec<&Rec> = spans.iter().filter(|s| s.name == "execute_tool").collect();
    assert_eq!(tools.len(), 1, "{spans:#?}");
    assert_eq!(tools[0].parent, Some(agent));
    assert_eq!(tools[0].get("otel.name"), Some("execute_tool weather.current"));
    assert_eq!(tools[0].get("gen_ai.tool.name"), Some("weather.current"));
    assert_eq!(tools[0].get("error.type"), None);
}

#[test]
fn a_failing_tool_and_a_failing_run_carry_error_type() {
    let specialist = ModelSpecialist::builder("weather")
        .model(ScriptedModel::new([r#"{"tool": "weather.current", "arguments": {"city": "Oslo"}}"#; 8]))
        .tool_dyn(Arc::new(weather_tool(true)))
        .relevance_threshold(None)
        .max_steps(2)
        .build()
        .unwrap();
    let spans = captured(|| {
        let ctx = RunContext::new();
        assert!(futures::executor::block_on(specialist.run("Weather in Oslo?".to_string(), &ctx)).is_err());
    });
    let tool = spans.iter().find(|s| s.name == "execute_tool").expect("a tool span");
    assert_eq!(tool.get("error.type"), Some("Failed"));
    let agent = spans.iter().find(|s| s.name == "invoke_agent").expect("an agent span");
    assert!(agent.get("error.type").is_some(), "{agent:?}");
}

#[test]
fn on_the_real_model_chat_and_embedding_spans_carry_llama_cpp_usage() {
    let model = support::smollm2();
    let spans = captured(|| {
        let ctx = RunContext::new().with_run_id("real");
        let request = Request::chat([Message::user("Say hello.")]).with_max_tokens(8);
        let c = futures::executor::block_on(ctx.complete(&model, request)).unwrap();
        assert!(c.usage.completion_tokens > 0);
        futures::executor::block_on(ctx.embed(&model, &["a flight to Paris".to_string()])).unwrap();
    });
    let chat = spans.iter().find(|s| s.name == "chat").expect("a chat span");
    assert_eq!(chat.get("gen_ai.provider.name"), Some("llama.cpp"));
    assert_eq!(chat.get("otel.name"), Some(format!("chat {}", model.name()).as_str()));
    assert_eq!(chat.get("gen_ai.conversation.id"), Some("real"));
    let input: u64 = chat.get("gen_ai.usage.input_tokens").unwrap().parse().unwrap();
    let output: u64 = chat.get("gen_ai.usage.output_tokens").unwrap().parse().unwrap();
    assert!(input > 3 && (1..=8).contains(&output), "{chat:?}");
    assert!(matches!(chat.get("gen_ai.response.finish_reasons"), Some("stop" | "length")), "{chat:?}");
    let embed = spans.iter().find(|s| s.name == "embeddings").expect("an embeddings span");
    assert_eq!(embed.get("gen_ai.operation.name"), Some("embeddings"));
    assert_eq!(embed.get("gen_ai.provider.name"), Some("llama.cpp"));
}
