//! Tools: typed functions a specialist's model may call.
//!
//! A [`Tool`] has a constant name, a description, typed arguments whose JSON Schema is derived with schemars,
//! a typed output and its own error type. Hosts that hold different tools together use the object-safe
//! [`DynTool`], which every `Tool` implements through a blanket impl, and a [`Toolbox`] keyed by name. A plain
//! async closure becomes a tool with [`tool_fn`].
//!
//! ```
//! use schemars::JsonSchema;
//! use serde::{Deserialize, Serialize};
//! use slm_agents::tool::{Tool, Toolbox};
//!
//! #[derive(Deserialize, JsonSchema)]
//! struct WeatherArgs {
//!     /// The city, e.g. "Lisbon".
//!     city: String,
//! }
//!
//! #[derive(Serialize)]
//! struct Weather {
//!     celsius: i32,
//! }
//!
//! struct GetWeather;
//!
//! impl Tool for GetWeather {
//!     const NAME: &'static str = "get_weather";
//!     type Args = WeatherArgs;
//!     type Output = Weather;
//!     type Error = std::io::Error;
//!
//!     fn description(&self) -> String {
//!         "Current temperature in a city".into()
//!     }
//!
//!     async fn call(&self, args: WeatherArgs) -> Result<Weather, std::io::Error> {
//!         Ok(Weather { celsius: if args.city == "Lisbon" { 21 } else { 12 } })
//!     }
//! }
//!
//! let tools = Toolbox::new().with(GetWeather).expect("unique names");
//! assert_eq!(tools.names().collect::<Vec<_>>(), ["get_weather"]);
//! ```
//!
#![doc = include_str!("../../docs/tools.md")]

mod toolbox;

use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

pub use toolbox::Toolbox;

/// A typed tool.
///
/// `NAME` is what the model writes to call it (letters, digits, `_` and `-`); the description and the schema
/// of `Args` (field doc comments included) are what the model reads to decide when and how.
///
/// ```
/// use schemars::JsonSchema;
/// use serde::Deserialize;
/// use slm_agents::tool::Tool;
///
/// #[derive(Deserialize, JsonSchema)]
/// struct Convert {
///     /// Amount in euros
///     eur: f64,
/// }
///
/// struct ToDollars;
///
/// impl Tool for ToDollars {
///     const NAME: &'static str = "to_dollars";
///     type Args = Convert;
///     type Output = f64;
///     type Error = std::convert::Infallible;
///     fn description(&self) -> String {
///         "Converts euros to US dollars".into()
///     }
///     async fn call(&self, args: Convert) -> Result<f64, Self::Error> {
///         Ok(args.eur * 1.08)
///     }
/// }
///
/// let usd = futures::executor::block_on(ToDollars.call(Convert { eur: 10.0 })).unwrap();
/// assert!((usd - 10.8).abs() < 1e-9);
/// ```
pub trait Tool: Send + Sync + 'static {
    /// The name the model calls the tool by.
    const NAME: &'static str;
    /// The arguments, deserialized from the model's JSON after validation against their schema.
    type Args: DeserializeOwned + JsonSchema + Send + 'static;
    /// The result, serialized to JSON and shown to the model.
    type Output: Serialize + Send + 'static;
    /// The tool's own error; its message is shown to the model so it can retry.
    type Error: std::error::Error + Send + Sync + 'static;

    /// What the tool does, for the model.
    fn description(&self) -> String;

    /// Runs the tool.
    fn call(&self, args: Self::Args) -> impl Future<Output = Result<Self::Output, Self::Error>> + Send;
}

/// Why a tool call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ToolError {
    /// The arguments do not match the tool's schema.
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    /// The tool returned an error.
    #[error("the tool failed")]
    Failed(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The tool panicked; the panic was caught.
    #[error("the tool panicked: {0}")]
    Panicked(String),
    /// The tool did not finish in time.
    #[error("the tool did not answer within {0:?}")]
    Timeout(Duration),
    /// The tool's output could not be serialized to JSON.
    #[error("the tool's output cannot be serialized")]
    Output(#[source] serde_json::Error),
}

impl ToolError {
    /// The message with its causes, as shown to the model.
    pub fn full_message(&self) -> String {
        crate::error::with_causes(self)
    }
}

/// The object-safe twin of [`Tool`]: JSON in, JSON out. Every `Tool` is a `DynTool`.
///
/// ```
/// use std::sync::Arc;
/// use slm_agents::tool::{tool_fn, DynTool};
///
/// let echo = tool_fn("echo", "Repeats its input", |s: String| async move { Ok::<_, std::io::Error>(s) });
/// let tools: Vec<Arc<dyn DynTool>> = vec![Arc::new(echo)];
/// let out = futures::executor::block_on(tools[0].call_json(serde_json::json!("hi"))).unwrap();
/// assert_eq!(out, "hi");
/// assert_eq!(tools[0].parameters()["type"], "string");
/// ```
#[async_trait::async_trait]
pub trait DynTool: Send + Sync {
    /// The name the model calls the tool by.
    fn name(&self) -> &str;
    /// What the tool does, for the model.
    fn description(&self) -> String;
    /// The JSON Schema of the arguments (subschemas inlined).
    fn parameters(&self) -> Value;
    /// Calls the tool with JSON arguments (already validated against [`parameters`](Self::parameters)).
    async fn call_json(&self, arguments: Value) -> Result<Value, ToolError>;
}

#[async_trait::async_trait]
impl<T: Tool> DynTool for T {
    fn name(&self) -> &str {
        T::NAME
    }
    fn description(&self) -> String {
        Tool::description(self)
    }
    fn parameters(&self) -> Value {
        crate::structured::inline_schema_for::<T::Args>()
    }
    async fn call_json(&self, arguments: Value) -> Result<Value, ToolError> {
        let args: T::Args =
            serde_json::from_value(arguments).map_err(|e| ToolError::InvalidArguments(e.to_string()))?;
        let output = self.call(args).await.map_err(|e| ToolError::Failed(Box::new(e)))?;
        serde_json::to_value(output).map_err(ToolError::Output)
    }
}

/// A tool made from an async closure by [`tool_fn`].
pub struct FnTool<A, O, E, F> {
    name: String,
    description: String,
    f: F,
    _types: PhantomData<fn(A) -> Result<O, E>>,
}

impl<A, O, E, F> std::fmt::Debug for FnTool<A, O, E, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnTool").field("name", &self.name).finish_non_exhaustive()
    }
}

/// Turns a typed async closure into a tool, without writing a struct.
///
/// ```
/// use schemars::JsonSchema;
/// use serde::Deserialize;
/// use slm_agents::tool::{tool_fn, DynTool};
///
/// #[derive(Deserialize, JsonSchema)]
/// struct Add {
///     a: i64,
///     b: i64,
/// }
///
/// let add = tool_fn("add", "Adds two integers", |args: Add| async move {
///     Ok::<_, std::convert::Infallible>(args.a + args.b)
/// });
/// assert_eq!(add.name(), "add");
/// let sum = futures::executor::block_on(add.call_json(serde_json::json!({"a": 2, "b": 3}))).unwrap();
/// assert_eq!(sum, 5);
/// ```
pub fn tool_fn<A, O, E, F, Fut>(name: impl Into<String>, description: impl Into<String>, f: F) -> FnTool<A, O, E, F>
where
    A: DeserializeOwned + JsonSchema + Send + 'static,
    O: Serialize + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
    F: Fn(A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, E>> + Send + 'static,
{
    FnTool { name: name.into(), description: description.into(), f, _types: PhantomData }
}

#[async_trait::async_trait]
impl<A, O, E, F, Fut> DynTool for FnTool<A, O, E, F>
where
    A: DeserializeOwned + JsonSchema + Send + 'static,
    O: Serialize + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
    F: Fn(A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, E>> + Send + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }
    fn description(&self) -> String {
        self.description.clone()
    }
    fn parameters(&self) -> Value {
        crate::structured::inline_schema_for::<A>()
    }
    async fn call_json(&self, arguments: Value) -> Result<Value, ToolError> {
        let args: A = serde_json::from_value(arguments).map_err(|e| ToolError::InvalidArguments(e.to_string()))?;
        let output = (self.f)(args).await.map_err(|e| ToolError::Failed(Box::new(e)))?;
        serde_json::to_value(output).map_err(ToolError::Output)
    }
}

/// A tool that is only declared: a name, a description and a JSON Schema of its arguments, with nothing behind
/// it; from [`declared`].
///
/// A specialist offers it to its model like any tool, and [`ModelSpecialist::decide`](crate::specialist::ModelSpecialist::decide)
/// returns the calls the model makes of it; calling it fails with a [`ToolError`] saying it is declared only.
/// This is what evaluation needs (the cases of a benchmark describe their tools by schema), and what a host
/// needs to show a model tools it runs elsewhere.
#[derive(Debug, Clone)]
pub struct DeclaredTool {
    name: String,
    description: String,
    parameters: Value,
}

/// Declares a tool from its name, description and JSON Schema of its arguments, without an implementation.
///
/// ```
/// use slm_agents::tool::{declared, DynTool, Toolbox};
///
/// let area = declared(
///     "geometry.triangle_area",
///     "Area of a triangle from its base and height",
///     serde_json::json!({
///         "type": "object",
///         "properties": { "base": { "type": "number" }, "height": { "type": "number" } },
///         "required": ["base", "height"]
///     }),
/// );
/// let tools = Toolbox::new().with_dyn(std::sync::Arc::new(area.clone())).unwrap();
/// assert!(tools.validate("geometry.triangle_area", &serde_json::json!({"base": 10, "height": 5})).is_ok());
/// let err = futures::executor::block_on(area.call_json(serde_json::json!({"base": 10, "height": 5})));
/// assert!(err.unwrap_err().full_message().contains("declared only"));
/// ```
pub fn declared(name: impl Into<String>, description: impl Into<String>, parameters: Value) -> DeclaredTool {
    DeclaredTool { name: name.into(), description: description.into(), parameters }
}

/// Why a [`DeclaredTool`] cannot run.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is declared only: it has no implementation to run")]
struct DeclaredOnly(String);

#[async_trait::async_trait]
impl DynTool for DeclaredTool {
    fn name(&self) -> &str {
        &self.name
    }
    fn description(&self) -> String {
        self.description.clone()
    }
    fn parameters(&self) -> Value {
        self.parameters.clone()
    }
    async fn call_json(&self, _arguments: Value) -> Result<Value, ToolError> {
        Err(ToolError::Failed(Box::new(DeclaredOnly(self.name.clone()))))
    }
}

/// A tool made from a blocking closure by [`tool_fn_blocking`].
pub struct BlockingFnTool<A, O, E, F> {
    name: String,
    description: String,
    f: std::sync::Arc<F>,
    _types: PhantomData<fn(A) -> Result<O, E>>,
}

impl<A, O, E, F> std::fmt::Debug for BlockingFnTool<A, O, E, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingFnTool").field("name", &self.name).finish_non_exhaustive()
    }
}

/// Turns a typed *blocking* closure into a tool: file or database access, a synchronous HTTP client, a
/// computation. Each call runs on a helper thread of its own, so a call that blocks never holds up the
/// specialist or the executor, and the specialist's tool timeout cuts it off on time. A call cut off keeps
/// running on its thread until the closure returns; its result is then dropped.
///
/// ```
/// use slm_agents::tool::{tool_fn_blocking, DynTool};
///
/// let read = tool_fn_blocking("read_note", "Reads a note by name", |name: String| {
///     std::fs::read_to_string(std::env::temp_dir().join(name))
/// });
/// assert_eq!(read.name(), "read_note");
/// ```
pub fn tool_fn_blocking<A, O, E, F>(
    name: impl Into<String>,
    description: impl Into<String>,
    f: F,
) -> BlockingFnTool<A, O, E, F>
where
    A: DeserializeOwned + JsonSchema + Send + 'static,
    O: Serialize + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
    F: Fn(A) -> Result<O, E> + Send + Sync + 'static,
{
    BlockingFnTool {
        name: name.into(),
        description: description.into(),
        f: std::sync::Arc::new(f),
        _types: PhantomData,
    }
}

#[async_trait::async_trait]
impl<A, O, E, F> DynTool for BlockingFnTool<A, O, E, F>
where
    A: DeserializeOwned + JsonSchema + Send + 'static,
    O: Serialize + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
    F: Fn(A) -> Result<O, E> + Send + Sync + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }
    fn description(&self) -> String {
        self.description.clone()
    }
    fn parameters(&self) -> Value {
        crate::structured::inline_schema_for::<A>()
    }
    async fn call_json(&self, arguments: Value) -> Result<Value, ToolError> {
        let args: A = serde_json::from_value(arguments).map_err(|e| ToolError::InvalidArguments(e.to_string()))?;
        let f = std::sync::Arc::clone(&self.f);
        off_thread(move || {
            let output = f(args).map_err(|e| ToolError::Failed(Box::new(e)))?;
            serde_json::to_value(output).map_err(ToolError::Output)
        })
        .await
    }
}

/// The message of a caught panic.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}

/// Runs `work` on a helper thread of its own (panics caught) and awaits its result without blocking.
pub(crate) async fn off_thread(
    work: impl FnOnce() -> Result<Value, ToolError> + Send + 'static,
) -> Result<Value, ToolError> {
    let (tx, rx) = futures::channel::oneshot::channel();
    std::thread::Builder::new()
        .name("slm-tool".into())
        .spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
                .unwrap_or_else(|panic| Err(ToolError::Panicked(panic_message(&*panic))));
            let _ = tx.send(result);
        })
        .map_err(|e| ToolError::Failed(Box::new(e)))?;
    rx.await.unwrap_or_else(|_| Err(ToolError::Panicked("the tool's thread stopped".into())))
}

/// One call of a tool, as the model wrote it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ToolCall {
    /// The tool's name.
    pub tool: String,
    /// The arguments.
    pub arguments: Value,
}

/// A tool as a model is shown it: its name, what it does, and the JSON Schema of its arguments. Evaluation
/// cases declare their tools with it, and the ledger records the tools offered to each model call
/// ([`ModelCallEvent::tools`](crate::run::ModelCallEvent::tools)).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ToolSpec {
    /// The name the model calls it by (letters, digits, `_`, `-` and `.`).
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub description: String,
    /// The JSON Schema of its arguments.
    pub parameters: serde_json::Value,
}

impl ToolSpec {
    /// The specs of a toolbox's tools, in its order.
    pub fn of(tools: &Toolbox) -> Vec<ToolSpec> {
        tools
            .names()
            .map(|name| ToolSpec {
                name: name.to_owned(),
                description: tools.get(name).map(|t| t.description().to_string()).unwrap_or_default(),
                parameters: tools.parameters(name).cloned().unwrap_or_default(),
            })
            .collect()
    }
}
