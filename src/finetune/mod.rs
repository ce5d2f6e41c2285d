//! Fine-tuning a specialist's model in-process, on CPU, from the training files of the
//! [conversion loop](crate::distill) (S5), with llama.cpp's training API. Feature `train`.
//!
//! Training runs in a child process: llama.cpp aborts the process on some misuse, and that must be an error for
//! the caller, never the end of the host. The child is the host's own binary, started again with a job to do:
//! call [`serve_child`] first thing in `main`.
//!
//! ```no_run
//! use slm_agents::finetune::{serve_child, FineTune, Progress};
//!
//! fn main() -> slm_agents::Result<()> {
//!     if let Some(code) = serve_child() {
//!         std::process::exit(code); // this process was the training child
//!     }
//!     let tuned = FineTune::new("models/SmolLM2-135M-Instruct.Q4_1.gguf")
//!         .train("export/cluster-4/train.jsonl")
//!         .eval("export/cluster-4/test.jsonl")
//!         .last_layers(4)
//!         .run(|p: &Progress| eprintln!("{p:?}"))?;
//!     println!("adapter: {} (rank {})", tuned.adapter.display(), tuned.rank);
//!     Ok(())
//! }
//! ```
//!
#![doc = include_str!("../../docs/finetune.md")]

#[cfg(feature = "train")]
mod lora;
#[cfg(feature = "train")]
mod native;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::distill::calls_in;
use crate::eval::{Case, Expected, ExpectedCall, DEFAULT_INSTRUCTIONS};
use crate::model::{LlamaModel, Message, Role};
use crate::tool::ToolSpec;
use crate::{Error, Result};

/// The environment variable that carries a job to the child process.
const CHILD_ENV: &str = "SLM_AGENTS_FINETUNE_JOB";

/// What the child reports while it trains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Progress {
    /// The examples were rendered: how many.
    Rendered {
        /// Training examples.
        train: usize,
        /// Held-out examples.
        eval: usize,
    },
    /// Training started.
    Started {
        /// Training windows (optimizer steps per epoch).
        windows: usize,
        /// Held-out windows, evaluated after each epoch.
        eval_windows: usize,
        /// Tokens per window.
        context: u32,
    },
    /// One optimizer step.
    Step {
        /// The epoch, from 0.
        epoch: usize,
        /// The step within it, from 1.
        step: usize,
        /// Steps in the epoch.
        steps: usize,
        /// The mean training loss so far in the epoch.
        loss: f64,
    },
    /// An epoch ended.
    Epoch {
        /// The epoch, from 0.
        epoch: usize,
        /// Its mean training loss.
        loss: f64,
        /// The held-out loss after it, if there are held-out windows.
        eval_loss: Option<f64>,
    },
    /// The weights' differences are being factored for the adapter (a truncated SVD each).
    Factoring {
        /// Weights done.
        done: usize,
        /// Weights that changed.
        total: usize,
    },
    /// A candidate rank was scored: the mean loss of the scored examples' replies, on the quantized base with
    /// the adapter of that rank (rank 0: the base alone).
    Rank {
        /// The adapter's rank (0 for the base alone).
        rank: usize,
        /// Mean loss per reply token.
        loss: f64,
        /// The share of the fine-tune's weight updates (squared norm, all weights) the adapter keeps.
        kept: f64,
    },
    /// The adapter was written.
    Adapter {
        /// Its rank.
        rank: usize,
        /// Its size in bytes.
        bytes: u64,
        /// Its held-out loss ([`Progress::Rank`]).
        loss: f64,
        /// The base model's held-out loss.
        base_loss: f64,
    },
    /// The child finished.
    Done {
        /// Its peak resident memory, where the system reports it.
        peak_memory_bytes: Option<u64>,
    },
}

/// What the child is given.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    base: PathBuf,
    /// The rendered training examples, each with the byte offset where its reply starts.
    texts: Vec<(String, usize)>,
    /// The rendered held-out examples, the same way.
    eval_texts: Vec<(String, usize)>,
    out: PathBuf,
    keep_model: Option<PathBuf>,
    /// A model fine-tuned earlier: no training, its adapter only.
    tuned: Option<PathBuf>,
    max_matrices: Option<usize>,
    ranks: Vec<usize>,
    rank_tolerance: f64,
    work_dir: PathBuf,
    layers: Option<usize>,
    learning_rate: f32,
    epochs: usize,
    context: u32,
    threads: usize,
}

/// The result of a run.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FineTuned {
    /// The LoRA adapter (GGUF), for [`LlamaModelBuilder::adapter`](crate::model::LlamaModelBuilder::adapter) on
    /// the base model it was trained from.
    pub adapter: PathBuf,
    /// The adapter's rank.
    pub rank: usize,
    /// The adapter's size in bytes.
    pub adapter_bytes: u64,
    /// Each candidate rank's held-out loss (mean per reply token, on the quantized base), rank 0 being the base
    /// alone.
    pub rank_losses: Vec<(usize, f64)>,
    /// The full fine-tuned model (F32 GGUF), if [`FineTune::keep_model`] asked for it.
    pub model: Option<PathBuf>,
    /// The last epoch's training loss (over every token of the windows).
    pub loss: Option<f64>,
    /// The held-out windows' loss after the last epoch.
    pub eval_loss: Option<f64>,
    /// Training examples.
    pub examples: usize,
    /// Wall time of the child, in seconds (training, factoring and scoring).
    pub seconds: f64,
    /// The child's peak resident memory, where the system reports it.
    pub peak_memory_bytes: Option<u64>,
}

impl FineTuned {
    /// The held-out loss of the chosen adapter and of the base alone, if they were scored.
    pub fn adapter_loss(&self) -> Option<(f64, f64)> {
        let of = |rank: usize| self.rank_losses.iter().find(|(r, _)| *r == rank).map(|(_, l)| *l);
        Some((of(self.rank)?, of(0)?))
    }
}

/// A fine-tuning run: the base model, the training file (and a held-out one), and the settings that matter.
#[derive(Debug, Clone)]
#[must_use = "a fine-tune does nothing until `run` is called"]
pub struct FineTune {
    base: PathBuf,
    train: Option<PathBuf>,
    eval: Option<PathBuf>,
    out: Option<PathBuf>,
    keep_model: Option<PathBuf>,
    tuned: Option<PathBuf>,
    max_matrices: Option<usize>,
    ranks: Vec<usize>,
    rank_tolerance: f64,
    layers: Option<usize>,
    learning_rate: f32,
    epochs: usize,
    context: u32,
    threads: usize,
    program: Option<PathBuf>,
    unchecked: bool,
    calls_only: bool,
}

impl Job {
    /// The examples that score each candidate rank: the held-out ones, or training ones without them; at most
    /// 48.
    fn scored(&self) -> &[(String, usize)] {
        let from = if self.eval_texts.is_empty() { &self.texts } else { &self.eval_texts };
        &from[..from.len().min(48)]
    }
}

impl FineTune {
    /// Fine-tunes the GGUF model at `base` (its quantized file: the child converts it to F32).
    pub fn new(base: impl AsRef<Path>) -> Self {
        Self {
            base: base.as_ref().to_owned(),
            train: None,
            eval: None,
            out: None,
            keep_model: None,
            tuned: None,
            max_matrices: None,
            ranks: vec![4, 8, 16, 32, 64],
            rank_tolerance: 0.05,
            layers: None,
            learning_rate: 5e-5,
            epochs: 1,
            context: 256,
            threads: std::thread::available_parallelism().map_or(1, usize::from),
            program: None,
            unchecked: false,
            calls_only: false,
        }
    }

    /// The training file: chat examples, one JSON object a line (as [`distill::export`](crate::distill) writes).
    pub fn train(mut self, path: impl AsRef<Path>) -> Self {
        self.train = Some(path.as_ref().to_owned());
        self
    }

    /// The held-out file, evaluated after each epoch.
    pub fn eval(mut self, path: impl AsRef<Path>) -> Self {
        self.eval = Some(path.as_ref().to_owned());
        self
    }

    /// Where the LoRA adapter is written (default: beside the training file, `adapter.gguf`).
    pub fn out(mut self, path: impl AsRef<Path>) -> Self {
        self.out = Some(path.as_ref().to_owned());
        self
    }

    /// Also keeps the full fine-tuned model, as an F32 GGUF at `path` (about 4 bytes a parameter). Never
    /// quantize it to 4 bits: the updates are smaller than a Q4 step and vanish (docs/finetune.md).
    pub fn keep_model(mut self, path: impl AsRef<Path>) -> Self {
        self.keep_model = Some(path.as_ref().to_owned());
        self
    }

    /// Skips training: makes the adapter from `model`, a fine-tune of the same base done earlier (an F32 GGUF,
    /// as [`keep_model`](Self::keep_model) writes, or from another trainer, converted to F32 GGUF). The training
    /// and held-out files still choose the rank.
    pub fn from_tuned(mut self, model: impl AsRef<Path>) -> Self {
        self.tuned = Some(model.as_ref().to_owned());
        self
    }

    /// Adapts at most `n` weight matrices: those whose updates the adapter keeps most of. llama.cpp adds four
    /// operations per adapted matrix to every token's graph, so fewer matrices decode faster (docs/finetune.md).
    pub fn max_matrices(mut self, n: usize) -> Self {
        self.max_matrices = Some(n);
        self
    }

    /// The adapter ranks to try (default 4, 8, 16, 32, 64). Each is scored by its held-out loss; the smallest
    /// within the [tolerance](Self::rank_tolerance) of the best is kept.
    pub fn ranks(mut self, ranks: impl IntoIterator<Item = usize>) -> Self {
        self.ranks = ranks.into_iter().collect();
        self.ranks.sort_unstable();
        self.ranks.dedup();
        self
    }

    /// How much higher than the best rank's held-out loss a smaller rank's may be and still be chosen, as a
    /// fraction (default 0.05): the smallest rank with loss ≤ best × (1 + tolerance) wins. 0 takes the best.
    pub fn rank_tolerance(mut self, tolerance: f64) -> Self {
        self.rank_tolerance = tolerance;
        self
    }

    /// Trains the last `n` transformer blocks only (faster, and keeps more of the base; measured weaker on a
    /// tool task, see docs/finetune.md).
    pub fn last_layers(mut self, n: usize) -> Self {
        self.layers = Some(n);
        self
    }

    /// Trains every weight llama.cpp can train, all but the token embedding (the default).
    pub fn all_layers(mut self) -> Self {
        self.layers = None;
        self
    }

    /// The AdamW learning rate (default 5e-5).
    pub fn learning_rate(mut self, lr: f32) -> Self {
        self.learning_rate = lr;
        self
    }

    /// Trains only on the examples whose reply is a tool call made from the request: the decision a
    /// specialist's first turn makes. Without it (the default), the answers written after a tool's result
    /// are learned too, and a small model may start writing them before any tool has run.
    pub fn calls_only(mut self, on: bool) -> Self {
        self.calls_only = on;
        self
    }

    /// Passes over the training windows (default 1).
    pub fn epochs(mut self, epochs: usize) -> Self {
        self.epochs = epochs;
        self
    }

    /// Tokens per training window (default 256; a multiple of 256, as llama.cpp pads the context).
    pub fn context(mut self, tokens: u32) -> Self {
        self.context = tokens;
        self
    }

    /// CPU threads (default: the machine's parallelism).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// The program to run as the child (default: this process's own binary, which must call [`serve_child`]).
    pub fn program(mut self, path: impl AsRef<Path>) -> Self {
        self.program = Some(path.as_ref().to_owned());
        self
    }

    /// Skips the checks of the settings, so that llama.cpp sees them as they are: for tests of what happens
    /// when the training process crashes. Never needed otherwise.
    #[doc(hidden)]
    pub fn skip_checks(mut self) -> Self {
        self.unchecked = true;
        self
    }

    /// Checks the settings llama.cpp would assert on.
    fn check(&self) -> Result<()> {
        if self.unchecked {
            return Ok(());
        }
        let bad = |setting: &'static str, reason: String| Err(Error::InvalidSetting { setting, reason });
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0 && self.learning_rate < 1.0) {
            return bad("learning_rate", format!("{} is not in (0, 1)", self.learning_rate));
        }
        if self.context == 0 || !self.context.is_multiple_of(256) || self.context > 4096 {
            return bad("context", format!("{} is not a multiple of 256 up to 4096", self.context));
        }
        if self.epochs == 0 || self.epochs > 100 {
            return bad("epochs", format!("{} is not in 1..=100", self.epochs));
        }
        if !(1..=256).contains(&self.threads) {
            return bad("threads", format!("{} is not in 1..=256", self.threads));
        }
        if self.layers == Some(0) {
            return bad("last_layers", "0 layers would train nothing".into());
        }
        if self.ranks.is_empty() || self.ranks.iter().any(|r| !(1..=1024).contains(r)) {
            return bad("ranks", format!("{:?}: at least one, each in 1..=1024", self.ranks));
        }
        if self.max_matrices == Some(0) {
            return bad("max_matrices", "0 matrices would adapt nothing".into());
        }
        if !(0.0..=1.0).contains(&self.rank_tolerance) {
            return bad("rank_tolerance", format!("{} is not in [0, 1]", self.rank_tolerance));
        }
        Ok(())
    }

    /// Renders the examples, runs the child and reports its progress to `progress`.
    ///
    /// # Errors
    /// [`Error::InvalidSetting`] for a setting llama.cpp would abort on (checked first); the errors of loading
    /// the base model and reading the files; [`Error::Training`] when the child fails or crashes (its exit
    /// status and the end of its error output).
    pub fn run(&self, progress: impl FnMut(&Progress)) -> Result<FineTuned> {
        self.run_cancellable(progress, &AtomicBool::new(false))
    }

    /// As [`run`](Self::run); setting `cancel` stops the child between steps ([`Error::Training`], "cancelled").
    ///
    /// # Errors
    /// As [`run`](Self::run).
    pub fn run_cancellable(&self, mut progress: impl FnMut(&Progress), cancel: &AtomicBool) -> Result<FineTuned> {
        self.check()?;
        let train = self
            .train
            .as_ref()
            .ok_or_else(|| Error::InvalidSetting { setting: "train", reason: "a training file is needed".into() })?;
        let renderer = LlamaModel::builder(&self.base).threads(1).lanes(1).slots(1).load()?;
        let rendered = render_file(&renderer, train, self.calls_only)?;
        let eval_rendered = match &self.eval {
            Some(path) => render_file(&renderer, path, self.calls_only)?,
            None => Vec::new(),
        };
        drop(renderer);
        progress(&Progress::Rendered { train: rendered.len(), eval: eval_rendered.len() });
        let out = self.out.clone().unwrap_or_else(|| train.parent().unwrap_or(Path::new(".")).join("adapter.gguf"));
        let work_dir = std::env::temp_dir().join(format!("slm-finetune-{}", std::process::id()));
        std::fs::create_dir_all(&work_dir).map_err(|source| Error::Export { path: work_dir.clone(), source })?;
        let examples = rendered.len();
        let job = Job {
            base: self.base.clone(),
            texts: rendered,
            eval_texts: eval_rendered,
            out: out.clone(),
            keep_model: self.keep_model.clone(),
            tuned: self.tuned.clone(),
            max_matrices: self.max_matrices,
            ranks: self.ranks.clone(),
            rank_tolerance: self.rank_tolerance,
            work_dir: work_dir.clone(),
            layers: self.layers,
            learning_rate: self.learning_rate,
            epochs: self.epochs,
            context: self.context,
            threads: self.threads,
        };
        let job_path = work_dir.join("job.json");
        std::fs::write(&job_path, serde_json::to_vec(&job).unwrap_or_default())
            .map_err(|source| Error::Export { path: job_path.clone(), source })?;
        let result = run_child(self.program.as_deref(), &job_path, &mut progress, cancel);
        let _ = std::fs::remove_dir_all(&work_dir);
        let report = result?;
        let (rank, adapter_bytes) = report.adapter.ok_or_else(|| Error::Training {
            reason: "the training process ended without writing an adapter".into(),
        })?;
        Ok(FineTuned {
            adapter: out,
            rank,
            adapter_bytes,
            rank_losses: report.rank_losses,
            model: self.keep_model.clone(),
            loss: report.loss,
            eval_loss: report.eval_loss,
            examples,
            seconds: report.seconds,
            peak_memory_bytes: report.peak_memory_bytes,
        })
    }
}

/// What the parent gathers from the child's progress.
#[derive(Default)]
struct ChildReport {
    loss: Option<f64>,
    eval_loss: Option<f64>,
    rank_losses: Vec<(usize, f64)>,
    adapter: Option<(usize, u64)>,
    peak_memory_bytes: Option<u64>,
    seconds: f64,
}

fn run_child(
    program: Option<&Path>,
    job: &Path,
    progress: &mut dyn FnMut(&Progress),
    cancel: &AtomicBool,
) -> Result<ChildReport> {
    let training = |reason: String| Error::Training { reason };
    let program = match program {
        Some(p) => p.to_owned(),
        None => std::env::current_exe().map_err(|e| training(format!("cannot find this program: {e}")))?,
    };
    let started = Instant::now();
    let mut child = Command::new(&program)
        .env(CHILD_ENV, job)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| training(format!("cannot start {}: {e}", program.display())))?;
    let mut stderr = child.stderr.take();
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_string(&mut text);
        }
        text
    });
    let mut report = ChildReport::default();
    let mut cancelled = false;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(p) = serde_json::from_str::<Progress>(&line) {
                match &p {
                    Progress::Epoch { loss, eval_loss, .. } => {
                        report.loss = Some(*loss);
                        report.eval_loss = *eval_loss;
                    }
                    Progress::Rank { rank, loss, .. } => report.rank_losses.push((*rank, *loss)),
                    Progress::Adapter { rank, bytes, .. } => report.adapter = Some((*rank, *bytes)),
                    Progress::Done { peak_memory_bytes } => report.peak_memory_bytes = *peak_memory_bytes,
                    _ => {}
                }
                progress(&p);
            }
            if cancel.load(Ordering::Relaxed) {
                cancelled = true;
                let _ = child.kill();
                break;
            }
        }
    }
    let status = child.wait().map_err(|e| training(format!("cannot wait for the child: {e}")))?;
    let errors = err_reader.join().unwrap_or_default();
    if cancelled {
        return Err(training("cancelled".into()));
    }
    if !status.success() {
        // llama.cpp's own verdict (an assertion, or the child's error line) if it left one, else the last lines.
        let verdict = errors
            .lines()
            .rev()
            .find(|l| l.contains("GGML_ASSERT") || l.starts_with("slm-agents training child:"))
            .map(str::to_owned)
            .unwrap_or_else(|| {
                errors.lines().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
            });
        return Err(training(format!("the training process ended with {status}: {verdict}")));
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// If this process was started as a training child (by [`FineTune::run`]), does the job and returns the exit
/// code to end with; otherwise returns `None` at once. Call it first thing in `main`.
pub fn serve_child() -> Option<i32> {
    let path = std::env::var_os(CHILD_ENV)?;
    let job: Job = match std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()) {
        Some(job) => job,
        None => {
            eprintln!("slm-agents training child: cannot read the job at {}", Path::new(&path).display());
            return Some(2);
        }
    };
    #[cfg(feature = "train")]
    let done = native::train(&job);
    #[cfg(not(feature = "train"))]
    let done: std::result::Result<(), String> = Err("this build has no `train` feature".into());
    match done {
        Ok(()) => Some(0),
        Err(reason) => {
            eprintln!("slm-agents training child: {reason}");
            Some(1)
        }
    }
}

/// The evaluation cases of a chat-examples file: each example whose answer is a tool call made straight from
/// the request (no tool result before it), with that call as what is right (each argument's one value).
///
/// # Errors
/// [`Error::Ledger`] when the file cannot be read; [`Error::LedgerLine`] for a line that is not JSON.
pub fn test_cases(path: impl AsRef<Path>) -> Result<Vec<Case>> {
    let path = path.as_ref();
    let mut cases = Vec::new();
    for (line, v) in read_examples(path)? {
        if !is_first_call(&v) {
            continue;
        }
        let Some((last, history)) = v["messages"].as_array().and_then(|m| m.split_last()) else { continue };
        let user: Vec<Message> = history
            .iter()
            .filter(|m| m["role"] == "user")
            .map(|m| Message::user(m["content"].as_str().unwrap_or_default()))
            .collect();
        cases.push(Case {
            id: format!("{}:{line}", path.display()),
            category: String::new(),
            messages: user,
            tools: tools_of(&v),
            expected: Expected::Calls(calls_in(last).iter().map(ExpectedCall::exactly).collect()),
        });
    }
    Ok(cases)
}

/// The examples of a chat-examples file, with their line numbers (from 1); blank lines skipped.
fn read_examples(path: &Path) -> Result<Vec<(usize, Value)>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Ledger { path: path.to_owned(), source })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).map(|v| (i + 1, v)).map_err(|e| Error::LedgerLine {
                path: path.to_owned(),
                line: i + 1,
                reason: e.to_string(),
            })
        })
        .collect()
}

/// Whether an example's reply is a tool call made straight from the request.
fn is_first_call(example: &Value) -> bool {
    let Some((last, history)) = example["messages"].as_array().and_then(|m| m.split_last()) else { return false };
    last["tool_calls"].as_array().is_some_and(|c| !c.is_empty())
        && !history.iter().any(|m| m["role"] == "tool" || m["role"] == "assistant")
}

fn tools_of(example: &Value) -> Vec<ToolSpec> {
    example["tools"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|t| {
                    let f = &t["function"];
                    Some(ToolSpec {
                        name: f["name"].as_str()?.to_owned(),
                        description: f["description"].as_str().unwrap_or_default().to_owned(),
                        parameters: f["parameters"].clone(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Renders every line of a chat-examples file ([`render_example`]), the specialist's system prompt built once
/// per set of tools: each text with the byte offset where its reply starts.
fn render_file(model: &LlamaModel, path: &Path, calls_only: bool) -> Result<Vec<(String, usize)>> {
    let mut prompts: HashMap<String, String> = HashMap::new();
    let mut out = Vec::new();
    for (_, value) in read_examples(path)? {
        if calls_only && !is_first_call(&value) {
            continue;
        }
        let tools = tools_of(&value);
        let key = serde_json::to_string(&tools).unwrap_or_default();
        let system = match prompts.get(&key) {
            Some(system) => system.clone(),
            None => {
                let system = system_prompt(model, &tools)?;
                prompts.insert(key, system.clone());
                system
            }
        };
        out.push(render_with(model, &value, &tools, system)?);
    }
    Ok(out)
}

/// The evaluation specialist's system prompt for these tools: what the fine-tuned model will run under.
fn system_prompt(model: &LlamaModel, tools: &[ToolSpec]) -> Result<String> {
    let case = Case {
        id: String::new(),
        category: String::new(),
        messages: vec![Message::user("")],
        tools: tools.to_vec(),
        expected: Expected::NoCall,
    };
    let specialist = crate::eval::specialist_builder(&case, std::sync::Arc::new(model.clone()))
        .instructions(DEFAULT_INSTRUCTIONS)
        .build()?;
    Ok(specialist.system_prompt().to_owned())
}

/// One chat example (OpenAI fine-tuning format) as the text the specialist's model sees and should answer:
/// the evaluation specialist's system prompt for the example's tools (the prompt the adapter will run under),
/// the conversation, and the assistant's final turn in the specialist's reply format (`{"tool": .., "arguments":
/// ..}` or `{"answer": ..}`, with the separators its grammar uses), all rendered with the model's own chat
/// template and ended with the template's end of turn. The loss covers every token (llama.cpp's training API
/// has no mask), so the prompt is learned too.
///
/// # Errors
/// [`Error::InvalidRequest`] for an example without messages; the errors of building the specialist and of
/// rendering the template.
pub fn render_example(model: &LlamaModel, example: &Value) -> Result<String> {
    let tools = tools_of(example);
    let system = system_prompt(model, &tools)?;
    render_with(model, example, &tools, system).map(|(text, _)| text)
}

/// [`render_example`] with the example's tools and the system prompt at hand; with the reply's byte offset.
fn render_with(model: &LlamaModel, example: &Value, tools: &[ToolSpec], system: String) -> Result<(String, usize)> {
    let messages = example["messages"]
        .as_array()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| Error::InvalidRequest { reason: "a chat example needs messages".into() })?;
    let mut chat = vec![Message::system(system)];
    let (last, history) = messages.split_last().unwrap_or((&messages[0], &[]));
    for m in history {
        match m["role"].as_str().unwrap_or("") {
            "user" => chat.push(Message::user(m["content"].as_str().unwrap_or_default())),
            "tool" => chat.push(Message::tool(m["content"].as_str().unwrap_or_default())),
            "assistant" => chat.push(Message::assistant(reply(m, tools))),
            _ => {}
        }
    }
    let prompt = model.render_chat(&chat)?;
    let sentinel = "\u{1}slm-end\u{1}";
    chat.push(Message { role: Role::Assistant, content: sentinel.into() });
    let closed = model.render_chat(&chat)?;
    let after = closed.split(sentinel).nth(1).unwrap_or("");
    let end = match after.find('\n') {
        Some(i) => &after[..=i],
        None => after,
    };
    Ok((format!("{prompt}{}{end}", reply(last, tools)), prompt.len()))
}

/// An assistant message in the specialist's reply format.
fn reply(message: &Value, tools: &[ToolSpec]) -> String {
    if let Some(call) = message.get("tool_calls").map(calls_in).and_then(|c| c.into_iter().next()) {
        let (name, args) = (call.tool.as_str(), call.arguments);
        // The arguments in the order of the tool's schema, as the grammar writes them.
        let order: Vec<String> = tools
            .iter()
            .find(|t| t.name == name)
            .and_then(|t| t.parameters["properties"].as_object())
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        let mut ordered = serde_json::Map::new();
        if let Value::Object(map) = &args {
            for k in order.iter().filter(|k| map.contains_key(*k)) {
                ordered.insert(k.clone(), map[k].clone());
            }
            for (k, v) in map {
                if !ordered.contains_key(k) {
                    ordered.insert(k.clone(), v.clone());
                }
            }
        }
        let mut obj = serde_json::Map::new();
        obj.insert("tool".into(), Value::String(name.to_owned()));
        obj.insert("arguments".into(), Value::Object(ordered));
        return spaced(&Value::Object(obj));
    }
    let content = message["content"].as_str().unwrap_or_default();
    let mut obj = serde_json::Map::new();
    obj.insert("answer".into(), Value::String(content.to_owned()));
    spaced(&Value::Object(obj))
}

/// JSON with `", "` and `": "` separators, as the engine's grammars write it.
fn spaced(value: &Value) -> String {
    match value {
        Value::Array(items) => format!("[{}]", items.iter().map(spaced).collect::<Vec<_>>().join(", ")),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}: {}", Value::String(k.clone()), spaced(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}
