//! Batching, lanes and the prefix cache: the criterion counterparts of `perf_report`'s ratios.
//!
//! `cargo bench --bench batching` (needs `scripts/fetch-models.sh`).
//! - `prefix/cold_first_token` vs `prefix/warm_first_token`: a ~300-token specialist prompt computed from
//!   scratch vs reused from a slot's KV cells.
//! - `four_requests/sequential` vs `four_requests/concurrent_lanes` vs `four_requests/batched_one_lane`.
//! - Memory is not a criterion figure: `perf_report` measures it in fresh processes.

use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{criterion_group, criterion_main, Criterion};
use slm_agents::prelude::*;

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/SmolLM2-135M-Instruct.Q4_1.gguf");

fn instructions(n: usize) -> String {
    format!("Specialist {n}: you find flights for the travel team. ")
        + &"Use only the data your tools return; never invent names, prices or times. Keep answers short. ".repeat(14)
}

fn prefix(c: &mut Criterion) {
    let model = LlamaModel::builder(MODEL).threads(1).load().expect("run scripts/fetch-models.sh first");
    let ask = |n: usize| {
        Request::chat([Message::system(instructions(n)), Message::user("Flights on Friday?")]).with_max_tokens(1)
    };
    let mut g = c.benchmark_group("prefix");
    g.sample_size(10);
    let fresh = AtomicUsize::new(1000);
    g.bench_function("cold_first_token", |b| {
        b.iter(|| {
            futures::executor::block_on(model.complete(ask(fresh.fetch_add(1, Ordering::Relaxed)))).expect("complete")
        })
    });
    futures::executor::block_on(model.complete(ask(1))).expect("complete");
    g.bench_function("warm_first_token", |b| {
        b.iter(|| futures::executor::block_on(model.complete(ask(1))).expect("complete"))
    });
    g.finish();
}

fn story(i: usize) -> Request {
    Request::chat([Message::user(format!("Write a story, number {i}, about a lighthouse."))]).with_max_tokens(48)
}

fn four_requests(c: &mut Criterion) {
    let cores = std::thread::available_parallelism().map_or(2, usize::from).max(2);
    let lanes = LlamaModel::builder(MODEL).threads(cores).lanes(cores).load().expect("load");
    let one = LlamaModel::builder(MODEL).threads(cores).load().expect("load");
    let mut g = c.benchmark_group("four_requests");
    g.sample_size(10);
    g.bench_function("sequential", |b| {
        b.iter(|| {
            for i in 0..4 {
                futures::executor::block_on(one.complete(story(i))).expect("complete");
            }
        })
    });
    let concurrent = |model: &LlamaModel| {
        let all = futures::executor::block_on(futures::future::join_all((0..4).map(|i| model.complete(story(i)))));
        all.into_iter().for_each(|r| drop(r.expect("complete")));
    };
    g.bench_function("concurrent_lanes", |b| b.iter(|| concurrent(&lanes)));
    g.bench_function("batched_one_lane", |b| b.iter(|| concurrent(&one)));
    g.finish();
}

criterion_group!(benches, prefix, four_requests);
criterion_main!(benches);
