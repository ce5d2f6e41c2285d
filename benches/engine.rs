//! Engine overhead: a short greedy completion, the same under a JSON-Schema constraint, and prompt reuse.
//!
//! `cargo bench --bench engine` (needs `scripts/fetch-models.sh`). Ratios against a raw llama-cpp-2 loop are
//! printed by `cargo run --release --example perf_report`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use schemars::JsonSchema;
use serde::Deserialize;
use slm_agents::prelude::*;

#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
struct Meeting {
    #[schemars(length(max = 60))]
    title: String,
    #[schemars(range(min = 5, max = 480))]
    duration_minutes: u32,
    #[schemars(length(max = 8), inner(length(max = 40)))]
    attendees: Vec<String>,
}

fn model() -> LlamaModel {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    LlamaModel::builder(path).threads(1).slots(1).load().expect("run scripts/fetch-models.sh first")
}

fn request() -> Request {
    Request::chat([
        Message::system("You turn requests into calendar entries. Answer in JSON."),
        Message::user("Add a meeting with Dana and Lee for 30 minutes about the budget"),
    ])
    .with_max_tokens(32)
}

fn bench(c: &mut Criterion) {
    let model = model();
    let mut g = c.benchmark_group("engine");
    g.sample_size(10);
    g.throughput(Throughput::Elements(32));
    g.bench_function("complete_32_tokens", |b| {
        b.iter(|| futures::executor::block_on(model.complete(request())).expect("complete"))
    });
    let schema = OutputSchema::of::<Meeting>().expect("schema");
    g.bench_function("complete_32_tokens_constrained", |b| {
        b.iter(|| {
            futures::executor::block_on(model.complete(request().with_constraint(schema.constraint())))
                .expect("complete")
        })
    });
    g.throughput(Throughput::Elements(1));
    let long = Request::chat([Message::system("You are a travel assistant. ".repeat(40)), Message::user("Hi")])
        .with_max_tokens(1);
    g.bench_function("cached_prefix_first_token", |b| {
        b.iter(|| futures::executor::block_on(model.complete(long.clone())).expect("complete"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
