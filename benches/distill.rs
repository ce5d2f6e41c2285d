//! The conversion loop's steps on 1,000 and 10,000 logged calls: the time and memory of each, to see how they
//! grow. Run with `cargo bench --bench distill` (nothing else running).
//!
//! The calls are the bundled workload's (`examples/data/workload.jsonl`), repeated with distinct runs,
//! requests and outputs so that none is a duplicate of another. Embedding is the model's cost (measured
//! once, per request); the other steps get the workload's SmolLM2 embeddings, each repeat's jittered.
//! First a one-shot table of every step at both sizes, then criterion on the 1,000-call steps.

use std::path::PathBuf;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use slm_agents::distill::{self, ClusterOptions, Curated};
use slm_agents::ledger::{self, LedgerRecord};
use slm_agents::model::{LanguageModel, LlamaModel, Role};
use slm_agents::run::RunEvent;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Resident memory of this process, in MiB (Linux).
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<f64>().ok()))
        .map_or(0.0, |pages| pages * 4096.0 / 1048576.0)
}

/// `n` model calls: the workload's, repeated, each repeat with its own run, request and output.
fn scaled(records: &[LedgerRecord], n: usize) -> Vec<LedgerRecord> {
    let calls: Vec<&LedgerRecord> = records.iter().filter(|r| matches!(r.event, RunEvent::ModelCall(_))).collect();
    (0..n)
        .map(|i| {
            let (rep, base) = (i / calls.len(), calls[i % calls.len()]);
            let mut record = base.clone();
            record.seq = i as u64;
            if let RunEvent::ModelCall(call) = &mut record.event {
                if rep > 0 {
                    call.ids.run = format!("{}-{rep}", call.ids.run);
                    if let Some(m) = call.messages.iter_mut().rev().find(|m| m.role == Role::User) {
                        m.content = format!("{} (ref {rep})", m.content);
                    }
                    if let Some(output) = &mut call.output {
                        output.push_str(&" ".repeat(rep));
                    }
                }
            }
            record
        })
        .collect()
}

/// The embedding of each curated call: its base request's, jittered by its repeat.
fn embeddings(curated: &Curated, base: &std::collections::HashMap<String, Vec<f32>>) -> Vec<Vec<f32>> {
    curated
        .calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let request = c.request();
            let key = request.rfind(" (ref ").map_or(request, |at| &request[..at]);
            let mut v = base.get(key).cloned().unwrap_or_default();
            for (j, x) in v.iter_mut().enumerate() {
                *x *= 1.0 + 0.01 * (((i * 31 + j * 17) % 13) as f32 - 6.0) / 6.0;
            }
            v
        })
        .collect()
}

fn table(records: &[LedgerRecord], base: &std::collections::HashMap<String, Vec<f32>>) {
    println!("{:>7} {:<22} {:>9} {:>12}", "calls", "step", "seconds", "RSS MiB");
    for n in [1_000, 10_000] {
        let scaled = scaled(records, n);
        let step = |name: &str, started: Instant| {
            println!("{n:>7} {name:<22} {:>9.3} {:>12.0}", started.elapsed().as_secs_f64(), rss_mib());
        };
        let t = Instant::now();
        let mut curated = distill::curate(&scaled);
        step("S2 curate", t);
        let mut vectors = embeddings(&curated, base);
        let t = Instant::now();
        distill::drop_near_duplicates(&mut curated, &mut vectors, 0.97);
        step("S2 near-duplicates", t);
        let t = Instant::now();
        let clustering = distill::fit(&curated, &vectors, &ClusterOptions::default()).expect("clusters");
        step("S3 cluster", t);
        let dir = std::env::temp_dir().join(format!("slm-bench-export-{}", std::process::id()));
        let t = Instant::now();
        distill::export(&curated, &clustering, &dir, 0.2).expect("export");
        step("S5 export", t);
        let _ = std::fs::remove_dir_all(&dir);
        println!("{n:>7} kept {} calls, k = {}", curated.calls.len(), clustering.k);
    }
}

fn benches(c: &mut Criterion) {
    let (records, _) = ledger::read_jsonl(root().join("examples/data/workload.jsonl")).expect("the bundled workload");
    let model = LlamaModel::builder(root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf")).load().expect("SmolLM2");
    let curated = distill::curate(&records);
    let mut requests: Vec<String> = curated.calls.iter().map(|c| c.request().to_owned()).collect();
    requests.sort();
    requests.dedup();
    let rt = futures::executor::block_on(async {
        let t = Instant::now();
        let vectors = model.embed(&requests).await.expect("embeddings");
        (vectors, t.elapsed())
    });
    println!(
        "embedding: {} requests in {:.2} s ({:.1} ms per request, {})",
        requests.len(),
        rt.1.as_secs_f64(),
        rt.1.as_secs_f64() * 1000.0 / requests.len() as f64,
        model.name()
    );
    let base: std::collections::HashMap<String, Vec<f32>> = requests.into_iter().zip(rt.0).collect();
    table(&records, &base);

    let thousand = scaled(&records, 1_000);
    let mut group = c.benchmark_group("distill_1000_calls");
    group.sample_size(10);
    group.bench_function("curate", |b| b.iter(|| distill::curate(&thousand)));
    let curated = distill::curate(&thousand);
    let vectors = embeddings(&curated, &base);
    group.bench_function("near_duplicates", |b| {
        b.iter(|| {
            let (mut c, mut v) = (curated.clone(), vectors.clone());
            distill::drop_near_duplicates(&mut c, &mut v, 0.97)
        })
    });
    group.bench_function("cluster", |b| b.iter(|| distill::fit(&curated, &vectors, &ClusterOptions::default())));
    group.finish();
}

criterion_group!(distill_benches, benches);
criterion_main!(distill_benches);
