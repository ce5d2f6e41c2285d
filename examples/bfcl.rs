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

use slm_agents::eval::{bfcl, Evaluation, Outcome};
use slm_agents::prelude::*;
use slm_agents::specialist::ToolFormat;

const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
const USAGE: &str = "usage: bfcl [--category NAME] [--ids A-B] [--model PATH] [--threads N] [--concurrency N] \
                     [--format lines|json|compact] [--call-threshold P|none] [--relevance-threshold R|none] [--narrow-tools M|none] [--ground-numbers on|off] [--ground-strings on|off] [--json] [--out results.jsonl]";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut category = "simple_python".to_owned();
    let mut ids = None;
    let mut model_path = DEFAULT_MODEL.to_owned();
    let mut threads = None;
    let mut concurrency = 4usize;
    let mut json = false;
    let mut out = None;
    let mut format = ToolFormat::default();
    let mut relevance = Some(slm_agents::specialist::DEFAULT_RELEVANCE_THRESHOLD);
    let mut narrow = Some(slm_agents::specialist::DEFAULT_NARROW_MARGIN);
    let mut ground = true;
    let mut spans = false;
    let mut threshold = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--category" => category = args.next().ok_or("--category needs a name")?,
            "--ids" => ids = Some(bfcl::parse_ids(&args.next().ok_or("--ids needs a range like 0-199")?)?),
            "--model" => model_path = args.next().ok_or("--model needs a path")?,
            "--threads" => threads = Some(args.next().ok_or("--threads needs a number")?.parse::<usize>()?),
            "--concurrency" => concurrency = args.next().ok_or("--concurrency needs a number")?.parse()?,
            "--format" => {
                format = match args.next().as_deref() {
                    Some("lines") => ToolFormat::Lines,
                    Some("json") => ToolFormat::Json,
                    Some("compact") => ToolFormat::Compact,
                    _ => return Err("--format needs `lines`, `json` or `compact`".into()),
                }
            }
            "--call-threshold" => {
                threshold = match args.next().ok_or("--call-threshold needs a probability or `none`")?.as_str() {
                    "none" => None,
                    p => Some(p.parse()?),
                }
            }
            "--relevance-threshold" => {
                relevance = match args.next().ok_or("--relevance-threshold needs a share or `none`")?.as_str() {
                    "none" => None,
                    p => Some(p.parse()?),
                }
            }
            "--narrow-tools" => {
                narrow = match args.next().ok_or("--narrow-tools needs a margin or `none`")?.as_str() {
                    "none" => None,
                    m => Some(m.parse()?),
                }
            }
            "--ground-numbers" => {
                ground = match args.next().as_deref() {
                    Some("on") => true,
                    Some("off") => false,
                    _ => return Err("--ground-numbers needs `on` or `off`".into()),
                }
            }
            "--ground-strings" => {
                spans = match args.next().as_deref() {
                    Some("on") => true,
                    Some("off") => false,
                    _ => return Err("--ground-strings needs `on` or `off`".into()),
                }
            }
            "--json" => json = true,
            "--out" => out = Some(args.next().ok_or("--out needs a path")?),
            "-h" | "--help" => {
                eprintln!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument `{other}`\n{USAGE}").into()),
        }
    }
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

    let mut builder = LlamaModel::builder(&model_path);
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
