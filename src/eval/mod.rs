//! Task-level evaluation: a set of cases, run through a specialist concurrently on one loaded model, scored
//! and reported.
//!
#![doc = include_str!("../../docs/eval.md")]

pub mod bfcl;
mod report;
mod score;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use report::{CategoryScore, Report, Summary, Threshold};
pub use score::{score, standardize, Verdict};

use crate::model::{LanguageModel, Message, Role};
use crate::run::{CallIds, EvaluationEvent, MemoryRecorder, Recorder, RunContext, RunEvent};
use crate::specialist::{Decided, ModelSpecialist, ModelSpecialistBuilder};
pub use crate::tool::ToolSpec;
use crate::tool::{declared, ToolCall};
use crate::{Error, Result};

/// The instructions of the default specialist ([`default_specialist`]).
pub const DEFAULT_INSTRUCTIONS: &str = "You are a function-calling assistant. If one of the tools does what the \
    user asks, call it with the arguments the request gives. If no tool fits the request, do not call any: \
    answer in words.";

/// One evaluation case: the user's turn(s), the tools offered, and what is right.
///
/// Cases serialize to JSON, one per line in a JSON Lines file ([`read_cases`]):
///
/// ```
/// let line = r#"{"id":"w1","category":"weather","messages":[{"role":"user","content":"Weather in Paris?"}],
///   "tools":[{"name":"get_weather","description":"Current weather","parameters":{"type":"object",
///   "properties":{"city":{"type":"string"}},"required":["city"]}}],
///   "expected":{"calls":[{"tool":"get_weather","arguments":{"city":["Paris"]}}]}}"#;
/// let case: slm_agents::eval::Case = serde_json::from_str(&line.replace('\n', "")).unwrap();
/// assert_eq!(case.input_text(), "Weather in Paris?");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Case {
    /// A unique name of the case (`simple_python_0`).
    pub id: String,
    /// The group it is counted in (accuracy is reported per category).
    #[serde(default)]
    pub category: String,
    /// The conversation: the last user message is the request; earlier messages are given as context.
    pub messages: Vec<Message>,
    /// The tools the specialist is offered (declared by schema, never run).
    #[serde(default)]
    pub tools: Vec<ToolSpec>,
    /// What is right.
    pub expected: Expected,
}

impl Case {
    /// The text given to the specialist: the last user message, after any earlier messages written as
    /// `role: content` lines.
    pub fn input_text(&self) -> String {
        let last_user = self.messages.iter().rposition(|m| m.role == Role::User);
        let mut context = String::new();
        for (i, m) in self.messages.iter().enumerate() {
            if Some(i) != last_user {
                context.push_str(&format!("{}: {}\n", m.role.as_str(), m.content.trim()));
            }
        }
        match last_user {
            Some(i) if context.is_empty() => self.messages[i].content.clone(),
            Some(i) => format!("{context}\n{}", self.messages[i].content),
            None => context.trim_end().to_owned(),
        }
    }
}

/// What is right for a case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expected {
    /// These calls: one, or several made together (matched in any order, each to a distinct call).
    Calls(Vec<ExpectedCall>),
    /// No call: the right answer is to answer in words (the request is outside the tools).
    NoCall,
    /// This answer, compared as JSON.
    Answer(Value),
}

/// One expected call: the tool, and the accepted values of each argument.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpectedCall {
    /// The tool's name.
    pub tool: String,
    /// Per argument, the values accepted for it; `""` among them means the argument may be left out. An
    /// argument not listed here must not be given. See [`score`] for how values are compared.
    #[serde(default)]
    pub arguments: BTreeMap<String, Vec<Value>>,
}

impl ExpectedCall {
    /// Exactly this call: its tool, and each of its arguments with its one value.
    ///
    /// ```
    /// use slm_agents::eval::ExpectedCall;
    /// use slm_agents::tool::ToolCall;
    ///
    /// let call = ToolCall { tool: "weather".into(), arguments: serde_json::json!({"city": "Oslo"}) };
    /// assert_eq!(ExpectedCall::exactly(&call).arguments["city"], [serde_json::json!("Oslo")]);
    /// ```
    pub fn exactly(call: &crate::tool::ToolCall) -> Self {
        Self {
            tool: call.tool.clone(),
            arguments: call
                .arguments
                .as_object()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), vec![v.clone()])).collect())
                .unwrap_or_default(),
        }
    }
}

/// What the specialist did with a case (scored by [`score`]).
///
/// Not to be confused with [`run::Outcome`](crate::run::Outcome), whether a recorded call succeeded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It asked for these calls (not run).
    Calls(Vec<ToolCall>),
    /// It answered without a call (its answer as JSON).
    Answer(Value),
    /// The turn failed.
    Error {
        /// The error's group ([`ErrorKind`](crate::ErrorKind) of its [`root`](Error::root)), as a word.
        kind: String,
        /// The message of the root error.
        message: String,
        /// Whether the turn was cut off by the token limit ([`Error::Incomplete`]).
        cut_off: bool,
    },
}

impl Outcome {
    /// The outcome of a failed turn.
    pub fn from_error(error: &Error) -> Self {
        let root = error.root();
        Outcome::Error {
            kind: format!("{:?}", root.kind()),
            message: root.to_string(),
            cut_off: matches!(root, Error::Incomplete { .. }),
        }
    }

    /// Whether the specialist answered without calling anything (abstained).
    pub fn is_answer(&self) -> bool {
        matches!(self, Outcome::Answer(_))
    }
}

/// The result of one case: what the specialist did, whether it was right, and what it cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseResult {
    /// The case's id.
    pub id: String,
    /// The case's category.
    pub category: String,
    /// What was right.
    pub expected: Expected,
    /// What the specialist did.
    pub outcome: Outcome,
    /// Whether the output is valid: every call names an offered tool with arguments that validate against its
    /// schema; an answer parsed as its type; never for an error.
    pub schema_valid: bool,
    /// The score.
    pub verdict: Verdict,
    /// Wall time of the specialist's turn, in milliseconds (under concurrency, waiting for the model included).
    pub latency_ms: f64,
    /// Prompt tokens of the model calls.
    pub prompt_tokens: usize,
    /// Generated tokens of the model calls.
    pub completion_tokens: usize,
    /// The probability the model gave to calling a tool rather than answering
    /// ([`Decision::call_probability`](crate::specialist::Decision::call_probability)), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_probability: Option<f64>,
    /// How much the request is about the best-matching tool
    /// ([`Decision::relevance`](crate::specialist::Decision::relevance)), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relevance: Option<f64>,
    /// The model's name, as the recorded calls give it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

impl CaseResult {
    /// Whether no call was expected (the case is a positive for abstention).
    pub fn expects_no_call(&self) -> bool {
        matches!(self.expected, Expected::NoCall)
    }
}

/// The default specialist for a case: the case's tools declared ([`declared`]), [`DEFAULT_INSTRUCTIONS`], a
/// `String` answer, the builder's other defaults.
///
/// # Errors
/// As [`ModelSpecialistBuilder::build`](crate::specialist::ModelSpecialistBuilder::build): a tool name that is
/// not allowed, two tools of one name, a schema that cannot be used.
pub fn default_specialist(case: &Case, model: Arc<dyn LanguageModel>) -> Result<ModelSpecialist> {
    specialist_builder(case, model).instructions(DEFAULT_INSTRUCTIONS).build()
}

/// The builder of [`default_specialist`] before its instructions are set: a specialist named `eval` on
/// `model` with the case's tools declared. Set anything else (instructions, [`ToolFormat`](crate::specialist::ToolFormat),
/// call threshold, token limit) and build it.
pub fn specialist_builder(case: &Case, model: Arc<dyn LanguageModel>) -> ModelSpecialistBuilder {
    let mut builder = ModelSpecialist::builder("eval").model_arc(model);
    for tool in &case.tools {
        builder = builder.tool_dyn(Arc::new(declared(&tool.name, &tool.description, tool.parameters.clone())));
    }
    builder
}

/// Reads cases from a JSON Lines file (one [`Case`] a line; blank lines are skipped).
///
/// # Errors
/// [`Error::Dataset`] if the file cannot be read or a line is not a case.
pub fn read_cases(path: impl AsRef<Path>) -> Result<Vec<Case>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Dataset { path: path.to_owned(), reason: format!("cannot read: {e}") })?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line)
                .map_err(|e| Error::Dataset { path: path.to_owned(), reason: format!("line {}: {e}", i + 1) })
        })
        .collect()
}

type Progress = Box<dyn Fn(usize, usize, &CaseResult) + Send + Sync>;
type Configure = Box<dyn Fn(ModelSpecialistBuilder) -> ModelSpecialistBuilder + Send + Sync>;

/// Runs cases through a specialist, concurrently, and scores them.
///
/// Each case gets its own specialist, built for its tools, and its own [`RunContext`] with a
/// [`MemoryRecorder`] (for its tokens); the specialist's first turn is taken with
/// [`ModelSpecialist::decide`], so nothing is run. No async runtime is needed:
/// `futures::executor::block_on(evaluation.run(model, 4))` works.
pub struct Evaluation {
    cases: Vec<Case>,
    instructions: String,
    configure: Option<Configure>,
    progress: Option<Progress>,
    record: Option<(Arc<dyn Recorder>, String)>,
}

impl std::fmt::Debug for Evaluation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluation").field("cases", &self.cases.len()).finish_non_exhaustive()
    }
}

impl Evaluation {
    /// An evaluation of these cases.
    pub fn new(cases: Vec<Case>) -> Self {
        Self { cases, instructions: DEFAULT_INSTRUCTIONS.to_owned(), configure: None, progress: None, record: None }
    }

    /// The cases.
    pub fn cases(&self) -> &[Case] {
        &self.cases
    }

    /// The instructions of the default specialist of [`run`](Self::run) (default [`DEFAULT_INSTRUCTIONS`]).
    pub fn instructions(mut self, instructions: impl Into<String>) -> Self {
        self.instructions = instructions.into();
        self
    }

    /// Sets up the default specialist of [`run`](Self::run) further, after its tools and instructions: a
    /// [`ToolFormat`](crate::specialist::ToolFormat), a call threshold, a token limit.
    ///
    /// ```
    /// use slm_agents::eval::Evaluation;
    /// use slm_agents::specialist::ToolFormat;
    ///
    /// let evaluation = Evaluation::new(Vec::new()).configure(|b| b.tool_format(ToolFormat::Compact).call_threshold(None));
    /// ```
    pub fn configure(
        mut self,
        configure: impl Fn(ModelSpecialistBuilder) -> ModelSpecialistBuilder + Send + Sync + 'static,
    ) -> Self {
        self.configure = Some(Box::new(configure));
        self
    }

    /// Called after each case, in the order cases finish, with the number done, the number of cases, and the
    /// case's result.
    pub fn on_progress(mut self, progress: impl Fn(usize, usize, &CaseResult) + Send + Sync + 'static) -> Self {
        self.progress = Some(Box::new(progress));
        self
    }

    /// Also records each run to `recorder` (a [`JsonlLedger`](crate::ledger::JsonlLedger), say) under `name`:
    /// every case's model calls, as run `<name>/<case id>`, and at the end one [`EvaluationEvent`] with the
    /// figures, as run `<name>`. Name each evaluation differently ("base", "adapter r16") to compare them in the
    /// ledger.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use slm_agents::eval::Evaluation;
    /// use slm_agents::run::MemoryRecorder;
    ///
    /// let ledger = Arc::new(MemoryRecorder::default());
    /// let evaluation = Evaluation::new(Vec::new()).record_to(ledger.clone(), "base");
    /// ```
    pub fn record_to(mut self, recorder: Arc<dyn Recorder>, name: impl Into<String>) -> Self {
        self.record = Some((recorder, name.into()));
        self
    }

    /// Runs every case through the default specialist on `model` ([`default_specialist`], with this
    /// evaluation's instructions), `concurrency` cases at a time (at least 1).
    pub async fn run(&self, model: Arc<dyn LanguageModel>, concurrency: usize) -> Report {
        let instructions = self.instructions.clone();
        self.run_with(concurrency, move |case| {
            let builder = specialist_builder(case, model.clone()).instructions(instructions.as_str());
            match &self.configure {
                Some(configure) => configure(builder).build(),
                None => builder.build(),
            }
        })
        .await
    }

    /// Runs every case through the specialist `build` makes for it, `concurrency` cases at a time (at least
    /// 1). The specialist's answer type `O` is compared, as JSON, with an [`Expected::Answer`]. A case whose
    /// specialist cannot be built is scored as an error.
    pub async fn run_with<O, F>(&self, concurrency: usize, build: F) -> Report
    where
        O: Serialize + JsonSchema + DeserializeOwned + Send + 'static,
        F: Fn(&Case) -> Result<ModelSpecialist<String, O>>,
    {
        let started = Instant::now();
        let build = &build;
        let total = self.cases.len();
        let mut stream = futures::stream::iter(self.cases.iter().enumerate())
            .map(|(i, case)| async move { (i, run_case(case, build(case), self.record.as_ref()).await) })
            .buffer_unordered(concurrency.max(1));
        let mut results: Vec<(usize, CaseResult)> = Vec::with_capacity(total);
        while let Some((i, result)) = stream.next().await {
            if let Some(progress) = &self.progress {
                progress(results.len() + 1, total, &result);
            }
            results.push((i, result));
        }
        results.sort_by_key(|(i, _)| *i);
        let report = Report::new(results.into_iter().map(|(_, r)| r).collect(), started.elapsed());
        if let Some((recorder, name)) = &self.record {
            let s = &report.summary;
            recorder.record(RunEvent::Evaluation(EvaluationEvent {
                ids: CallIds { run: name.clone(), ..CallIds::default() },
                name: name.clone(),
                model: s.model.clone(),
                cases: s.cases,
                correct: s.correct,
                accuracy: s.accuracy,
                errors: s.errors,
                latency_mean_ms: s.latency_mean_ms,
                prompt_tokens: s.prompt_tokens,
                completion_tokens: s.completion_tokens,
            }));
        }
        report
    }
}

/// Sends each event to memory (for the case's figures) and to the evaluation's recorder.
struct Tee(Arc<MemoryRecorder>, Arc<dyn Recorder>);

impl Recorder for Tee {
    fn record(&self, event: RunEvent) {
        self.0.record(event.clone());
        self.1.record(event);
    }
}

async fn run_case<O>(
    case: &Case,
    specialist: Result<ModelSpecialist<String, O>>,
    record: Option<&(Arc<dyn Recorder>, String)>,
) -> CaseResult
where
    O: Serialize + JsonSchema + DeserializeOwned + Send + 'static,
{
    let events = Arc::new(MemoryRecorder::default());
    let ctx = match record {
        Some((recorder, name)) => RunContext::new()
            .with_recorder(Arc::new(Tee(events.clone(), recorder.clone())))
            .with_run_id(format!("{name}/{}", case.id)),
        None => RunContext::new().with_recorder(events.clone()).with_run_id(case.id.clone()),
    };
    let started = Instant::now();
    let (mut call_probability, mut relevance) = (None, None);
    let (outcome, schema_valid) = match specialist {
        Err(e) => (Outcome::from_error(&e), false),
        Ok(specialist) => match specialist.decision(case.input_text(), &ctx).await {
            Ok(decision) => {
                call_probability = decision.call_probability;
                relevance = decision.relevance;
                match decision.decided {
                    Decided::Calls(calls) => {
                        let valid = calls.iter().all(|c| specialist.tools().validate(&c.tool, &c.arguments).is_ok());
                        (Outcome::Calls(calls), valid)
                    }
                    Decided::Answer(answer) => match serde_json::to_value(answer) {
                        Ok(value) => (Outcome::Answer(value), true),
                        Err(e) => (
                            Outcome::Error { kind: "InvalidOutput".into(), message: e.to_string(), cut_off: false },
                            false,
                        ),
                    },
                }
            }
            Err(e) => (Outcome::from_error(&e), false),
        },
    };
    let latency = started.elapsed();
    let calls = events.model_calls();
    let usage = calls.iter().filter_map(|c| c.usage);
    let (prompt_tokens, completion_tokens) =
        usage.fold((0, 0), |(p, c), u| (p + u.prompt_tokens, c + u.completion_tokens));
    CaseResult {
        id: case.id.clone(),
        category: case.category.clone(),
        verdict: score(&case.expected, &outcome),
        expected: case.expected.clone(),
        outcome,
        schema_valid,
        latency_ms: latency.as_secs_f64() * 1e3,
        prompt_tokens,
        completion_tokens,
        call_probability,
        relevance,
        model: calls.first().map(|c| c.model.clone()),
    }
}
