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
//!     println!("fine-tuned model: {}", tuned.model.display());
//!     Ok(())
//! }
//! ```
//!
#![doc = include_str!("../../docs/finetune.md")]

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
}

/// What the child is given.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    base: PathBuf,
    texts: Vec<String>,
    eval_texts: Vec<String>,
    out: PathBuf,
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
    /// The fine-tuned model (F32 GGUF).
    pub model: PathBuf,
    /// The last epoch's training loss.
    pub loss: Option<f64>,
    /// The held-out loss after the last epoch.
    pub eval_loss: Option<f64>,
    /// Training examples.
    pub examples: usize,
    /// Wall time of the child, in seconds.
    pub seconds: f64,
}

impl FineTuned {
    /// A model fine-tuned earlier, to evaluate (no losses or timing known).
    pub fn evaluated(model: impl Into<PathBuf>) -> Self {
        Self { model: model.into(), loss: None, eval_loss: None, examples: 0, seconds: 0.0 }
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
    layers: Option<usize>,
    learning_rate: f32,
    epochs: usize,
    context: u32,
    threads: usize,
    program: Option<PathBuf>,
    unchecked: bool,
    calls_only: bool,
}

impl FineTune {
    /// Fine-tunes the GGUF model at `base` (its quantized file: the child converts it to F32).
    pub fn new(base: impl AsRef<Path>) -> Self {
        Self {
            base: base.as_ref().to_owned(),
            train: None,
            eval: None,
            out: None,
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

    /// Where the fine-tuned model is written (default: beside the training file, `finetuned-f32.gguf`).
    pub fn out(mut self, path: impl AsRef<Path>) -> Self {
        self.out = Some(path.as_ref().to_owned());
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
        let texts = render_file(&renderer, train, self.calls_only)?;
        let eval_texts = match &self.eval {
            Some(path) => render_file(&renderer, path, self.calls_only)?,
            None => Vec::new(),
        };
        drop(renderer);
        progress(&Progress::Rendered { train: texts.len(), eval: eval_texts.len() });
        let out =
            self.out.clone().unwrap_or_else(|| train.parent().unwrap_or(Path::new(".")).join("finetuned-f32.gguf"));
        let work_dir = std::env::temp_dir().join(format!("slm-finetune-{}", std::process::id()));
        std::fs::create_dir_all(&work_dir).map_err(|source| Error::Export { path: work_dir.clone(), source })?;
        let examples = texts.len();
        let job = Job {
            base: self.base.clone(),
            texts,
            eval_texts,
            out: out.clone(),
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
        let (loss, eval_loss, seconds) = result?;
        Ok(FineTuned { model: out, loss, eval_loss, examples, seconds })
    }
}

type Losses = (Option<f64>, Option<f64>, f64);

fn run_child(
    program: Option<&Path>,
    job: &Path,
    progress: &mut dyn FnMut(&Progress),
    cancel: &AtomicBool,
) -> Result<Losses> {
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
    let (mut loss, mut eval_loss) = (None, None);
    let mut cancelled = false;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(p) = serde_json::from_str::<Progress>(&line) {
                if let Progress::Epoch { loss: l, eval_loss: e, .. } = &p {
                    loss = Some(*l);
                    eval_loss = *e;
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
    Ok((loss, eval_loss, started.elapsed().as_secs_f64()))
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
    match native::train(&job) {
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
/// per set of tools.
fn render_file(model: &LlamaModel, path: &Path, calls_only: bool) -> Result<Vec<String>> {
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
    render_with(model, example, &tools, system)
}

/// [`render_example`] with the example's tools and the system prompt at hand.
fn render_with(model: &LlamaModel, example: &Value, tools: &[ToolSpec], system: String) -> Result<String> {
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
    Ok(format!("{prompt}{}{end}", reply(last, tools)))
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
