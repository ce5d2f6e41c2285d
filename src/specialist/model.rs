//! The model-backed specialist and its tool loop.

use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use super::format::{call_probability, parse_turn, system_prompt, Turn, Turns};
use super::relevance::{made_up_number, numbers_in, request_spans, scores, tool_numbers, tool_stems};
use super::{Specialist, SpecialistCard, ToolFormat};
use crate::agent::Agent;
use crate::model::{Completion, LanguageModel, Message, Request, Sampling};
use crate::run::{Outcome, Parsed, RunContext, RunEvent, RunUpdate, ToolCallEvent};
use crate::structured::{inline_schema_for, OutputSchema};
use crate::tool::{off_thread, panic_message, DynTool, Tool, ToolCall, ToolError, Toolbox};
use crate::{Error, Result};

/// The default of [`ModelSpecialistBuilder::max_tool_result_bytes`].
pub const DEFAULT_MAX_TOOL_RESULT_BYTES: usize = 8 * 1024;

/// The default of [`ModelSpecialistBuilder::narrow_tools`].
pub const DEFAULT_NARROW_MARGIN: f64 = 0.1;

/// The default of [`ModelSpecialistBuilder::relevance_threshold`].
pub const DEFAULT_RELEVANCE_THRESHOLD: f64 = 0.1;

/// A specialist backed by a language model, with tools and a typed answer.
///
/// ```no_run
/// use schemars::JsonSchema;
/// use serde::Deserialize;
/// use slm_agents::prelude::*;
/// use slm_agents::tool::tool_fn;
///
/// #[derive(Deserialize, JsonSchema)]
/// struct Search {
///     from: String,
///     to: String,
/// }
///
/// #[derive(Debug, Deserialize, JsonSchema)]
/// struct Answer {
///     flight: String,
/// }
///
/// # async fn demo() -> slm_agents::Result<()> {
/// let slm = LlamaModel::builder("models/SmolLM2-135M-Instruct.Q4_1.gguf").load()?;
/// let search = tool_fn("search_flights", "Finds flights between two cities", |a: Search| async move {
///     Ok::<_, std::io::Error>(vec![format!("LY123 {} -> {}", a.from, a.to)])
/// });
/// let flights = ModelSpecialist::builder("flights")
///     .description("Finds flights between two cities")
///     .model(slm)
///     .instructions("You find flights with the search_flights tool.")
///     .tool_dyn(std::sync::Arc::new(search))
///     .output::<Answer>()
///     .build()?;
/// let answer = flights.run("Tel Aviv to Paris".to_string(), &RunContext::new()).await?;
/// # Ok(()) }
/// ```
pub struct ModelSpecialist<I = String, O = String> {
    card: SpecialistCard,
    model: Arc<dyn LanguageModel>,
    system: String,
    tools: Toolbox,
    format: ToolFormat,
    turns: Turns,
    answer: OutputSchema,
    call_threshold: Option<f64>,
    relevance_threshold: Option<f64>,
    narrow_margin: Option<f64>,
    ground_strings: bool,
    tool_stems: Vec<Vec<String>>,
    /// The tools as the model is shown them, for the ledger.
    tool_specs: Vec<crate::tool::ToolSpec>,
    /// Per tool, the numbers its description and schema state; `None` when numbers are not checked.
    tool_numbers: Option<std::collections::BTreeMap<String, Vec<f64>>>,
    sampling: Sampling,
    max_steps: usize,
    max_tool_calls: Option<usize>,
    max_tool_errors: usize,
    tool_timeout: Duration,
    isolate_tools: bool,
    max_tool_result_bytes: usize,
    max_tokens: u32,
    _types: PhantomData<fn(I) -> O>,
}

impl<I, O> std::fmt::Debug for ModelSpecialist<I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelSpecialist")
            .field("name", &self.card.name)
            .field("model", &self.model.name())
            .field("tools", &self.tools)
            .field("max_steps", &self.max_steps)
            .finish_non_exhaustive()
    }
}

/// Builds a [`ModelSpecialist`]; from [`ModelSpecialist::builder`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct ModelSpecialistBuilder<I = String, O = String> {
    card: SpecialistCard,
    model: Option<Arc<dyn LanguageModel>>,
    instructions: String,
    tools: Toolbox,
    /// The first error of a setter, reported by `build`.
    error: Option<Error>,
    format: ToolFormat,
    call_threshold: Option<f64>,
    relevance_threshold: Option<f64>,
    narrow_margin: Option<f64>,
    ground_numbers: bool,
    ground_strings: bool,
    max_calls_per_turn: usize,
    sampling: Sampling,
    max_steps: usize,
    max_tool_calls: Option<usize>,
    max_tool_errors: usize,
    tool_timeout: Duration,
    isolate_tools: bool,
    max_tool_result_bytes: usize,
    max_tokens: u32,
    _types: PhantomData<fn(I) -> O>,
}

impl<I, O> std::fmt::Debug for ModelSpecialistBuilder<I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelSpecialistBuilder").field("card", &self.card).finish_non_exhaustive()
    }
}

impl ModelSpecialist {
    /// Starts building a specialist named `name` (input and output `String` until set otherwise).
    pub fn builder(name: impl Into<String>) -> ModelSpecialistBuilder {
        ModelSpecialistBuilder {
            card: SpecialistCard { name: name.into(), description: String::new(), examples: Vec::new() },
            model: None,
            instructions: String::new(),
            tools: Toolbox::new(),
            error: None,
            format: ToolFormat::default(),
            call_threshold: None,
            relevance_threshold: Some(DEFAULT_RELEVANCE_THRESHOLD),
            narrow_margin: Some(DEFAULT_NARROW_MARGIN),
            ground_numbers: true,
            ground_strings: false,
            max_calls_per_turn: 8,
            sampling: Sampling::greedy(),
            max_steps: 4,
            max_tool_calls: None,
            max_tool_errors: 2,
            tool_timeout: Duration::from_secs(30),
            isolate_tools: false,
            max_tool_result_bytes: DEFAULT_MAX_TOOL_RESULT_BYTES,
            max_tokens: 256,
            _types: PhantomData,
        }
    }
}

impl<I, O> ModelSpecialistBuilder<I, O> {
    /// What the specialist does (for routers and managers).
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.card.description = description.into();
        self
    }

    /// Adds an example task (for routers and managers).
    pub fn example(mut self, task: impl Into<String>) -> Self {
        self.card.examples.push(task.into());
        self
    }

    /// The model that does the work. Many specialists can share one model handle (and its loaded weights).
    pub fn model(mut self, model: impl LanguageModel + 'static) -> Self {
        self.model = Some(Arc::new(model));
        self
    }

    /// A local model with one of its LoRA adapters applied at `scale` (see [`LlamaModel::with_adapter`](crate::model::LlamaModel::with_adapter)): the
    /// specialist shares the loaded weights and runs on the adapter's own lane. `adapter` is the name or file
    /// path given to [`LlamaModelBuilder::adapter`](crate::model::LlamaModelBuilder::adapter) when the model was
    /// loaded (llama.cpp loads adapters before any context exists).
    #[cfg(any(feature = "llama", docsrs))]
    #[cfg_attr(docsrs, doc(cfg(feature = "llama")))]
    pub fn lora(mut self, model: &crate::model::LlamaModel, adapter: &str, scale: f32) -> Self {
        match model.with_adapter(adapter, scale) {
            Ok(m) => self.model = Some(Arc::new(m)),
            Err(e) => self.fail(e),
        }
        self
    }

    /// The model, already behind an `Arc<dyn LanguageModel>`.
    pub fn model_arc(mut self, model: Arc<dyn LanguageModel>) -> Self {
        self.model = Some(model);
        self
    }

    /// The specialist's instructions (its system prompt). Tool descriptions and the answer format are added.
    pub fn instructions(mut self, instructions: impl Into<String>) -> Self {
        self.instructions = instructions.into();
        self
    }

    /// Adds a typed tool.
    pub fn tool<T: Tool>(self, tool: T) -> Self {
        self.tool_dyn(Arc::new(tool))
    }

    /// Adds a tool held as a trait object (for example one made with [`tool_fn`](crate::tool::tool_fn)).
    pub fn tool_dyn(mut self, tool: Arc<dyn DynTool>) -> Self {
        match std::mem::take(&mut self.tools).with_dyn(tool) {
            Ok(tools) => self.tools = tools,
            Err(e) => self.fail(e),
        }
        self
    }

    /// Adds several type-erased tools (for example an [MCP server's](crate::mcp) tools).
    pub fn tools_dyn<T: DynTool + 'static>(mut self, tools: impl IntoIterator<Item = T>) -> Self {
        for tool in tools {
            self = self.tool_dyn(Arc::new(tool));
        }
        self
    }

    /// Uses a whole toolbox (replacing tools added before).
    pub fn toolbox(mut self, tools: Toolbox) -> Self {
        self.tools = tools;
        self
    }

    fn fail(&mut self, error: Error) {
        self.error.get_or_insert(error);
    }

    /// How tools are shown to the model and how it writes calls (default [`ToolFormat::Compact`]).
    pub fn tool_format(mut self, format: ToolFormat) -> Self {
        self.format = format;
        self
    }

    /// How sure the model must be to call a tool rather than answer in words (default `None`: the model's own
    /// choice).
    ///
    /// On each turn that may call a tool, the specialist reads the probability the model gives to calling at
    /// the point where its reply chooses between calling and answering (from the token log-probabilities of
    /// the reply, over what the grammar allows). Below the threshold it answers instead; at or above it, it
    /// calls, even where the most likely reply was to answer (a second, calls-only turn).
    /// [`Report::best_call_threshold`](crate::eval::Report::best_call_threshold) finds the threshold that
    /// fits your own cases. Models that report no log-probabilities make their own choice. For SmolLM2-135M
    /// this probability hardly tells a request no tool fits from one that needs a tool (docs/eval.md), so
    /// the default leaves the choice to the model and [`relevance_threshold`](Self::relevance_threshold)
    /// does the abstaining; a larger model may be better calibrated. A threshold outside `0.0..=1.0` is
    /// reported by `build`.
    pub fn call_threshold(mut self, threshold: impl Into<Option<f64>>) -> Self {
        self.call_threshold = threshold.into();
        self
    }

    /// How much of a request must be about a tool for the specialist to consider calling one (default
    /// [`DEFAULT_RELEVANCE_THRESHOLD`]); `None` leaves it all to the model.
    ///
    /// The relevance of a request is the share of its content words (common words and numbers left out,
    /// crudely stemmed: `flights` and `flight` are one word) that the best-matching tool is known by, in its
    /// name, description, or its arguments' names, descriptions and allowed values. Below the threshold the
    /// specialist answers in words without asking the model whether to call (and without the cost of that
    /// turn). Small models call a tool for almost any request, even one no tool fits; this check is what
    /// makes them abstain (measured in docs/eval.md). Describe your tools in the words your users use, or
    /// lower the threshold, if requests that need a tool share few words with it.
    pub fn relevance_threshold(mut self, threshold: impl Into<Option<f64>>) -> Self {
        self.relevance_threshold = threshold.into();
        self
    }

    /// On the first turn, offers the model only the tools about as relevant to the request as the most
    /// relevant one: those whose relevance (see [`relevance_threshold`](Self::relevance_threshold)) is at
    /// most `margin` below the best (default [`DEFAULT_NARROW_MARGIN`]); `None` offers every tool. The
    /// prompt still lists every tool; the grammar of that turn allows only the tools kept (and the answer).
    /// Later turns, after tool results, may call any tool.
    ///
    /// With several tools, a small model often calls a tool next to the right one; the words of the request
    /// pick the right one far more often (on BFCL's `multiple` development split, the best-matching tool is
    /// the expected one 94 times in 100, and with a margin of 0.1 the expected tool is kept 99 times in 100,
    /// with 1.17 tools kept on average).
    pub fn narrow_tools(mut self, margin: impl Into<Option<f64>>) -> Self {
        self.narrow_margin = margin.into();
        self
    }

    /// Whether a first call may use numbers the request does not state (default: it may not).
    ///
    /// On the first turn, every number in a call's arguments must be stated by the request (in digits, with
    /// thousands separators or as a percentage, or in common words: `five`, `dozen`, `half`) or by the
    /// tool's own description and schema (a default, an allowed value, a bound), or be 0 or 1. A call with a
    /// number from nowhere is taken as the sign of a request that lacks what the tool needs (small models
    /// fill the gap with made-up values, and call tools that do not fit at all with made-up values), and the
    /// specialist answers in words instead. Turn it off for tools whose numbers the model is meant to work
    /// out (a date from "next Friday", a sum); later turns, after tool results, are never checked.
    pub fn ground_numbers(mut self, on: bool) -> Self {
        self.ground_numbers = on;
        self
    }

    /// Whether the first call's free strings must be taken from the request (default off).
    ///
    /// On, every string argument without allowed values, a format or a pattern must be a run of up to eight
    /// words of the request, as written (punctuation around it trimmed): the model picks the span, it cannot
    /// write a name the user did not. For tools whose strings are names, places, titles and ids the user
    /// gives; not for strings the model must compose (a message, a query, a formula).
    pub fn ground_strings(mut self, on: bool) -> Self {
        self.ground_strings = on;
        self
    }

    /// The most tool calls in one turn (default 8): with [`ToolFormat::Json`] the model may ask for several
    /// calls at once where a request needs several ("the weather in Paris and in Rome"); they run
    /// concurrently. Identical calls in one turn are made once.
    pub fn max_calls_per_turn(mut self, calls: usize) -> Self {
        self.max_calls_per_turn = calls;
        self
    }

    /// Sampling settings for every turn (default greedy).
    pub fn sampling(mut self, sampling: Sampling) -> Self {
        self.sampling = sampling;
        self
    }

    /// The most model turns in one run (default 4); more is [`Error::MaxSteps`].
    pub fn max_steps(mut self, steps: usize) -> Self {
        self.max_steps = steps;
        self
    }

    /// After this many successful tool calls, the model may only answer (default: no limit but `max_steps`).
    ///
    /// Whatever the limit, a call identical to one that already succeeded is not run again: the model is made
    /// to answer instead (small models tend to repeat a call rather than read its result).
    pub fn max_tool_calls(mut self, calls: usize) -> Self {
        self.max_tool_calls = Some(calls);
        self
    }

    /// How many failed tool calls are fed back to the model before the run fails (default 2).
    pub fn max_tool_errors(mut self, errors: usize) -> Self {
        self.max_tool_errors = errors;
        self
    }

    /// How long one tool call may take (default 30 s). A call that takes longer fails with
    /// [`ToolError::Timeout`], and its result is never used, even if it arrives later.
    ///
    /// An async tool runs on the specialist's own task, so a tool that blocks its thread (a synchronous sleep,
    /// blocking I/O) holds the specialist until it returns: make such tools with
    /// [`tool_fn_blocking`](crate::tool::tool_fn_blocking), which runs each call on a helper thread, or turn
    /// on [`isolate_tools`](Self::isolate_tools). Either way a call cut off by the timeout keeps running on its
    /// helper thread until it returns, and its result is dropped.
    pub fn tool_timeout(mut self, timeout: Duration) -> Self {
        self.tool_timeout = timeout;
        self
    }

    /// Runs every tool call on a helper thread of its own (default off), polled there with
    /// `futures::executor::block_on`, so that no tool can hold the specialist past its timeout. Leave it off
    /// for tools that need the caller's async runtime (a tokio-based HTTP client, say): they need to run on
    /// its threads.
    pub fn isolate_tools(mut self, on: bool) -> Self {
        self.isolate_tools = on;
        self
    }

    /// The largest tool result, as JSON text, that reaches the model (default 8 KiB). A larger result is cut
    /// to this size and shown to the model as `{"tool": .., "truncated": true, "bytes": .., "limit": ..,
    /// "beginning": ".."}`, so that one tool cannot fill the context window.
    pub fn max_tool_result_bytes(mut self, bytes: usize) -> Self {
        self.max_tool_result_bytes = bytes;
        self
    }

    /// The token limit of one model turn (default 256).
    pub fn max_tokens(mut self, tokens: u32) -> Self {
        self.max_tokens = tokens;
        self
    }

    /// Sets the input type: anything serializable; a string is given to the model as it is, anything else as
    /// JSON.
    pub fn input<I2: Serialize + Send + Sync + 'static>(self) -> ModelSpecialistBuilder<I2, O> {
        self.retype()
    }

    /// Sets the output type: the answer is grammar-constrained to its JSON Schema.
    pub fn output<O2: JsonSchema + DeserializeOwned + Send + 'static>(self) -> ModelSpecialistBuilder<I, O2> {
        self.retype()
    }

    fn retype<I2, O2>(self) -> ModelSpecialistBuilder<I2, O2> {
        ModelSpecialistBuilder {
            card: self.card,
            model: self.model,
            instructions: self.instructions,
            tools: self.tools,
            error: self.error,
            format: self.format,
            call_threshold: self.call_threshold,
            relevance_threshold: self.relevance_threshold,
            narrow_margin: self.narrow_margin,
            ground_numbers: self.ground_numbers,
            ground_strings: self.ground_strings,
            max_calls_per_turn: self.max_calls_per_turn,
            sampling: self.sampling,
            max_steps: self.max_steps,
            max_tool_calls: self.max_tool_calls,
            max_tool_errors: self.max_tool_errors,
            tool_timeout: self.tool_timeout,
            isolate_tools: self.isolate_tools,
            max_tool_result_bytes: self.max_tool_result_bytes,
            max_tokens: self.max_tokens,
            _types: PhantomData,
        }
    }
}

impl<I, O> ModelSpecialistBuilder<I, O>
where
    I: Serialize + Send + Sync + 'static,
    O: JsonSchema + DeserializeOwned + Send + 'static,
{
    /// Builds the specialist.
    ///
    /// # Errors
    /// [`Error::InvalidSetting`] without a model, with an empty name, zero steps, or tools with clashing or bad
    /// names; [`Error::Schema`] if a schema cannot be used.
    pub fn build(self) -> Result<ModelSpecialist<I, O>> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let name = self.card.name.clone();
        if name.trim().is_empty() {
            return Err(Error::InvalidSetting { setting: "name", reason: "a specialist needs a name".into() });
        }
        let model = self.model.ok_or_else(|| Error::InvalidSetting {
            setting: "model",
            reason: format!("specialist `{name}` has no model"),
        })?;
        if self.max_steps == 0 {
            return Err(Error::InvalidSetting { setting: "max_steps", reason: "must be at least 1".into() });
        }
        if self.max_calls_per_turn == 0 {
            return Err(Error::InvalidSetting { setting: "max_calls_per_turn", reason: "must be at least 1".into() });
        }
        if let Some(t) = self.call_threshold.filter(|t| !(0.0..=1.0).contains(t)) {
            return Err(Error::InvalidSetting {
                setting: "call_threshold",
                reason: format!("{t} is not a probability (0 to 1)"),
            });
        }
        if let Some(m) = self.narrow_margin.filter(|m| !(0.0..=1.0).contains(m)) {
            return Err(Error::InvalidSetting {
                setting: "narrow_tools",
                reason: format!("{m} is not a share (0 to 1)"),
            });
        }
        if let Some(t) = self.relevance_threshold.filter(|t| !(0.0..=1.0).contains(t)) {
            return Err(Error::InvalidSetting {
                setting: "relevance_threshold",
                reason: format!("{t} is not a share (0 to 1)"),
            });
        }
        let tools = self.tools;
        let answer_schema = inline_schema_for::<O>();
        let answer = OutputSchema::from_value(crate::structured::short_type_name::<O>(), answer_schema.clone())?;
        let turns = Turns::new(self.format, &name, &tools, answer_schema, self.max_calls_per_turn, self.max_tokens)?;
        let tool_stems = tool_stems(&tools);
        let tool_specs = crate::tool::ToolSpec::of(&tools);
        let tool_numbers = self.ground_numbers.then(|| {
            tools
                .names()
                .map(|name| {
                    let description = tools.get(name).map(|t| t.description()).unwrap_or_default();
                    let schema = tools.parameters(name).cloned().unwrap_or_default();
                    (name.to_owned(), tool_numbers(&description, &schema))
                })
                .collect()
        });
        let system = system_prompt(self.format, &self.instructions, &tools);
        Ok(ModelSpecialist {
            card: self.card,
            model,
            system,
            tools,
            format: self.format,
            turns,
            answer,
            call_threshold: self.call_threshold,
            relevance_threshold: self.relevance_threshold,
            narrow_margin: self.narrow_margin,
            ground_strings: self.ground_strings,
            tool_stems,
            tool_specs,
            tool_numbers,
            sampling: self.sampling,
            max_steps: self.max_steps,
            max_tool_calls: self.max_tool_calls,
            max_tool_errors: self.max_tool_errors,
            tool_timeout: self.tool_timeout,
            isolate_tools: self.isolate_tools,
            max_tool_result_bytes: self.max_tool_result_bytes,
            max_tokens: self.max_tokens,
            _types: PhantomData,
        })
    }
}

/// What a specialist's model decided on one turn, from [`ModelSpecialist::decide`].
#[derive(Debug, Clone, PartialEq)]
pub enum Decided<O> {
    /// It asks for these tool calls (not run): one, or several made together.
    Calls(Vec<ToolCall>),
    /// It answers.
    Answer(O),
}

impl<I, O> ModelSpecialist<I, O>
where
    I: Serialize + Send + Sync + 'static,
    O: JsonSchema + DeserializeOwned + Send + 'static,
{
    /// The tools this specialist may call.
    pub fn tools(&self) -> &Toolbox {
        &self.tools
    }

    /// The full system prompt the model sees (instructions, tools, reply format).
    pub fn system_prompt(&self) -> &str {
        &self.system
    }

    fn card_name(&self) -> &str {
        &self.card.name
    }

    fn in_specialist(&self, source: Error) -> Error {
        Error::Specialist { specialist: self.card.name.clone(), source: Box::new(source) }
    }

    async fn call_tool(&self, tool: &str, arguments: Value) -> Result<Value, ToolError> {
        self.tools.validate(tool, &arguments)?;
        let started = Instant::now();
        let call: futures::future::BoxFuture<'_, Result<Value, ToolError>> = if self.isolate_tools {
            let (tools, tool) = (self.tools.clone(), tool.to_owned());
            Box::pin(off_thread(move || futures::executor::block_on(tools.call(&tool, arguments))))
        } else {
            Box::pin(async move {
                AssertUnwindSafe(self.tools.call(tool, arguments))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|panic| Err(ToolError::Panicked(panic_message(&*panic))))
            })
        };
        let timeout = futures_timer::Delay::new(self.tool_timeout);
        match futures::future::select(call, timeout).await {
            // A tool that blocked its thread past the timeout returns late: its result is not used.
            futures::future::Either::Left(_) if started.elapsed() > self.tool_timeout => {
                Err(ToolError::Timeout(self.tool_timeout))
            }
            futures::future::Either::Left((result, _)) => result,
            futures::future::Either::Right(((), _)) => Err(ToolError::Timeout(self.tool_timeout)),
        }
    }

    /// The result as the model sees it: as it is, or cut to the size limit with a note naming the tool.
    fn shown_result(&self, tool: &str, output: Value) -> Value {
        let text = output.to_string();
        if text.len() <= self.max_tool_result_bytes {
            return output;
        }
        let mut end = self.max_tool_result_bytes.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        tracing::debug!(specialist = %self.card_name(), %tool, bytes = text.len(), "tool result truncated");
        json!({
            "tool": tool,
            "truncated": true,
            "bytes": text.len(),
            "limit": self.max_tool_result_bytes,
            "beginning": &text[..end],
        })
    }

    /// What the model decides on its first turn, without running anything: the tool calls it asks for, or its
    /// answer. The call is made and recorded like any turn of [`run`](Agent::run). This is what an approval
    /// step needs (show the call, run it only if a person agrees), and what evaluation scores.
    ///
    /// ```no_run
    /// # async fn demo(flights: &slm_agents::specialist::ModelSpecialist) -> slm_agents::Result<()> {
    /// use slm_agents::run::RunContext;
    /// use slm_agents::specialist::Decided;
    ///
    /// match flights.decide("Tel Aviv to Paris on Friday".to_string(), &RunContext::new()).await? {
    ///     Decided::Calls(calls) => println!("wants to call {}", calls[0].tool),
    ///     Decided::Answer(answer) => println!("answers {answer:?}"),
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`run`](Agent::run), for its first turn.
    pub async fn decide(&self, input: I, ctx: &RunContext) -> Result<Decided<O>> {
        self.decision(input, ctx).await.map(|d| d.decided)
    }

    /// As [`decide`](Self::decide), with the probability the model gave to calling a tool (see
    /// [`call_threshold`](ModelSpecialistBuilder::call_threshold)).
    ///
    /// # Errors
    /// As [`decide`](Self::decide).
    pub async fn decision(&self, input: I, ctx: &RunContext) -> Result<Decision<O>> {
        let task = self.task_text(&input)?;
        let (relevance, offered) = self.about(&task);
        let messages = vec![Message::system(self.system.clone()), Message::user(task)];
        let result = async {
            let answer_only = self.tools.is_empty() || self.off_topic(relevance);
            let mut turn = self.turn(&messages, answer_only, offered.as_deref(), 0, ctx).await?;
            turn.turn = self.grounded(turn.turn, messages[1].content.as_str());
            let decided = match turn.turn {
                Turn::Calls(calls) => Decided::Calls(calls),
                Turn::Answer(answer) => Decided::Answer(self.read_answer(answer, turn.completion)?),
                Turn::NoCall => {
                    let answer = self.turn(&messages, true, None, 1, ctx).await?;
                    match answer.turn {
                        Turn::Answer(value) => Decided::Answer(self.read_answer(value, answer.completion)?),
                        _ => return Err(self.neither(&answer.completion)),
                    }
                }
            };
            Ok(Decision { decided, call_probability: turn.call_probability, relevance })
        }
        .await;
        result.map_err(|e| self.in_specialist(e))
    }

    /// How much the task is about the best-matching tool (`None` without tools), and which tools to offer
    /// on the first turn (`None`: all).
    fn about(&self, task: &str) -> (Option<f64>, Option<Vec<bool>>) {
        if self.tools.is_empty() {
            return (None, None);
        }
        let scores = scores(task, &self.tool_stems);
        let best = scores.iter().copied().fold(0.0, f64::max);
        let offered =
            self.narrow_margin.map(|margin| scores.iter().map(|s| *s >= best - margin - 1e-9).collect::<Vec<_>>());
        let offered = offered.filter(|o: &Vec<bool>| o.iter().any(|k| !k));
        if let Some(o) = &offered {
            tracing::debug!(specialist = %self.card_name(), offered = o.iter().filter(|k| **k).count(), "tools narrowed to the request");
        }
        (Some(best), offered)
    }

    /// The turn, or no call if a call uses a number neither the task nor its tool states.
    fn grounded(&self, turn: Turn, task: &str) -> Turn {
        let (Some(known), Turn::Calls(calls)) = (&self.tool_numbers, &turn) else { return turn };
        let stated = numbers_in(task);
        // A call that does not validate is left to the loop, which tells the model what is wrong with it.
        for call in calls.iter().filter(|c| self.tools.validate(&c.tool, &c.arguments).is_ok()) {
            let own = known.get(&call.tool).map(Vec::as_slice).unwrap_or_default();
            let all: Vec<f64> = stated.iter().chain(own).copied().collect();
            if let Some(number) = made_up_number(&call.arguments, &all) {
                tracing::debug!(specialist = %self.card_name(), tool = %call.tool, number, "a number the request does not state; answering");
                return Turn::NoCall;
            }
        }
        turn
    }

    /// Whether the task is too far from every tool to consider calling one.
    fn off_topic(&self, relevance: Option<f64>) -> bool {
        let off = matches!((relevance, self.relevance_threshold), (Some(r), Some(t)) if r < t);
        if off {
            tracing::debug!(specialist = %self.card_name(), relevance = ?relevance, "no tool is about the request; answering");
        }
        off
    }

    fn read_answer(&self, answer: Value, completion: Completion) -> Result<O> {
        self.answer.parse::<O>(&Completion { text: answer.to_string(), ..completion })
    }

    fn neither(&self, completion: &Completion) -> Error {
        Error::Validation {
            type_name: format!("reply of specialist {}", self.card_name()),
            reason: "neither tool calls nor an answer".into(),
            output: completion.text.clone(),
        }
    }

    /// One model turn: the answer only, or (with tools) calls or the answer, where the call threshold
    /// decides between calling and answering.
    async fn turn(
        &self,
        messages: &[Message],
        answer_only: bool,
        offered: Option<&[bool]>,
        step: usize,
        ctx: &RunContext,
    ) -> Result<TurnTaken> {
        let spans = (self.ground_strings && step == 0 && !answer_only)
            .then(|| {
                messages.iter().rev().find(|m| m.role == crate::model::Role::User).map(|m| request_spans(&m.content))
            })
            .flatten();
        let narrowed = match (offered, &spans) {
            (None, None) => None,
            _ if answer_only => None,
            (offered, spans) => Some(self.turns.among(offered, spans.as_deref())?),
        };
        let (decide, calls) = match &narrowed {
            Some((decide, calls)) => (decide, calls),
            None => (&self.turns.decide, &self.turns.calls),
        };
        let schema = if answer_only { &self.turns.answer } else { decide };
        let mut request = Request::chat(messages.to_vec())
            .with_sampling(self.sampling)
            .with_max_tokens(self.max_tokens)
            .with_constraint(schema.constraint());
        let calibrate = !answer_only && self.call_threshold.is_some();
        if calibrate {
            request = request.with_logprobs();
        }
        let (completion, turn) = self.model_turn(schema, request, step, ctx).await?;
        let call_probability = if answer_only {
            None
        } else {
            completion.logprobs.as_deref().and_then(|l| call_probability(self.format, l))
        };
        let (Some(threshold), Some(p)) = (self.call_threshold.filter(|_| calibrate), call_probability) else {
            return Ok(TurnTaken { completion, turn, call_probability });
        };
        let wants_call = p >= threshold;
        match turn {
            Turn::Calls(_) if !wants_call => {
                tracing::debug!(specialist = %self.card_name(), p, threshold, "call below the threshold; answering");
                Ok(TurnTaken { completion, turn: Turn::NoCall, call_probability })
            }
            Turn::NoCall | Turn::Answer(_) if wants_call => {
                tracing::debug!(specialist = %self.card_name(), p, threshold, "answer below the threshold; calling");
                let request = Request::chat(messages.to_vec())
                    .with_sampling(self.sampling)
                    .with_max_tokens(self.max_tokens)
                    .with_constraint(calls.constraint());
                let (completion, turn) = self.model_turn(calls, request, step, ctx).await?;
                Ok(TurnTaken { completion, turn, call_probability })
            }
            turn => Ok(TurnTaken { completion, turn, call_probability }),
        }
    }

    /// Makes one model call and reads its turn; the calls it asks for, and whether their arguments validate,
    /// are recorded with it.
    async fn model_turn(
        &self,
        schema: &OutputSchema,
        request: Request,
        step: usize,
        ctx: &RunContext,
    ) -> Result<(Completion, Turn)> {
        // Parsed, not validated as a whole: a bad call (possible with a model that ignores constraints) is
        // told to the model by the loop, like a failing tool; a bad answer is an error.
        ctx.model_call(&*self.model)
            .caller(self.card_name())
            .step(step)
            .tools(&self.tool_specs)
            .complete_parsed(request, |c| {
                let turn = schema.json(c).map(parse_turn)?.ok_or_else(|| self.neither(c))?;
                Ok(match &turn {
                    Turn::Calls(calls) => {
                        let valid = calls.iter().all(|call| self.tools.validate(&call.tool, &call.arguments).is_ok());
                        Parsed::calls(turn.clone(), calls.clone()).validated(valid)
                    }
                    Turn::Answer(answer) => {
                        let valid = self.answer.validation_schema_accepts(answer);
                        Parsed::value(turn).validated(valid)
                    }
                    Turn::NoCall => Parsed::value(turn).validated(true),
                })
            })
            .await
    }

    fn task_text(&self, input: &I) -> Result<String> {
        match serde_json::to_value(input) {
            Ok(Value::String(s)) => Ok(s),
            Ok(other) => Ok(other.to_string()),
            Err(e) => Err(Error::InvalidRequest { reason: format!("input cannot be serialized: {e}") }),
        }
    }

    /// Runs one call and records it; the result as the model is shown it.
    async fn run_call(&self, call: &ToolCall, ctx: &RunContext) -> Result<Value, ToolError> {
        use tracing::Instrument;
        let ids = ctx.ids();
        let started = Instant::now();
        ctx.announce(|| RunUpdate::ToolCallStarted {
            ids: ids.clone(),
            specialist: self.card_name().to_owned(),
            tool: call.tool.clone(),
            arguments: call.arguments.clone(),
        });
        let span = crate::run::spans::execute_tool(ctx, &call.tool);
        let result = self
            .call_tool(&call.tool, call.arguments.clone())
            .instrument(span.clone())
            .await
            .map(|out| self.shown_result(&call.tool, out));
        if let Err(e) = &result {
            crate::run::spans::tool_failed(&span, e);
        }
        ctx.record(RunEvent::ToolCall(ToolCallEvent {
            ids,
            specialist: self.card_name().to_owned(),
            tool: call.tool.clone(),
            arguments: call.arguments.clone(),
            result: result.as_ref().ok().cloned(),
            outcome: match &result {
                Ok(_) => Outcome::Succeeded,
                Err(e) => Outcome::failed(e.full_message()),
            },
            latency: started.elapsed(),
        }));
        result
    }

    async fn run_loop(&self, input: I, ctx: &RunContext) -> Result<O> {
        let task = self.task_text(&input)?;
        let (relevance, offered) = self.about(&task);
        let mut answer_only = self.tools.is_empty() || self.off_topic(relevance);
        let mut messages = vec![Message::system(self.system.clone()), Message::user(task)];
        let mut tool_errors = 0;
        let mut done_calls: Vec<ToolCall> = Vec::new();
        for step in 0..self.max_steps {
            let offered = if step == 0 { offered.as_deref() } else { None };
            let mut taken = self.turn(&messages, answer_only, offered, step, ctx).await?;
            if step == 0 {
                taken.turn = self.grounded(taken.turn, messages[1].content.as_str());
            }
            let calls = match taken.turn {
                Turn::Answer(answer) => return self.read_answer(answer, taken.completion),
                Turn::NoCall => {
                    answer_only = true;
                    continue;
                }
                Turn::Calls(calls) => calls,
            };
            let (new, repeated): (Vec<ToolCall>, Vec<ToolCall>) =
                calls.into_iter().partition(|c| !done_calls.contains(c));
            if new.is_empty() {
                tracing::debug!(specialist = %self.card_name(), calls = repeated.len(), "repeated calls; asking for the answer");
                answer_only = true;
                continue;
            }
            let results = futures::future::join_all(new.iter().map(|call| self.run_call(call, ctx))).await;
            messages.push(Message::assistant(taken.completion.text.trim()));
            for (call, result) in new.into_iter().zip(results) {
                match result {
                    Ok(output) => {
                        messages.push(Message::tool(output.to_string()));
                        done_calls.push(call);
                    }
                    Err(error) => {
                        tool_errors += 1;
                        tracing::debug!(specialist = %self.card_name(), tool = %call.tool, error = %error.full_message(), "tool failed");
                        if tool_errors > self.max_tool_errors {
                            return Err(Error::Tool {
                                specialist: self.card_name().to_owned(),
                                tool: call.tool,
                                source: error,
                            });
                        }
                        messages.push(Message::tool(json!({ "error": error.full_message() }).to_string()));
                    }
                }
            }
            answer_only |= self.max_tool_calls.is_some_and(|max| done_calls.len() >= max);
        }
        Err(Error::MaxSteps { specialist: self.card_name().to_owned(), steps: self.max_steps })
    }
}

/// One turn as taken: the completion it ended with, what it asked for, and the probability of calling.
struct TurnTaken {
    completion: Completion,
    turn: Turn,
    call_probability: Option<f64>,
}

/// A specialist's first decision, with how sure the model was; from [`ModelSpecialist::decision`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Decision<O> {
    /// The calls or the answer.
    pub decided: Decided<O>,
    /// The probability the model gave to calling a tool rather than answering, where its reply chose between
    /// them; `None` without tools, when the request was not about any tool (no such turn), or for a model
    /// that reports no log-probabilities.
    pub call_probability: Option<f64>,
    /// How much the request is about the best-matching tool (see
    /// [`relevance_threshold`](ModelSpecialistBuilder::relevance_threshold)); `None` without tools.
    pub relevance: Option<f64>,
}

impl<I, O> Specialist for ModelSpecialist<I, O>
where
    I: Serialize + Send + Sync + 'static,
    O: JsonSchema + DeserializeOwned + Send + 'static,
{
    fn card(&self) -> &SpecialistCard {
        &self.card
    }
}

#[async_trait::async_trait]
impl<I, O> Agent for ModelSpecialist<I, O>
where
    I: Serialize + Send + Sync + 'static,
    O: JsonSchema + DeserializeOwned + Send + 'static,
{
    type Input = I;
    type Output = O;

    fn name(&self) -> String {
        self.card.name.clone()
    }

    async fn run(&self, input: I, ctx: &RunContext) -> Result<O> {
        use tracing::Instrument;
        let span = crate::run::spans::invoke_agent(ctx, &self.card.name);
        let result = match self.run_loop(input, ctx).instrument(span.clone()).await {
            Ok(out) => Ok(out),
            Err(e @ (Error::Tool { .. } | Error::MaxSteps { .. } | Error::Specialist { .. })) => Err(e),
            Err(e) => Err(self.in_specialist(e)),
        };
        if let Err(e) = &result {
            crate::run::spans::failed(&span, e);
        }
        result
    }
}
