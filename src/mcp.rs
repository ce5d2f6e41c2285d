//! Tools from MCP servers (feature `mcp`): a server's tools become [`DynTool`]s that any specialist can call.
//!
//! The [Model Context Protocol](https://modelcontextprotocol.io) is how tools are shared between agent
//! frameworks. [`McpServer`] connects to a server, over stdio (a child process) or streamable HTTP, with the
//! [`rmcp`](https://docs.rs/rmcp) crate; [`McpServer::tools`] lists its tools as [`McpTool`]s. Each tool's
//! input schema is the one the server declares, so it feeds the specialist's grammar like a Rust tool's:
//! the small model can only write arguments of that shape, and they are validated before the server sees
//! them.
//!
//! ```no_run
//! use std::process::Command;
//! //! use slm_agents::mcp::McpServer;
//! use slm_agents::prelude::*;
//!
//! # async fn demo(model: LlamaModel) -> slm_agents::Result<()> {
//! let mut command = Command::new("npx");
//! command.args(["-y", "@modelcontextprotocol/server-filesystem", "/tmp"]);
//! let files = McpServer::stdio(command).connect().await?;
//!
//! let specialist = ModelSpecialist::builder("files")
//!     .model(model)
//!     .instructions("You manage files in /tmp.")
//!     .tools_dyn(files.tools().await?)
//!     .build()?;
//! let answer = specialist.run("List the files in /tmp".to_string(), &RunContext::new()).await?;
//! # Ok(()) }
//! ```
//!
//! - **Any executor.** rmcp runs on tokio; each server gets a small tokio runtime of its own (one worker
//!   thread), so the tools work under tokio, async-std or `futures::executor` alike, and no tokio type is in
//!   this API.
//! - **Results.** A tool's structured content is its result; otherwise its text (parsed when it is a JSON
//!   object or array, as many servers write their results). Images, audio and resources are described, not
//!   passed on. A result the server marks as an error is a [`ToolError::Failed`], shown to the model like any
//!   tool's failure.
//! - **Transport.** `http://` with the `mcp` feature; `https://` needs the `mcp-https` feature (rustls).
//! - **Privacy.** A tool's arguments go to its server as the model wrote them: a run's
//!   [`Privacy`](crate::privacy::Privacy) policy governs models, not tools. Give a specialist only the tools
//!   of servers you trust with what it sees.
//! - A tool call that outlives the specialist's tool timeout is dropped, and its request cancelled.
//!
//! Needs Rust 1.88 (rmcp's minimum), above the crate's 1.87.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::oneshot;
use futures::future::{select, Either};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, ContentBlock, Implementation,
};
use rmcp::service::RunningService;
use rmcp::{RoleClient, ServiceExt};
use serde_json::Value;

use crate::tool::{DynTool, ToolError};
use crate::{Error, Result};

type Service = RunningService<RoleClient, ClientConfig>;

/// A connection to an MCP server; cheap to clone (clones share it). The connection closes when the last
/// clone and the last of its [`McpTool`]s are dropped, or at [`close`](Self::close).
#[derive(Clone)]
pub struct McpServer {
    inner: Arc<Inner>,
}

struct Inner {
    /// Declared before the runtime, so dropped first: its drop cancels the connection's task.
    service: Arc<Service>,
    runtime: Runtime,
    name: String,
    timeout: Duration,
}

/// The server's own tokio runtime, shut down without blocking (it may be dropped inside another runtime).
struct Runtime(Option<tokio::runtime::Runtime>);

impl Runtime {
    fn new() -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("slm-agents-mcp")
            .enable_all()
            .build()?;
        Ok(Self(Some(rt)))
    }

    /// Runs `work` on the runtime and waits for it from any executor. Dropping the returned future cancels
    /// the work.
    async fn run<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = T> + Send + 'static,
    ) -> std::result::Result<T, Stopped> {
        let rt = self.0.as_ref().ok_or(Stopped)?;
        let (tx, rx) = oneshot::channel();
        rt.spawn(async move {
            let mut tx = tx;
            let cancelled = tx.cancellation();
            futures::pin_mut!(work, cancelled);
            if let Either::Left((out, _)) = select(work, cancelled).await {
                let _ = tx.send(out);
            }
        });
        rx.await.map_err(|_| Stopped)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// The runtime stopped before the work finished.
#[derive(Debug)]
struct Stopped;

impl std::fmt::Debug for McpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpServer").field("name", &self.inner.name).finish_non_exhaustive()
    }
}

/// How to reach a server: a command to start, or a URL.
enum Target {
    Stdio(std::process::Command),
    Http { url: String, bearer: Option<String> },
}

/// Settings of a connection to an MCP server, from [`McpServer::stdio`] or [`McpServer::http`]; then
/// [`connect`](Self::connect).
#[must_use = "nothing connects until `connect` is awaited"]
pub struct McpConnect {
    target: Target,
    timeout: Duration,
    name: Option<String>,
}

impl std::fmt::Debug for McpConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let target = match &self.target {
            Target::Stdio(command) => format!("{command:?}"),
            Target::Http { url, .. } => url.clone(),
        };
        f.debug_struct("McpConnect").field("target", &target).field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl McpConnect {
    /// How long connecting and listing tools may take (default 30 s). Tool calls are bounded by the
    /// specialist's tool timeout instead.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The server's name in errors and logs (default: the name the server gives, else the command or URL).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sends `Authorization: Bearer <token>` with every HTTP request (ignored for stdio).
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        if let Target::Http { bearer, .. } = &mut self.target {
            *bearer = Some(token.into());
        }
        self
    }

    /// Starts the server (stdio) or reaches it (HTTP), and does the protocol's handshake.
    ///
    /// # Errors
    /// [`Error::Mcp`] if the command cannot start, the server cannot be reached, the handshake fails or does
    /// not finish within the timeout; [`Error::Unavailable`] for an `https://` URL without the `mcp-https`
    /// feature.
    pub async fn connect(self) -> Result<McpServer> {
        let label = self.name.clone().unwrap_or_else(|| match &self.target {
            Target::Stdio(command) => command.get_program().to_string_lossy().into_owned(),
            Target::Http { url, .. } => url.clone(),
        });
        let fail = |reason: String| Error::Mcp { server: label.clone(), reason };
        let runtime = Runtime::new().map_err(|e| fail(format!("cannot start its runtime: {e}")))?;
        let timeout = self.timeout;
        let config = ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")),
        );
        let connecting = match self.target {
            Target::Stdio(command) => {
                let mut command = tokio::process::Command::from(command);
                command.kill_on_drop(true);
                runtime
                    .run(async move {
                        let transport = rmcp::transport::TokioChildProcess::new(command)
                            .map_err(|e| format!("cannot start it: {e}"))?;
                        handshake(config.serve(transport), timeout).await
                    })
                    .await
            }
            Target::Http { url, bearer } => {
                if url.starts_with("https://") && !cfg!(feature = "mcp-https") {
                    return Err(Error::Unavailable { what: "an MCP server over https", feature: "mcp-https" });
                }
                runtime
                    .run(async move {
                        use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
                        let mut transport_config = StreamableHttpClientTransportConfig::with_uri(url);
                        if let Some(token) = bearer {
                            transport_config = transport_config.auth_header(token);
                        }
                        let transport = rmcp::transport::StreamableHttpClientTransport::from_config(transport_config);
                        handshake(config.serve(transport), timeout).await
                    })
                    .await
            }
        };
        let service = connecting.map_err(|Stopped| fail("its runtime stopped".into()))?.map_err(fail)?;
        let name = self.name.unwrap_or_else(|| {
            service.peer_info().and_then(|info| info.server_info.as_ref().map(|i| i.name.clone())).unwrap_or(label)
        });
        tracing::debug!(server = %name, "connected to MCP server");
        Ok(McpServer { inner: Arc::new(Inner { service: Arc::new(service), runtime, name, timeout }) })
    }
}

/// Waits for the handshake, within `timeout`.
async fn handshake<E: std::fmt::Display>(
    serving: impl std::future::Future<Output = std::result::Result<Service, E>>,
    timeout: Duration,
) -> std::result::Result<Service, String> {
    match tokio::time::timeout(timeout, serving).await {
        Ok(Ok(service)) => Ok(service),
        Ok(Err(e)) => Err(format!("the handshake failed: {e}")),
        Err(_) => Err(format!("no handshake within {timeout:?}")),
    }
}

impl McpServer {
    /// A server started as a child process that speaks MCP on its stdin and stdout (its stderr is
    /// inherited). The process is stopped when the connection closes.
    pub fn stdio(command: std::process::Command) -> McpConnect {
        McpConnect { target: Target::Stdio(command), timeout: Duration::from_secs(30), name: None }
    }

    /// A server at `url` over MCP's streamable HTTP transport (`http://host:port/mcp`).
    pub fn http(url: impl Into<String>) -> McpConnect {
        McpConnect {
            target: Target::Http { url: url.into(), bearer: None },
            timeout: Duration::from_secs(30),
            name: None,
        }
    }

    /// The server's name (as it gives it, or as set with [`McpConnect::name`]).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The server's tools, every page of them.
    ///
    /// A tool's name and input schema are checked when it is added to a specialist
    /// ([`Toolbox::with_dyn`](crate::tool::Toolbox::with_dyn)).
    ///
    /// # Errors
    /// [`Error::Mcp`] if the server does not answer within the connection's timeout or answers with an
    /// error.
    pub async fn tools(&self) -> Result<Vec<McpTool>> {
        let service = Arc::clone(&self.inner.service);
        let timeout = self.inner.timeout;
        let listed = self
            .inner
            .runtime
            .run(async move { tokio::time::timeout(timeout, service.list_all_tools()).await })
            .await
            .map_err(|Stopped| self.error("its runtime stopped".into()))?
            .map_err(|_| self.error(format!("no list of tools within {timeout:?}")))?
            .map_err(|e| self.error(format!("cannot list its tools: {e}")))?;
        Ok(listed
            .into_iter()
            .map(|tool| McpTool {
                server: self.clone(),
                name: tool.name.to_string(),
                parameters: Value::Object((*tool.input_schema).clone()),
                remote_name: tool.name,
                description: tool.description.map(Cow::into_owned).or(tool.title).unwrap_or_default(),
            })
            .collect())
    }

    /// Closes the connection now (a stdio server's stdin is closed, then it is stopped). Its tools fail
    /// from then on.
    pub fn close(&self) {
        self.inner.service.cancellation_token().cancel();
    }

    fn error(&self, reason: String) -> Error {
        Error::Mcp { server: self.inner.name.clone(), reason }
    }

    async fn call(&self, name: Cow<'static, str>, arguments: Value) -> std::result::Result<Value, ToolError> {
        let Value::Object(arguments) = arguments else {
            return Err(ToolError::InvalidArguments(format!(
                "MCP tool arguments must be a JSON object, not {arguments}"
            )));
        };
        let service = Arc::clone(&self.inner.service);
        let params = CallToolRequestParams::new(name).with_arguments(arguments);
        let result = self
            .inner
            .runtime
            .run(async move { service.call_tool(params).await })
            .await
            .map_err(|Stopped| failed(format!("MCP server `{}`: its runtime stopped", self.inner.name)))?
            .map_err(|e| failed(format!("MCP server `{}`: {e}", self.inner.name)))?;
        read_result(result)
    }
}

fn failed(message: String) -> ToolError {
    ToolError::Failed(message.into())
}

/// A tool's result as a JSON value, or its error.
fn read_result(result: CallToolResult) -> std::result::Result<Value, ToolError> {
    let texts: Vec<String> = result.content.iter().map(describe).collect();
    if result.is_error == Some(true) {
        let message = if texts.is_empty() { "the tool reported an error".to_owned() } else { texts.join("\n") };
        return Err(failed(message));
    }
    if let Some(structured) = result.structured_content {
        return Ok(structured);
    }
    let mut values: Vec<Value> = texts.into_iter().map(|text| parse_text(&text)).collect();
    Ok(match values.len() {
        0 => Value::Null,
        1 => values.remove(0),
        _ => Value::Array(values),
    })
}

/// A text that is a JSON object or array, as that value; any other text as a string.
fn parse_text(text: &str) -> Value {
    match serde_json::from_str::<Value>(text.trim()) {
        Ok(value @ (Value::Object(_) | Value::Array(_))) => value,
        _ => Value::String(text.to_owned()),
    }
}

/// A content block as text: text as it is, anything else described.
fn describe(block: &ContentBlock) -> String {
    match block {
        ContentBlock::Text(t) => t.text.clone(),
        ContentBlock::Image(i) => format!("[image, {}, not shown]", i.mime_type),
        ContentBlock::Audio(a) => format!("[audio, {}, not shown]", a.mime_type),
        ContentBlock::Resource(r) => match &r.resource {
            rmcp::model::ResourceContents::TextResourceContents { text, .. } => text.clone(),
            other => format!("[resource {}, not shown]", resource_uri(other)),
        },
        ContentBlock::ResourceLink(link) => format!("[resource {}]", link.uri),
        _ => "[content not shown]".to_owned(),
    }
}

fn resource_uri(contents: &rmcp::model::ResourceContents) -> String {
    serde_json::to_value(contents)
        .ok()
        .and_then(|v| v.get("uri").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default()
}

/// One tool of an MCP server, as a [`DynTool`]: its name, description and input schema are the server's,
/// and a call goes to the server. Holds its server's connection open.
#[derive(Clone)]
pub struct McpTool {
    server: McpServer,
    /// The name the model sees.
    name: String,
    /// The name the server knows.
    remote_name: Cow<'static, str>,
    description: String,
    parameters: Value,
}

impl std::fmt::Debug for McpTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpTool").field("server", &self.server.name()).field("name", &self.name).finish_non_exhaustive()
    }
}

impl McpTool {
    /// The same tool under another name for the model (say, to tell apart two servers' `search`); calls
    /// still go to the server's tool.
    pub fn renamed(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The server the tool belongs to.
    pub fn server(&self) -> &McpServer {
        &self.server
    }
}

#[async_trait::async_trait]
impl DynTool for McpTool {
    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> String {
        self.description.clone()
    }

    fn parameters(&self) -> Value {
        self.parameters.clone()
    }

    async fn call_json(&self, arguments: Value) -> std::result::Result<Value, ToolError> {
        self.server.call(self.remote_name.clone(), arguments).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_results_are_parsed_when_they_are_json() {
        assert_eq!(parse_text(r#" {"temp": 21} "#), serde_json::json!({"temp": 21}));
        assert_eq!(parse_text("[1, 2]"), serde_json::json!([1, 2]));
        assert_eq!(parse_text("21"), Value::String("21".into()));
        assert_eq!(parse_text("sunny"), Value::String("sunny".into()));
    }

    #[test]
    fn error_results_are_tool_failures_and_structured_content_wins() {
        let error = CallToolResult::error(vec![ContentBlock::text("no such city")]);
        match read_result(error) {
            Err(ToolError::Failed(e)) => assert_eq!(e.to_string(), "no such city"),
            other => panic!("{other:?}"),
        }
        let mut ok = CallToolResult::success(vec![ContentBlock::text("a"), ContentBlock::image("AAAA", "image/png")]);
        assert_eq!(read_result(ok.clone()).unwrap(), serde_json::json!(["a", "[image, image/png, not shown]"]));
        ok.structured_content = Some(serde_json::json!({"a": 1}));
        assert_eq!(read_result(ok).unwrap(), serde_json::json!({"a": 1}));
    }
}
