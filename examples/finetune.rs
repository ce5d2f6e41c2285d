//! Fine-tunes SmolLM2-135M on one cluster's training file from the conversion loop, then prints the exact-call
//! accuracy of the base and the fine-tuned model on the held-out calls (work in progress: the result is the
//! F32 model; the LoRA adapter comes next).
//!
//! ```text
//! cargo run --release --features train --example finetune -- --train PATH --test PATH [--base MODEL]
//!     [--out MODEL.gguf] [--layers N|all] [--lr X] [--epochs N] [--all-turns] [--tuned MODEL.gguf]
//! ```
//!
//! Without `--train`, it runs the conversion loop on the bundled workload and takes its largest tool cluster.
//! Defaults: all blocks, learning rate 5e-5, 2 epochs, the call turns only (`--all-turns` to learn the
//! answers after tool results too); `--tuned` evaluates a model fine-tuned earlier instead of training.

use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};
use slm_agents::distill::{self, ClusterOptions};
use slm_agents::eval::Evaluation;
use slm_agents::finetune::{serve_child, FineTune, Progress};
use slm_agents::model::LlamaModel;

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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Some(code) = serve_child() {
        std::process::exit(code);
    }
    let mut args = std::env::args().skip(1);
    let (mut train, mut test, mut base, mut out) =
        (None, None, "models/SmolLM2-135M-Instruct.Q4_1.gguf".to_owned(), None);
    // Measured best on the bundled weather cluster (docs/finetune.md): all blocks, calls only, 2 epochs.
    let (mut layers, mut lr, mut epochs, mut calls_only) = (None, 5e-5f32, 2usize, true);
    let mut tuned_model: Option<String> = None;
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--train" => train = Some(value()?),
            "--test" => test = Some(value()?),
            "--base" => base = value()?,
            "--out" => out = Some(value()?),
            "--layers" => {
                layers = match value()?.as_str() {
                    "all" => None,
                    n => Some(n.parse()?),
                }
            }
            "--lr" => lr = value()?.parse()?,
            "--epochs" => epochs = value()?.parse()?,
            "--tuned" => tuned_model = Some(value()?),
            "--all-turns" => calls_only = false,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
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
    let mut tune = FineTune::new(&base).train(&train).learning_rate(lr).epochs(epochs).calls_only(calls_only);
    tune = match layers {
        Some(n) => tune.last_layers(n),
        None => tune.all_layers(),
    };
    if let Some(test) = &test {
        tune = tune.eval(test);
    }
    if let Some(out) = &out {
        tune = tune.out(out);
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed} (eta {eta})")?.progress_chars("=> "),
    );
    let tuned = if let Some(path) = tuned_model {
        // Evaluate a model fine-tuned earlier.
        slm_agents::finetune::FineTuned::evaluated(path)
    } else {
        tune.run(|p| match p {
            Progress::Rendered { train, eval } => bar.println(format!("{train} training and {eval} held-out examples")),
            Progress::Started { windows, eval_windows, context } => {
                bar.println(format!("{windows} windows of {context} tokens ({eval_windows} held out)"));
                bar.set_length(*windows as u64);
            }
            Progress::Step { epoch, step, loss, .. } => {
                bar.set_message(format!("epoch {epoch} loss {loss:.3}"));
                bar.set_position(*step as u64);
            }
            Progress::Epoch { epoch, loss, eval_loss } => {
                bar.println(format!("epoch {epoch}: loss {loss:.3}, held-out {eval_loss:?}"))
            }
            _ => {}
        })?
    };
    bar.finish();

    // Before and after, on the held-out calls, with the evaluation specialist's prompt.
    if let Some(test) = &test {
        let cases = slm_agents::finetune::test_cases(test)?;
        let before = LlamaModel::builder(&base).lanes(2).load()?;
        let after = LlamaModel::builder(&tuned.model).lanes(2).load()?;
        // The fine-tuned specialist knows its task: no relevance gate (it would answer "Do I need an umbrella in
        // Oslo?" in words before the model is asked).
        let evaluation = Evaluation::new(cases).configure(|b| b.relevance_threshold(None));
        let b = rt.block_on(evaluation.run(Arc::new(before), 2));
        let a = rt.block_on(evaluation.run(Arc::new(after), 2));
        if std::env::var_os("SHOW").is_some() {
            for (x, y) in b.results.iter().zip(&a.results) {
                eprintln!("{:?}\n  before {:?}\n  after  {:?}", x.expected, x.outcome, y.outcome);
            }
        }
        println!("{:<24} {:>8} {:>10} {:>12}", "model", "accuracy", "cases", "latency ms");
        for (name, r) in [("base", &b), ("fine-tuned", &a)] {
            println!(
                "{name:<24} {:>7.1}% {:>10} {:>12.0}",
                r.summary.accuracy * 100.0,
                r.summary.cases,
                r.summary.latency_mean_ms
            );
        }
        println!(
            "{}",
            serde_json::json!({"examples": tuned.examples, "test": b.summary.cases,
            "accuracy_before": b.summary.accuracy, "accuracy_after": a.summary.accuracy,
            "train_seconds": tuned.seconds, "loss": tuned.loss, "eval_loss": tuned.eval_loss})
        );
        return Ok(());
    }
    println!(
        "{}",
        serde_json::json!({"examples": tuned.examples, "loss": tuned.loss, "eval_loss": tuned.eval_loss,
        "train_seconds": tuned.seconds, "model": tuned.model})
    );
    Ok(())
}
