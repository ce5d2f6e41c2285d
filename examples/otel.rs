//! A run seen the way an OpenTelemetry backend sees it: the crate's `tracing` spans, named after the
//! OpenTelemetry GenAI conventions, exported through tracing-opentelemetry.
//!
//! ```text
//! cargo run --release --example otel -- [QUESTION] [--model PATH] [--threads N]
//! ```
//!
//! A weather specialist with one tool runs as a node of a small graph. The spans go to opentelemetry_sdk's
//! in-memory exporter, and the example prints them as the trace a backend (Jaeger, Tempo, Langfuse) would show:
//! `invoke_agent weather` holding `chat SmolLM2-...` and `execute_tool get_weather`, with the `gen_ai.*`
//! attributes (token usage, finish reasons, provider, conversation id). To send them to a collector instead,
//! swap the in-memory exporter for opentelemetry-otlp's `SpanExporter` (see docs/ledger.md).

use std::collections::HashMap;
use std::sync::Arc;

use clap::Parser;
use opentelemetry::trace::{SpanId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use schemars::JsonSchema;
use serde::Deserialize;
use slm_agents::graph::Graph;
use slm_agents::prelude::*;
use tracing_subscriber::prelude::*;

const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// The example's options.
#[derive(Parser)]
#[command(about = "Runs a specialist in a graph and prints its OpenTelemetry GenAI spans as a trace.")]
struct Args {
    /// The question for the weather specialist.
    #[arg(default_value = "What is the weather in Lisbon?")]
    question: String,
    /// The GGUF model to run.
    #[arg(long, env = "SLM_MODEL", default_value = DEFAULT_MODEL)]
    model: String,
    /// CPU threads (default: the engine's choice).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Deserialize, JsonSchema)]
struct City {
    /// The city, such as Paris
    city: String,
}

/// Prints `span` and its children, indented.
fn print_tree(span: &SpanData, children: &HashMap<SpanId, Vec<&SpanData>>, depth: usize) {
    let ms = span.end_time.duration_since(span.start_time).unwrap_or_default().as_secs_f64() * 1e3;
    println!("{:indent$}{} [{:?}, {ms:.1} ms]", "", span.name, span.span_kind, indent = depth * 2);
    for kv in &span.attributes {
        let key = kv.key.as_str();
        if key.starts_with("gen_ai.") || key == "error.type" {
            println!("{:indent$}  {key} = {}", "", kv.value, indent = depth * 2);
        }
    }
    let mut kids = children.get(&span.span_context.span_id()).cloned().unwrap_or_default();
    kids.sort_by_key(|s| s.start_time);
    for child in kids {
        print_tree(child, children, depth + 1);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    // What a host does once at start-up: a subscriber with tracing-opentelemetry's layer. Here the exporter
    // keeps the spans in memory; opentelemetry-otlp's would send them to a collector.
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("otel-example")))
        .init();

    let mut builder = LlamaModel::builder(&args.model);
    if let Some(t) = args.threads {
        builder = builder.threads(t);
    }
    let slm = builder.load()?;
    let weather = ModelSpecialist::builder("weather")
        .description("Tells the weather of a city")
        .model(slm)
        .instructions(
            "You tell the weather. Call get_weather for the city the user names, then answer in one sentence.",
        )
        .tool_dyn(Arc::new(tool_fn("get_weather", "Current weather in a city", |a: City| async move {
            Ok::<_, std::io::Error>(serde_json::json!({ "city": a.city, "forecast": "sunny", "temp_c": 21 }))
        })))
        .max_tool_calls(1)
        .max_steps(3)
        .build()?;
    let mut g = Graph::builder::<String>();
    let question = g.input();
    let answer = g.add(weather).named("weather").after(&question);
    let graph = g.output(answer).build()?.named("weather desk");

    let ctx = RunContext::new().with_run_id("otel-example");
    // The SDK's simple exporter blocks on each export, so the run goes on a runtime of its own thread here.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let reply = runtime.block_on(graph.run(args.question.clone(), &ctx))?;
    println!("{} -> {reply}\n", args.question);

    let spans = exporter.get_finished_spans()?;
    let ids: Vec<SpanId> = spans.iter().map(|s| s.span_context.span_id()).collect();
    let mut children: HashMap<SpanId, Vec<&SpanData>> = HashMap::new();
    let mut roots = Vec::new();
    for span in &spans {
        if ids.contains(&span.parent_span_id) {
            children.entry(span.parent_span_id).or_default().push(span);
        } else {
            roots.push(span);
        }
    }
    println!("trace of {} spans, as an OpenTelemetry backend shows it:", spans.len());
    for root in roots {
        print_tree(root, &children, 1);
    }
    provider.shutdown()?;
    Ok(())
}
