//! BFCL v4 on a small model: a category's cases through the default evaluation specialist, scored like
//! BFCL's AST checker.
//!
//! ```text
//! scripts/fetch-bfcl.sh   # once: the data into models/bfcl
//! cargo run --release --example bfcl -- --category simple_python --ids 0-199 \
//!     [--model PATH] [--threads N] [--concurrency N] [--format lines|json|compact] [--call-threshold P|none] [--relevance-threshold R|none] [--narrow-tools M|none] [--ground-numbers on|off] [--ground-strings on|off] \
//!     [--json] [--out results.jsonl]
//! ```
//!
//! Without `--ids`, the category's development split is run; `--category dev` runs the development split of
//! every category in one report. Keep to it while tuning anything (see
//! docs/eval.md): the rest of each category is for final figures only.

use std::sync::Arc;

use clap::Parser;
use slm_agents::eval::{bfcl, Evaluation, Outcome};
use slm_agents::model::FastForward;
use slm_agents::prelude::*;
use slm_agents::specialist::ToolFormat;

const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
/// A number, or `none` for no value.
#[derive(Clone, Copy)]
struct Limit(Option<f64>);

impl std::str::FromStr for Limit {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "none" => Ok(Limit(None)),
            n => n.parse().map(|v| Limit(Some(v))).map_err(|e| format!("{e} (a number or `none`)")),
        }
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(v) => write!(f, "{v}"),
            None => f.write_str("none"),
        }
    }
}

/// `on` or `off`.
fn on_off(text: &str) -> Result<bool, String> {
    match text {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err("`on` or `off`".into()),
    }
}

/// The tool format's name.
fn tool_format(text: &str) -> Result<ToolFormat, String> {
    match text {
        "lines" => Ok(ToolFormat::Lines),
        "json" => Ok(ToolFormat::Json),
        "compact" => Ok(ToolFormat::Compact),
        _ => Err("`lines`, `json` or `compact`".into()),
    }
}

/// The example's options.
#[derive(Parser)]
#[command(
    about = "BFCL v4 on a small model: a category's cases through the default evaluation specialist, scored like BFCL's AST checker."
)]
struct Args {
    /// The category, or `dev` for every category's development split.
    #[arg(long, default_value = "simple_python")]
    category: String,
    /// The case ids, as A-B (default: the category's development split).
    #[arg(long, value_parser = |s: &str| bfcl::parse_ids(s).map_err(|e| e.to_string()))]
    ids: Option<std::ops::RangeInclusive<usize>>,
    /// The GGUF model to run.
    #[arg(long, env = "SLM_MODEL", default_value = DEFAULT_MODEL)]
    model: String,
    /// CPU threads (default: the engine's choice).
    #[arg(long)]
    threads: Option<usize>,
    /// Cases run at a time.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// How the tools are described to the model: lines, json or compact (default: the specialist's).
    #[arg(long, value_parser = tool_format)]
    format: Option<ToolFormat>,
    /// The call probability below which the specialist answers instead, or `none`.
    #[arg(long, default_value_t = Limit(None))]
    call_threshold: Limit,
    /// The relevance below which the specialist answers without asking the model, or `none`.
    #[arg(long, default_value_t = Limit(Some(slm_agents::specialist::DEFAULT_RELEVANCE_THRESHOLD)))]
    relevance_threshold: Limit,
    /// The margin within which the tools offered are narrowed to those the request is about, or `none`.
    #[arg(long, default_value_t = Limit(Some(slm_agents::specialist::DEFAULT_NARROW_MARGIN)))]
    narrow_tools: Limit,
    /// Refuses calls with numbers the request never gave: on or off.
    #[arg(long, value_parser = on_off, default_value = "on", action = clap::ArgAction::Set)]
    ground_numbers: bool,
    /// Holds strings to spans of the request: on or off.
    #[arg(long, value_parser = on_off, default_value = "off", action = clap::ArgAction::Set)]
    ground_strings: bool,
    /// How the tokens the grammar forces are decoded: off, confirmed (a draft the model confirms) or forced.
    #[arg(long, default_value = "off")]
    fast_forward: FastForward,
    /// Prints the summary as one JSON line.
    #[arg(long)]
    json: bool,
    /// Writes the per-case results (JSON Lines) to this file.
    #[arg(long)]
    out: Option<String>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = Args::parse();
    let (category, ids, model_path, threads, concurrency, json, out) =
        (a.category, a.ids, a.model, a.threads, a.concurrency, a.json, a.out);
    let format = a.format.unwrap_or_default();
    let (relevance, narrow, ground, spans, threshold) =
        (a.relevance_threshold.0, a.narrow_tools.0, a.ground_numbers, a.ground_strings, a.call_threshold.0);
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/bfcl");
    let cases = if category == "dev" {
        // Every category's development split, in one report.
        let mut cases = Vec::new();
        for category in bfcl::CATEGORIES {
            let split = bfcl::dev_split(category).ok_or("no development split")?;
            cases.extend(bfcl::filter_ids(bfcl::load(&data, category)?, &split));
        }
        eprintln!("development split of {:?}: {} cases", bfcl::CATEGORIES, cases.len());
        cases
    } else {
        let split = bfcl::dev_split(&category)
            .ok_or_else(|| format!("unknown category `{category}`; one of {:?} or `dev`", bfcl::CATEGORIES))?;
        let ids = ids.unwrap_or_else(|| split.clone());
        if ids.start() < split.start() || ids.end() > split.end() {
            eprintln!("warning: ids {ids:?} go outside the development split {split:?} of {category}");
        }
        let cases = bfcl::filter_ids(bfcl::load(&data, &category)?, &ids);
        eprintln!("{category}: {} cases (ids {}-{})", cases.len(), ids.start(), ids.end());
        cases
    };

    let mut builder = LlamaModel::builder(&model_path).fast_forward(a.fast_forward);
    if let Some(t) = threads {
        builder = builder.threads(t);
    }
    let model: Arc<dyn LanguageModel> = Arc::new(builder.load()?);

    let evaluation = Evaluation::new(cases).configure(move |b| {
        b.tool_format(format)
            .call_threshold(threshold)
            .relevance_threshold(relevance)
            .narrow_tools(narrow)
            .ground_numbers(ground)
            .ground_strings(spans)
    });
    let evaluation = evaluation.on_progress(|done, total, result| {
        if done % 10 == 0 || done == total {
            let what = match &result.outcome {
                Outcome::Calls(calls) => format!("{} call(s)", calls.len()),
                Outcome::Answer(_) => "answer".to_owned(),
                Outcome::Error { kind, .. } => format!("error ({kind})"),
            };
            eprintln!("{done:>4}/{total}  last: {} {what}: {}", result.id, result.verdict.reason);
        }
    });
    let report = futures::executor::block_on(evaluation.run(model, concurrency));

    if let Some(path) = out {
        report.write_jsonl(&path)?;
        eprintln!("per-case results in {path}");
    }
    if json {
        println!("{}", report.to_json());
    } else {
        println!("{report}");
        // With cases of both kinds (`--category dev`), the relevance threshold that would have separated them.
        if let Some(t) = report.best_relevance_threshold(0.05) {
            println!(
                "relevance threshold  {:.3} would abstain on {:.1}% of no-call cases and keep {:.1}% of the others",
                t.value,
                t.abstains * 100.0,
                t.keeps * 100.0
            );
        }
    }
    Ok(())
}
