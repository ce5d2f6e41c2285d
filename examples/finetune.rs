//! Fine-tunes SmolLM2-135M on one cluster's training file from the conversion loop and ships the result as a
//! LoRA adapter: progress bar, the held-out loss of each candidate rank, the exact-call accuracy of the base and
//! of the adapter on the held-out calls (also written to a ledger), one request answered with the adapter, the
//! adapter's decode speed over the base's, and one JSON line with the figures.
//!
//! ```text
//! cargo run --release --features train --example finetune -- --train PATH --test PATH [--base MODEL]
//!     [--out ADAPTER.gguf] [--layers N|all] [--lr X] [--epochs N] [--ranks 4,8,16] [--tolerance X] [--all-turns]
//!     [--max-matrices N] [--keep-model F32.gguf] [--from-tuned F32.gguf] [--adapter ADAPTER.gguf] [--ledger PATH]
//! ```
//!
//! Without `--train`, it runs the conversion loop on the bundled workload and takes its largest tool cluster.
//! Defaults: all blocks, learning rate 5e-5, 2 epochs, the call turns only (`--all-turns` to learn the answers
//! after tool results too), ranks 4 to 64; `--from-tuned` makes the adapter of a model fine-tuned earlier (no
//! training); `--adapter` evaluates an adapter made earlier.
//! The evaluations go to `target/finetune-data/eval-ledger.jsonl` unless `--ledger` says otherwise.

use std::sync::Arc;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use slm_agents::distill::{self, ClusterOptions};
use slm_agents::eval::Evaluation;
use slm_agents::finetune::{serve_child, FineTune, Progress};
use slm_agents::ledger::JsonlLedger;
use slm_agents::model::{LanguageModel, LlamaModel, Request};
use slm_agents::run::RunContext;

/// Exports the bundled workload's clusters under `target/finetune-data` and returns the training and test files
/// of its largest tool cluster.
fn largest_tool_cluster(
    rt: &tokio::runtime::Runtime,
    base: &str,
) -> Result<(String, String), Box<dyn std::error::Error>> {
    let (records, _) = slm_agents::ledger::read_jsonl("examples/data/workload.jsonl")?;
    let mut curated = distill::curate(&records);
    let embedder = LlamaModel::builder(base).load()?;
    let mut embeddings = rt.block_on(distill::embed_requests(&curated, &embedder))?;
    distill::drop_near_duplicates(&mut curated, &mut embeddings, 0.97);
    let clustering = distill::fit(&curated, &embeddings, &ClusterOptions::default())?;
    let largest =
        clustering.clusters.iter().filter(|c| !c.open_ended).max_by_key(|c| c.size).ok_or("no tool cluster")?;
    let exported = distill::export(&curated, &clustering, "target/finetune-data", 0.2)?;
    let files = exported.iter().find(|e| e.cluster == largest.id).ok_or("the cluster was not exported")?;
    println!("the workload's largest tool cluster: {} ({} calls)", largest.label, largest.size);
    Ok((files.train.display().to_string(), files.test.display().to_string()))
}

/// Decode tokens/s of `model` on a fixed prompt (128 tokens, greedy).
async fn decode_speed(model: &LlamaModel) -> slm_agents::Result<f64> {
    let request = Request::raw("Here is a short story about a lighthouse keeper and the sea:").with_max_tokens(128);
    let c = model.complete(request).await?;
    Ok(c.usage.decode_tokens_per_second())
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(0.0)
}

/// The example's options. Defaults measured best on the bundled weather cluster (docs/finetune.md): all
/// blocks, the call turns only, 2 epochs at 5e-5.
#[derive(Parser)]
#[command(
    about = "Fine-tunes a small model on one cluster's training file and ships it as a LoRA adapter, with the before/after table."
)]
struct Args {
    /// The training file (default: the bundled workload's largest tool cluster, through the conversion loop).
    #[arg(long, requires = "test")]
    train: Option<String>,
    /// The held-out file.
    #[arg(long)]
    test: Option<String>,
    /// The base model (its quantized GGUF).
    #[arg(long, env = "SLM_MODEL", default_value = "models/SmolLM2-135M-Instruct.Q4_1.gguf")]
    base: String,
    /// Where the adapter is written (default: adapter.gguf beside the training file).
    #[arg(long)]
    out: Option<String>,
    /// The blocks to train: `all`, or the last N.
    #[arg(long, default_value = "all")]
    layers: String,
    /// The learning rate.
    #[arg(long, default_value_t = 5e-5)]
    lr: f32,
    /// Passes over the training windows.
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    /// The adapter ranks to try, comma-separated (default: the library's, 4 to 64).
    #[arg(long, value_delimiter = ',')]
    ranks: Option<Vec<usize>>,
    /// How far above the best held-out loss a smaller rank may be, as a fraction (default: the library's, 0.05).
    #[arg(long)]
    tolerance: Option<f64>,
    /// Adapts at most N weight matrices (fewer decode faster).
    #[arg(long)]
    max_matrices: Option<usize>,
    /// Also learns the answers written after tool results (default: the call turns only).
    #[arg(long)]
    all_turns: bool,
    /// Also keeps the full fine-tuned model (F32 GGUF) here.
    #[arg(long)]
    keep_model: Option<String>,
    /// Makes the adapter of this model, fine-tuned earlier (F32 GGUF), without training.
    #[arg(long)]
    from_tuned: Option<String>,
    /// Evaluates this adapter, made earlier, instead of making one.
    #[arg(long)]
    adapter: Option<String>,
    /// The ledger the evaluations are written to.
    #[arg(long, default_value = "target/finetune-data/eval-ledger.jsonl")]
    ledger: String,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Some(code) = serve_child() {
        std::process::exit(code);
    }
    let a = Args::parse();
    let (train, mut test, base, out) = (a.train, a.test, a.base, a.out);
    let layers = if a.layers == "all" { None } else { Some(a.layers.parse::<usize>()?) };
    let (lr, epochs, calls_only) = (a.lr, a.epochs, !a.all_turns);
    let (ranks, keep_model, made) = (a.ranks, a.keep_model, a.adapter);
    let (tolerance, from_tuned, max_matrices, ledger_path) = (a.tolerance, a.from_tuned, a.max_matrices, a.ledger);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let train = match train {
        Some(train) => train,
        None => {
            // The bundled workload's largest tool cluster, through the conversion loop's S2, S3 and S5.
            let (t, e) = largest_tool_cluster(&rt, &base)?;
            test = Some(e);
            t
        }
    };
    let test = test.ok_or("--test is needed with --train")?;
    let mut tune =
        FineTune::new(&base).train(&train).eval(&test).learning_rate(lr).epochs(epochs).calls_only(calls_only);
    tune = match layers {
        Some(n) => tune.last_layers(n),
        None => tune.all_layers(),
    };
    if let Some(out) = &out {
        tune = tune.out(out);
    }
    if let Some(ranks) = ranks {
        tune = tune.ranks(ranks);
    }
    if let Some(n) = max_matrices {
        tune = tune.max_matrices(n);
    }
    if let Some(path) = &from_tuned {
        tune = tune.from_tuned(path);
    }
    if let Some(t) = tolerance {
        tune = tune.rank_tolerance(t);
    }
    if let Some(path) = &keep_model {
        tune = tune.keep_model(path);
    }

    let (adapter, tuned) = match made {
        Some(path) => (path, None),
        None => {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed} (eta {eta})")?
                    .progress_chars("=> "),
            );
            // Lines above the bar (shown also when the output is not a terminal and the bar is hidden).
            let say = |line: String| bar.suspend(|| println!("{line}"));
            let tuned = tune.run(|p| match p {
                Progress::Rendered { train, eval } => say(format!("{train} training and {eval} held-out examples")),
                Progress::Started { windows, eval_windows, context } => {
                    say(format!("{windows} windows of {context} tokens ({eval_windows} held out)"));
                    bar.set_length(*windows as u64);
                }
                Progress::Step { epoch, step, loss, .. } => {
                    bar.set_message(format!("epoch {epoch} loss {loss:.3}"));
                    bar.set_position(*step as u64);
                }
                Progress::Epoch { epoch, loss, eval_loss } => {
                    let held_out = eval_loss.map_or("-".to_owned(), |l| format!("{l:.3}"));
                    say(format!("epoch {epoch}: loss {loss:.3}, held-out {held_out}"));
                }
                Progress::Factoring { done, total } => {
                    bar.set_message("factoring the updates (SVD)".to_owned());
                    bar.set_length(*total as u64);
                    bar.set_position(*done as u64);
                }
                Progress::Rank { rank: 0, loss, .. } => say(format!("held-out reply loss on the Q4_1 base: {loss:.3}")),
                Progress::Rank { rank, loss, kept } => say(format!(
                    "  rank {rank:>3}: held-out reply loss {loss:.3}, keeps {:.0}% of the update",
                    kept * 100.0
                )),
                _ => {}
            })?;
            bar.finish_and_clear();
            println!(
                "adapter: {} (rank {}, {:.1} MB), trained in {:.0} s, child's peak memory {}",
                tuned.adapter.display(),
                tuned.rank,
                tuned.adapter_bytes as f64 / 1e6,
                tuned.seconds,
                tuned.peak_memory_bytes.map_or("unknown".to_owned(), |b| format!("{:.2} GB", b as f64 / 1e9)),
            );
            (tuned.adapter.display().to_string(), Some(tuned))
        }
    };

    // Before and after, on the held-out calls, with the evaluation specialist's prompt: one loaded base,
    // the adapter on its own lane.
    let cases = slm_agents::finetune::test_cases(&test)?;
    let model = LlamaModel::builder(&base).lanes(2).adapter("tuned", &adapter).load()?;
    let with_adapter = model.with_adapter("tuned", 1.0)?;
    if let Some(dir) = std::path::Path::new(&ledger_path).parent() {
        std::fs::create_dir_all(dir)?;
    }
    let ledger = Arc::new(JsonlLedger::create(&ledger_path)?);
    // The fine-tuned specialist knows its task: no relevance gate (it would answer "Do I need an umbrella in
    // Oslo?" in words before the model is asked).
    let evaluation = |name: &str| {
        Evaluation::new(cases.clone()).configure(|b| b.relevance_threshold(None)).record_to(ledger.clone(), name)
    };
    let b = rt.block_on(evaluation("base").run(Arc::new(model.clone()), 2));
    let a = rt.block_on(evaluation("adapter").run(Arc::new(with_adapter.clone()), 2));
    if std::env::var_os("SHOW").is_some() {
        for (x, y) in b.results.iter().zip(&a.results) {
            eprintln!("{:?}\n  before {:?}\n  after  {:?}", x.expected, x.outcome, y.outcome);
        }
    }
    println!("\n{:<12} {:>9} {:>6} {:>7} {:>11}", "model", "accuracy", "cases", "errors", "latency ms");
    for (name, r) in [("base", &b), ("adapter", &a)] {
        let s = &r.summary;
        println!("{name:<12} {:>8.1}% {:>6} {:>7} {:>11.0}", s.accuracy * 100.0, s.cases, s.errors, s.latency_mean_ms);
    }
    println!("(evaluations recorded in {ledger_path})");

    // One request answered by a specialist on the adapter.
    if let Some(case) = cases.first() {
        let specialist = slm_agents::eval::specialist_builder(case, Arc::new(with_adapter.clone()))
            .relevance_threshold(None)
            .build()?;
        let decision = rt.block_on(specialist.decision(case.input_text(), &RunContext::new()))?;
        println!("\n{:?}\n  -> {:?}", case.input_text(), decision.decided);
    }

    // Decode speed with the adapter over the base's, alternating, median of 3.
    let (mut base_tps, mut adapter_tps) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        base_tps.push(rt.block_on(decode_speed(&model))?);
        adapter_tps.push(rt.block_on(decode_speed(&with_adapter))?);
    }
    let (base_tps, adapter_tps) = (median(base_tps), median(adapter_tps));
    println!(
        "decode: base {base_tps:.1} tok/s, with the adapter {adapter_tps:.1} tok/s ({:.2}x)",
        adapter_tps / base_tps
    );

    let adapter_bytes = std::fs::metadata(&adapter)?.len();
    println!(
        "{}",
        serde_json::json!({
            "examples": tuned.as_ref().map(|t| t.examples), "test": b.summary.cases,
            "accuracy_before": b.summary.accuracy, "accuracy_after": a.summary.accuracy,
            "adapter_bytes": adapter_bytes, "train_seconds": tuned.as_ref().map(|t| t.seconds),
            "rank": tuned.as_ref().map(|t| t.rank), "decode_ratio": adapter_tps / base_tps,
            "peak_memory_bytes": tuned.as_ref().and_then(|t| t.peak_memory_bytes),
        })
    );
    Ok(())
}
