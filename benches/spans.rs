//! What the OpenTelemetry GenAI spans cost: a 32-token completion on SmolLM2-135M through a run's model gate,
//! with no subscriber, and with tracing-opentelemetry's layer attached (spans built, exported to memory).
//! Run with `cargo bench --bench spans` (nothing else running).
//!
//! First a one-shot table (alternating runs, medians, and the ratio), then criterion on both.

use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use slm_agents::model::{LlamaModel, Message, Request};
use slm_agents::run::RunContext;
use tracing_subscriber::prelude::*;

fn model() -> LlamaModel {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    LlamaModel::builder(path).threads(2).load().expect("the test model (make models)")
}

fn request() -> Request {
    Request::chat([Message::user("Tell me about the sea.")]).with_max_tokens(32)
}

/// One completion through the gate, in a run. On a tokio runtime: the SDK's simple span processor exports with
/// `futures::executor::block_on`, which may not run inside another futures executor.
fn complete(model: &LlamaModel, ctx: &RunContext) {
    thread_local! {
        static RT: tokio::runtime::Runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    }
    let c = RT.with(|rt| rt.block_on(ctx.complete(model, request()))).expect("a completion");
    assert!(c.usage.completion_tokens > 0);
}

/// A subscriber with tracing-opentelemetry's layer over an in-memory exporter, the exporter, and the provider
/// (dropping it would shut the exporting down).
fn otel() -> (impl tracing::Subscriber + Send + Sync, InMemorySpanExporter, SdkTracerProvider) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("bench"));
    (tracing_subscriber::registry().with(layer), exporter, provider)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn table(model: &LlamaModel) {
    let ctx = RunContext::new().with_run_id("bench");
    let (subscriber, exporter, _provider) = otel();
    let dispatch = tracing::Dispatch::new(subscriber);
    // Warm-up, with the layer: tracing caches a callsite's interest when it is first hit, and a first hit with
    // no subscriber at all would leave these spans off for good (an application sets its subscriber first).
    tracing::dispatcher::with_default(&dispatch, || complete(model, &ctx));
    exporter.reset();
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for _ in 0..15 {
        let t = Instant::now();
        complete(model, &ctx);
        off.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        tracing::dispatcher::with_default(&dispatch, || complete(model, &ctx));
        on.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let finished = exporter.get_finished_spans();
    let spans = finished.map(|s| s.len()).unwrap_or(0);
    assert_eq!(spans, 15, "one chat span a completion with the layer on");
    let (off, on) = (median(off), median(on));
    println!(
        "32-token completion, median of 15: spans off {off:.1} ms, OTel layer on {on:.1} ms ({spans} spans exported)"
    );
    println!("overhead_ratio {:.4} (target <= 1.01)", on / off);
}

fn bench(c: &mut Criterion) {
    let model = model();
    table(&model);
    let ctx = RunContext::new().with_run_id("bench");
    let mut group = c.benchmark_group("complete_32_tokens");
    group.sample_size(10);
    group.bench_function("spans_off", |b| b.iter(|| complete(&model, &ctx)));
    let (subscriber, exporter, _provider) = otel();
    let dispatch = tracing::Dispatch::new(subscriber);
    group.bench_function("otel_layer", |b| {
        b.iter(|| {
            tracing::dispatcher::with_default(&dispatch, || complete(&model, &ctx));
            exporter.reset();
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
