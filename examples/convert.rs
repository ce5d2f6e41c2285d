//! The paper's LLM-to-SLM conversion loop on a ledger, in one command: curate (S2), cluster (S3), export
//! training files (S5) and replay each cluster's held-out calls on candidate small models (S4).
//!
//! ```text
//! cargo run --release --example convert -- [--ledger PATH] [--out DIR] [--models A.gguf,B.gguf]
//!     [--embed-model PATH] [--near-duplicates 0.97] [--held-out 0.2] [--max-cases 10] [--min-accuracy 0.8]
//!     [--truth TRUTH.json]
//! ```
//!
//! Defaults: the bundled workload (`examples/data/workload.jsonl`, written by `examples/make_workload.rs`),
//! `target/convert` as the output, SmolLM2-135M to embed with, and SmolLM2-135M and Gemma-3-270M as the
//! candidates where their files are present. It writes `summary.json`, `clusters.jsonl`,
//! `export/cluster-K/{train,test}.jsonl` and `selection.json` into the output directory. With `--truth` (a
//! file whose `tasks` map each run to its true task, as `workload.truth.json`), it also prints the clusters'
//! purity.
//!
//! Prices: the logged large model at $2.50 / $10 per million prompt / generated tokens (`--large-price
//! IN,OUT`), the local candidates at $0.20 per hour of the machine (a laptop over three years of working hours, plus power) (`--local-price-per-hour`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use slm_agents::distill::{self, Candidate, ClusterOptions, SelectOptions, Selection};
use slm_agents::ledger::{self, CostModel, Price};
use slm_agents::model::{LanguageModel, LlamaModel};

/// Gemma's turns; system and tool messages as user turns.
const GEMMA_TEMPLATE: &str = "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m.role == 'assistant' else 'user' }}\n{{ m.content | trim }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}";
/// ChatML, the default of many small models.
const CHATML_TEMPLATE: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// The example's options.
#[derive(Parser)]
#[command(
    about = "The paper's LLM-to-SLM conversion loop on a ledger: curate, cluster, export training files, and replay each cluster's held-out calls on candidate small models."
)]
struct Args {
    /// The ledger (JSON Lines).
    #[arg(long, default_value = "examples/data/workload.jsonl")]
    ledger: PathBuf,
    /// The output directory.
    #[arg(long, default_value = "target/convert")]
    out: PathBuf,
    /// Candidate small models, comma-separated (those of the defaults that are present are used).
    #[arg(long, value_delimiter = ',', default_values = ["models/SmolLM2-135M-Instruct.Q4_1.gguf", "models/gemma-3-270m-Q4_K_M.gguf"])]
    models: Vec<PathBuf>,
    /// The model that embeds the requests.
    #[arg(long, env = "SLM_MODEL", default_value = "models/SmolLM2-135M-Instruct.Q4_1.gguf")]
    embed_model: PathBuf,
    /// The cosine (of centred embeddings) at or above which two requests are near-duplicates.
    #[arg(long, default_value_t = 0.97)]
    near_duplicates: f32,
    /// The share of each cluster's runs held out for testing.
    #[arg(long, default_value_t = 0.2)]
    held_out: f64,
    /// Held-out calls replayed per cluster and candidate.
    #[arg(long, default_value_t = 10)]
    max_cases: usize,
    /// The accuracy a candidate needs to take a cluster.
    #[arg(long, default_value_t = 0.8)]
    min_accuracy: f64,
    /// A file whose `tasks` map each run to its true task (as `workload.truth.json`), for the clusters' purity.
    #[arg(long)]
    truth: Option<PathBuf>,
    /// The logged large model's price per million prompt and generated tokens, in USD: IN,OUT.
    #[arg(long, value_delimiter = ',', num_args = 2, default_values_t = [2.5, 10.0])]
    large_price: Vec<f64>,
    /// The local candidates' cost per hour of the machine, in USD.
    #[arg(long = "local-price-per-hour", default_value_t = 0.20)]
    local_per_hour: f64,
}

fn args() -> Args {
    let mut a = Args::parse();
    // A default candidate whose file is missing is left out; one named on the command line is kept (and fails
    // to load, saying why).
    if !std::env::args().any(|x| x == "--models" || x.starts_with("--models=")) {
        a.models.retain(|p| p.exists());
    }
    a
}

fn spinner(message: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner().with_message(message.to_owned());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Resident memory of this process, in bytes (Linux; 0 elsewhere).
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}

fn write(path: &Path, text: String) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()).into())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args();
    std::fs::create_dir_all(&args.out)?;

    // S2: curate.
    let started = Instant::now();
    let (records, _) = ledger::read_jsonl(&args.ledger)?;
    let mut curated = distill::curate(&records);
    println!("S2 curate: {} ledger records in {:.2} s", records.len(), started.elapsed().as_secs_f64());

    let embedder = Arc::new(LlamaModel::builder(&args.embed_model).load()?);
    let bar = spinner(&format!("embedding {} requests with {}", curated.calls.len(), embedder.name()));
    let started = Instant::now();
    let mut embeddings = distill::embed_requests(&curated, &*embedder).await?;
    bar.finish_with_message(format!("embedded the requests in {:.1} s", started.elapsed().as_secs_f64()));
    distill::drop_near_duplicates(&mut curated, &mut embeddings, args.near_duplicates);
    println!("{}\n", curated.report);

    // S3: cluster.
    let bar = spinner("clustering (k-means for each k, silhouette)");
    let started = Instant::now();
    let clustering = distill::fit(&curated, &embeddings, &ClusterOptions::default())?;
    bar.finish_with_message(format!("clustered in {:.1} s", started.elapsed().as_secs_f64()));
    println!("S3 cluster:\n{clustering}");
    if let Some(path) = &args.truth {
        let truth: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
        let tasks: HashMap<String, String> = serde_json::from_value(truth.get("tasks").cloned().unwrap_or(truth))?;
        let truth: Vec<&str> = curated.calls.iter().map(|c| tasks.get(&c.run).map_or("?", String::as_str)).collect();
        println!("purity against {}: {:.3}\n", path.display(), distill::purity(&clustering.assignments, &truth));
    }

    // S5: export.
    let exported = distill::export(&curated, &clustering, args.out.join("export"), args.held_out)?;
    let (train, test): (usize, usize) =
        exported.iter().fold((0, 0), |(a, b), e| (a + e.train_examples, b + e.test_examples));
    println!(
        "S5 export: {train} training and {test} test examples in {} clusters under {}\n",
        exported.len(),
        args.out.join("export").display()
    );

    let report = &curated.report;
    let summary = json!({
        "calls": report.calls,
        "failed_dropped": report.failed_dropped,
        "duplicates_removed": report.duplicates_removed + report.near_duplicates_removed,
        "exact_duplicates_removed": report.duplicates_removed,
        "near_duplicates_removed": report.near_duplicates_removed,
        "redacted_calls": report.redacted_calls,
        "kept": report.kept,
        "k": clustering.k,
        "silhouette": clustering.tried.iter().find(|(k, _)| *k == clustering.k).map(|(_, s)| *s),
        "clusters": clustering.clusters.iter().map(|c| json!({
            "id": c.id, "size": c.size, "label": c.label, "tool": c.tool, "examples": c.examples,
            "open_ended": c.open_ended, "models": c.models, "callers": c.callers,
        })).collect::<Vec<_>>(),
    });
    write(&args.out.join("summary.json"), serde_json::to_string_pretty(&summary)? + "\n")?;
    let lines: Vec<String> = curated
        .calls
        .iter()
        .zip(&clustering.assignments)
        .map(|(c, k)| json!({"run": c.run, "id": c.id, "cluster": k}).to_string())
        .collect();
    write(&args.out.join("clusters.jsonl"), lines.join("\n") + "\n")?;

    // S4: select.
    let costs = CostModel::new()
        .default_price(Price::PerMillionTokens { input: args.large_price[0], output: args.large_price[1] });
    let options = SelectOptions::default().costs(costs).max_cases(args.max_cases);
    let mut selection = Selection { clusters: Vec::new() };
    for path in &args.models {
        let before = rss();
        let mut loaded = LlamaModel::builder(path).lanes(2).load()?;
        if !loaded.has_chat_template() {
            // A base model ships no chat template: give it its family's turn markers.
            let template = if loaded.architecture().starts_with("gemma") { GEMMA_TEMPLATE } else { CHATML_TEMPLATE };
            println!(
                "{} has no chat template: using {}",
                path.display(),
                if template == GEMMA_TEMPLATE { "Gemma's" } else { "ChatML" }
            );
            drop(loaded);
            loaded = LlamaModel::builder(path).lanes(2).chat_template(template).load()?;
        }
        let model: Arc<dyn LanguageModel> = Arc::new(loaded);
        let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
        let candidate =
            Candidate { name: name.clone(), model, memory_bytes: None, price: Price::PerHour(args.local_per_hour) };
        let bar = ProgressBar::new(0).with_message(format!("S4 replaying held-out calls on {name}"));
        bar.set_style(ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed}")?.progress_chars("=> "));
        let progress_bar = bar.clone();
        let progress: Arc<dyn Fn(usize, usize) + Send + Sync> = Arc::new(move |done, total| {
            progress_bar.set_length(total as u64);
            progress_bar.set_position(done as u64);
        });
        let mut one = distill::select(&curated, &clustering, &[candidate], &options, Some(progress)).await;
        bar.finish();
        let memory = rss().saturating_sub(before);
        for mut table in one.clusters.drain(..) {
            for row in &mut table.candidates {
                row.memory_bytes = Some(memory);
            }
            match selection.clusters.iter_mut().find(|c| c.cluster == table.cluster) {
                Some(c) => c.candidates.append(&mut table.candidates),
                None => selection.clusters.push(table),
            }
        }
    }
    selection.choose(args.min_accuracy);
    if !selection.clusters.is_empty() {
        println!("\nS4 select (accuracy: agreement with the logged model on held-out calls):\n{selection}");
    }
    let table: BTreeMap<String, serde_json::Value> = selection
        .clusters
        .iter()
        .map(|c| {
            let models: BTreeMap<&str, serde_json::Value> = c
                .candidates
                .iter()
                .map(|s| (s.model.as_str(), json!({"accuracy": s.accuracy, "latency_mean_ms": s.latency_mean_ms,
                    "cases": s.cases, "memory_bytes": s.memory_bytes, "cost_per_call": s.cost_per_call})))
                .collect();
            (c.cluster.to_string(), json!({"label": c.label, "open_ended": c.open_ended, "cases": c.cases,
                "logged": {"model": c.logged_model, "latency_mean_ms": c.logged_latency_ms, "cost_per_call": c.logged_cost_per_call},
                "candidates": models, "chosen": c.chosen}))
        })
        .collect();
    write(&args.out.join("selection.json"), serde_json::to_string_pretty(&table)? + "\n")?;
    println!("wrote summary.json, clusters.jsonl, export/ and selection.json to {}", args.out.display());
    Ok(())
}
