//! A model behind an OpenAI-compatible Chat Completions endpoint (feature `remote`).
//!
//! The large model to escalate to, or a served small model when one machine is not enough (llama.cpp server,
//! vLLM and hosted endpoints speak this API). Requests run with a blocking HTTP client on a small pool of
//! helper threads owned by the model (named `slm-remote`, started as requests come, at most
//! [`max_concurrency`](RemoteModelBuilder::max_concurrency) of them); requests beyond that wait in the pool's
//! queue. No async runtime is needed and no executor thread ever waits on the network: the caller's future only
//! waits for the answer to come back.
//!
//! Every failure is an [`Error::Remote`] with a typed [`RemoteError`]: what kind of failure, the HTTP status,
//! the server's error code and message, and its Retry-After.
//!
//! # Cancellation
//!
//! Dropping the future of [`complete`](LanguageModel::complete) (or [`embed`](LanguageModel::embed)), or a
//! [`TokenStream`], cancels the request:
//! - a request still waiting in the pool's queue is never sent;
//! - a request waiting to be retried stops waiting (within about 20 ms) and is not sent again;
//! - a request in flight has its connection shut down, also while its helper thread is blocked in the HTTP
//!   client (sending, waiting for the answer's headers, or reading the body; over TLS too, since the TCP socket
//!   under it is shut down): the blocked read fails at once, the server sees the connection closed, and the
//!   helper thread is free for the next request. For `complete` and `embed` this happens as the future is
//!   dropped; for a stream within about 20 ms (a watcher thread looks at the streams in flight every 20 ms,
//!   and sleeps while there are none).
//!
//! Name resolution and a TCP connect in progress are not interrupted (they end at the model's timeout, and the
//! request is then not sent); a connection that comes up after the cancellation is closed at once.

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::channel::oneshot;
use serde_json::{json, Value};
use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, DefaultConnector, NextTimeout, ShutdownHandle, Transport,
};

use super::stream::{self, StreamSender};
use super::{Completion, Constraint, FinishReason, LanguageModel, Prompt, Request, TokenLogprob, TokenStream, Usage};
use crate::privacy::{Privacy, Redaction};
use crate::{Error, RemoteError, RemoteErrorKind, Result};

/// How long a retry wait sleeps before it looks again whether the caller is still there.
const CANCEL_POLL: Duration = Duration::from_millis(20);
/// How much of an error answer's body is read (for its message and code).
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// A model served over the OpenAI-compatible Chat Completions API.
///
/// ```no_run
/// use slm_agents::model::{LanguageModel, Message, RemoteModel, Request};
///
/// # async fn demo() -> slm_agents::Result<()> {
/// let llm = RemoteModel::builder("http://127.0.0.1:8080/v1", "big-model").api_key_env("OPENAI_API_KEY").build()?;
/// let answer = llm.complete(Request::chat([Message::user("Tell me about baroque architecture.")])).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RemoteModel {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    model: String,
    base_url: String,
    api_key: Option<String>,
    agent: ureq::Agent,
    max_retries: u32,
    backoff: Duration,
    max_retry_wait: Duration,
    max_body_bytes: usize,
    privacy: Privacy,
    /// Set once the server refused `json_schema` response formats: then `{"type": "json_object", "schema": ..}`
    /// (llama-cpp-python's form) is sent instead.
    json_object_schema: AtomicBool,
    pool: Pool,
}

impl std::fmt::Debug for RemoteModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteModel")
            .field("model", &self.inner.model)
            .field("base_url", &self.inner.base_url)
            .field("api_key", &self.inner.api_key.as_ref().map(|_| "..."))
            .finish_non_exhaustive()
    }
}

/// Builds a [`RemoteModel`]; from [`RemoteModel::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct RemoteModelBuilder {
    base_url: String,
    model: String,
    api_key: Option<String>,
    api_key_env: Option<String>,
    timeout: Duration,
    max_retries: u32,
    backoff: Duration,
    max_retry_wait: Duration,
    max_body_bytes: usize,
    max_concurrency: usize,
    privacy: Privacy,
}

impl RemoteModel {
    /// Starts building a model `model` served at `base_url` (up to and including `/v1`).
    pub fn builder(base_url: impl Into<String>, model: impl Into<String>) -> RemoteModelBuilder {
        RemoteModelBuilder {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            model: model.into(),
            api_key: None,
            api_key_env: None,
            timeout: Duration::from_secs(60),
            max_retries: 2,
            backoff: Duration::from_millis(250),
            max_retry_wait: Duration::from_secs(30),
            max_body_bytes: 16 * 1024 * 1024,
            max_concurrency: 8,
            privacy: Privacy::Allow,
        }
    }
}

impl RemoteModelBuilder {
    /// The API key, sent as a bearer token.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Reads the API key from this environment variable when the model is built (if set).
    pub fn api_key_env(mut self, variable: impl Into<String>) -> Self {
        self.api_key_env = Some(variable.into());
        self
    }

    /// The longest one request may take, connection included (default 60 s). For a stream this covers the
    /// whole stream.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How many times a request answered with 429 or a 5xx status is tried again (default 2). The wait before
    /// each try is the server's Retry-After when it sends one, or else `backoff`, then twice that, and so on
    /// (default 250 ms), each varied by up to a quarter either way so that many clients do not come back
    /// together.
    pub fn retries(mut self, retries: u32, backoff: Duration) -> Self {
        self.max_retries = retries;
        self.backoff = backoff;
        self
    }

    /// The longest wait before a retry (default 30 s). A server asking (Retry-After) for a longer wait gets no
    /// retry: the request fails at once with the server's Retry-After in the error
    /// ([`Error::retry_after`]), kind [`RateLimited`](RemoteErrorKind::RateLimited) for a 429.
    pub fn max_retry_wait(mut self, wait: Duration) -> Self {
        self.max_retry_wait = wait;
        self
    }

    /// The largest answer body read for a request that does not stream (default 16 MiB). A larger one is a
    /// [`Malformed`](RemoteErrorKind::Malformed) error.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// How many requests of this model (and of its clones) are in flight at once (default 8): the size of its
    /// pool of helper threads. Further requests wait in a queue, without blocking their callers. A request
    /// whose caller went away (its future or stream dropped) gives its thread back at once, even while it waits
    /// for the server: its connection is shut down (for a stream within about 20 ms).
    pub fn max_concurrency(mut self, requests: usize) -> Self {
        self.max_concurrency = requests;
        self
    }

    /// What may be sent to this model (default [`Privacy::Allow`]). The policy applies to every call,
    /// [`complete`](LanguageModel::complete), [`stream`](LanguageModel::stream),
    /// [`embed`](LanguageModel::embed) and [`generate`](crate::structured::StructuredExt::generate) alike,
    /// whether or not it is made within a run; within a run the run's policy applies as well (both redact, and
    /// either one's `LocalOnly` refuses). Under `LocalOnly` no connection is ever made.
    pub fn privacy(mut self, privacy: Privacy) -> Self {
        self.privacy = privacy;
        self
    }

    /// Builds the model. No connection is made and no thread is started until the first request.
    ///
    /// # Errors
    /// [`Error::InvalidSetting`] if the base URL is not http(s), or `max_concurrency` is 0.
    pub fn build(self) -> Result<RemoteModel> {
        if !(self.base_url.starts_with("http://") || self.base_url.starts_with("https://")) {
            return Err(Error::InvalidSetting {
                setting: "base_url",
                reason: format!("`{}` is not an http(s) URL", self.base_url),
            });
        }
        if self.max_concurrency == 0 {
            return Err(Error::InvalidSetting {
                setting: "max_concurrency",
                reason: "at least one request must be allowed".into(),
            });
        }
        let api_key = self.api_key.or_else(|| self.api_key_env.and_then(|v| std::env::var(v).ok()));
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(self.timeout))
            .http_status_as_error(false)
            .max_idle_connections_per_host(self.max_concurrency)
            .build();
        // The default connector (TCP, proxies, TLS), with each connection's socket known to the request using
        // it, so that a dropped request can shut it down.
        let agent =
            ureq::Agent::with_parts(config, Cancellable(DefaultConnector::default()), DefaultResolver::default());
        Ok(RemoteModel {
            inner: Arc::new(Inner {
                name: self.model.clone(),
                model: self.model,
                base_url: self.base_url,
                api_key,
                agent,
                max_retries: self.max_retries,
                backoff: self.backoff,
                max_retry_wait: self.max_retry_wait,
                max_body_bytes: self.max_body_bytes,
                privacy: self.privacy,
                json_object_schema: AtomicBool::new(false),
                pool: Pool::new(self.max_concurrency),
            }),
        })
    }
}

/// Whether the caller is gone (its future or stream was dropped).
type Cancelled<'a> = &'a dyn Fn() -> bool;

/// An answer with an error status, before it is turned into an error.
struct Refusal {
    code: Option<String>,
    /// The server's own message, from an error object.
    message: Option<String>,
    /// The start of the body.
    body: String,
    retry_after: Option<Duration>,
    mentions_response_format: bool,
}

impl Inner {
    fn error(&self, error: RemoteError) -> Error {
        Error::Remote { model: self.name.clone(), error }
    }

    fn fail(&self, kind: RemoteErrorKind, message: impl Into<String>) -> Error {
        self.error(RemoteError::new(kind, message))
    }

    fn cancelled_error(&self) -> Error {
        self.fail(RemoteErrorKind::Connect, "cancelled: the caller went away")
    }

    /// A transport error of the HTTP client.
    fn transport_error(&self, url: &str, e: ureq::Error) -> Error {
        let kind = match &e {
            ureq::Error::Timeout(_) => RemoteErrorKind::Timeout,
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => RemoteErrorKind::Timeout,
            ureq::Error::Io(_) | ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => RemoteErrorKind::Connect,
            _ => RemoteErrorKind::Malformed,
        };
        self.fail(kind, format!("{url}: {e}"))
    }

    /// An error reading an answer's body (`cut_off`: the kind when the connection ended early).
    fn read_error(&self, what: &str, e: std::io::Error, cut_off: RemoteErrorKind) -> Error {
        let e = ureq::Error::from(e);
        let kind = match &e {
            ureq::Error::Timeout(_) => RemoteErrorKind::Timeout,
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => RemoteErrorKind::Timeout,
            _ => cut_off,
        };
        self.fail(kind, format!("reading {what}: {e}"))
    }

    fn body(&self, request: &Request, stream: bool) -> Result<Value> {
        let Prompt::Chat(messages) = &request.prompt else {
            return Err(Error::InvalidRequest {
                reason: "a remote model takes chat messages, not a raw prompt".into(),
            });
        };
        // The API's `tool` role needs the id of a native tool call; our tool calls travel as JSON in the
        // assistant's text (the same grammar as locally), so their results go back as user messages.
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| match m.role {
                super::Role::Tool => json!({ "role": "user", "content": format!("Tool result: {}", m.content) }),
                _ => json!({ "role": m.role.as_str(), "content": m.content }),
            })
            .collect();
        let mut body = json!({
            "model": self.model,
            "messages": messages,
            "max_tokens": request.max_tokens,
            "temperature": request.sampling.temperature,
            "stream": stream,
        });
        if stream {
            body["stream_options"] = json!({ "include_usage": true });
        }
        if !request.sampling.is_greedy() {
            body["top_p"] = json!(request.sampling.top_p);
            body["seed"] = json!(request.sampling.seed);
        }
        if !request.stop.is_empty() {
            body["stop"] = json!(request.stop);
        }
        if request.logprobs {
            body["logprobs"] = json!(true);
            body["top_logprobs"] = json!(5);
        }
        match &request.constraint {
            None => {}
            Some(Constraint::JsonSchema(schema)) => {
                body["response_format"] = if self.json_object_schema.load(Ordering::Relaxed) {
                    json!({ "type": "json_object", "schema": schema })
                } else {
                    json!({ "type": "json_schema", "json_schema": { "name": "output", "schema": schema, "strict": true } })
                };
            }
            Some(Constraint::Regex(_)) => {
                return Err(Error::InvalidRequest {
                    reason: "remote models take JSON Schema constraints, not regular expressions".into(),
                })
            }
        }
        Ok(body)
    }

    /// Posts with retries on 429 and 5xx (honouring Retry-After); returns the successful response.
    fn post(&self, path: &str, body: &Value, cancelled: Cancelled<'_>) -> Result<ureq::http::Response<ureq::Body>> {
        let url = format!("{}{path}", self.base_url);
        let payload = body.to_string();
        let sends_response_format = body.get("response_format").is_some();
        let mut attempt = 0;
        loop {
            if cancelled() {
                return Err(self.cancelled_error());
            }
            attempt += 1;
            let mut req = self.agent.post(&url).header("Content-Type", "application/json");
            if let Some(key) = &self.api_key {
                req = req.header("Authorization", &format!("Bearer {key}"));
            }
            let response = req.send(payload.as_str()).map_err(|e| self.transport_error(&url, e))?;
            let status = response.status().as_u16();
            if status < 300 {
                return Ok(response);
            }
            let refusal = refusal(response);
            let kind = if sends_response_format && matches!(status, 400 | 422 | 500) && refusal.mentions_response_format
            {
                RemoteErrorKind::ResponseFormatRefused
            } else if status == 429 {
                RemoteErrorKind::RateLimited
            } else {
                RemoteErrorKind::Status
            };
            let retryable = kind != RemoteErrorKind::ResponseFormatRefused && (status == 429 || status >= 500);
            // The server's Retry-After, or exponential backoff with jitter (capped: only a server's own longer
            // wait makes the request give up).
            let wait = refusal.retry_after.unwrap_or_else(|| {
                jitter(self.backoff.saturating_mul(1 << (attempt - 1).min(16))).min(self.max_retry_wait)
            });
            let give_up = !retryable || attempt > self.max_retries || wait > self.max_retry_wait;
            if give_up {
                let message = refusal
                    .message
                    .unwrap_or_else(|| format!("{url}: HTTP {status} after {attempt} tries: {}", refusal.body));
                tracing::debug!(%url, status, attempt, ?refusal.retry_after, "giving up");
                return Err(self.error(
                    RemoteError::new(kind, message)
                        .with_status(status)
                        .with_code(refusal.code)
                        .with_retry_after(refusal.retry_after),
                ));
            }
            tracing::debug!(%url, status, attempt, ?wait, "retrying");
            if !sleep_unless(wait, cancelled) {
                return Err(self.cancelled_error());
            }
        }
    }

    /// Posts a chat request; if the server refuses the standard `json_schema` response format, switches to the
    /// `json_object` + `schema` form for this and later requests.
    fn post_chat(
        &self,
        request: &Request,
        stream: bool,
        cancelled: Cancelled<'_>,
    ) -> Result<ureq::http::Response<ureq::Body>> {
        let body = self.body(request, stream)?;
        match self.post("/chat/completions", &body, cancelled) {
            Err(Error::Remote { error, .. })
                if error.kind == RemoteErrorKind::ResponseFormatRefused
                    && request.constraint.is_some()
                    && !self.json_object_schema.swap(true, Ordering::Relaxed) =>
            {
                tracing::debug!(%error, "server refused json_schema; using json_object with a schema");
                self.post("/chat/completions", &self.body(request, stream)?, cancelled)
            }
            other => other,
        }
    }

    /// Reads a whole answer body, at most `max_body_bytes`, giving up when the caller goes away.
    fn read_body(&self, response: ureq::http::Response<ureq::Body>, cancelled: Cancelled<'_>) -> Result<String> {
        let limit = self.max_body_bytes;
        let mut reader = response.into_body().into_reader();
        let mut bytes = Vec::new();
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            if cancelled() {
                // Dropping the reader unread closes the connection.
                return Err(self.cancelled_error());
            }
            let n = match reader.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.read_error("the answer", e, RemoteErrorKind::Malformed)),
            };
            if bytes.len() + n > limit {
                return Err(self.fail(
                    RemoteErrorKind::Malformed,
                    format!("the answer is larger than the limit of {limit} bytes (max_body_bytes)"),
                ));
            }
            bytes.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8(bytes).map_err(|_| self.fail(RemoteErrorKind::Malformed, "the answer is not UTF-8"))
    }

    /// Parses an answer body as JSON; an OpenAI-style error object in it is a `ServerError`.
    fn parse_answer(&self, text: &str) -> Result<Value> {
        let value: Value = serde_json::from_str(text).map_err(|_| {
            self.fail(
                RemoteErrorKind::Malformed,
                format!("the answer is not JSON: {}", text.chars().take(120).collect::<String>()),
            )
        })?;
        match server_error(&value) {
            Some(error) => Err(self.error(error)),
            None => Ok(value),
        }
    }

    fn complete(&self, request: &Request, cancelled: Cancelled<'_>) -> Result<Completion> {
        let started = Instant::now();
        let response = self.post_chat(request, false, cancelled)?;
        let text = self.read_body(response, cancelled)?;
        let value = self.parse_answer(&text)?;
        let choice = value
            .get("choices")
            .and_then(|c| c.get(0))
            .ok_or_else(|| self.fail(RemoteErrorKind::Malformed, "the answer has no choices"))?;
        let content = choice
            .get("message")
            .and_then(|m| m.get("content"))
            .and_then(Value::as_str)
            .ok_or_else(|| self.fail(RemoteErrorKind::Malformed, "the answer has no message content"))?
            .to_owned();
        let total = started.elapsed();
        let mut usage = usage_of(&value["usage"]);
        usage.time_to_first_token = total;
        usage.total_time = total;
        let logprobs = choice["logprobs"]["content"].as_array().map(|items| {
            items
                .iter()
                .map(|t| TokenLogprob {
                    token: t["token"].as_str().unwrap_or_default().to_owned(),
                    logprob: t["logprob"].as_f64().unwrap_or(0.0) as f32,
                    top: t["top_logprobs"]
                        .as_array()
                        .map(|tops| {
                            tops.iter()
                                .map(|x| {
                                    (
                                        x["token"].as_str().unwrap_or_default().to_owned(),
                                        x["logprob"].as_f64().unwrap_or(0.0) as f32,
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                })
                .collect()
        });
        Ok(Completion { text: content, finish_reason: finish_reason(choice), usage, logprobs, redactions: Vec::new() })
    }

    fn stream(&self, request: &Request, tx: &SharedSender) -> Result<Completion> {
        let started = Instant::now();
        let response = self.post_chat(request, true, &|| tx.is_closed())?;
        let is_json = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("json") && !v.contains("event-stream"));
        if is_json {
            // An answer that is not an event stream: an error object, or a server that ignored `stream`.
            let text = self.read_body(response, &|| tx.is_closed())?;
            self.parse_answer(&text)?;
            return Err(self.fail(RemoteErrorKind::Malformed, "the server answered a stream request without a stream"));
        }
        // The reader (and with it the connection) is dropped when this function returns, also when the caller
        // went away: that closes the socket.
        let reader = BufReader::new(response.into_body().into_reader());
        let mut text = String::new();
        let mut first = None;
        let mut finish = FinishReason::EndOfText;
        let mut usage = None;
        let mut pieces = 0;
        let mut done = false;
        for line in reader.lines() {
            if tx.is_closed() {
                return Err(self.cancelled_error());
            }
            let line = line.map_err(|e| self.read_error("the stream", e, RemoteErrorKind::CutOff))?;
            let Some(data) = line.strip_prefix("data:") else { continue };
            let data = data.trim();
            if data == "[DONE]" {
                done = true;
                break;
            }
            let event: Value = serde_json::from_str(data).map_err(|_| {
                self.fail(
                    RemoteErrorKind::Malformed,
                    format!("a stream event is not JSON: {}", data.chars().take(120).collect::<String>()),
                )
            })?;
            if let Some(error) = server_error(&event) {
                return Err(self.error(error));
            }
            if let Some(u) = event.get("usage").filter(|u| u.is_object()) {
                usage = Some(usage_of(u));
            }
            let Some(choice) = event.get("choices").and_then(|c| c.get(0)) else { continue };
            if let Some(piece) = choice["delta"]["content"].as_str() {
                if !piece.is_empty() {
                    first.get_or_insert_with(Instant::now);
                    pieces += 1;
                    text.push_str(piece);
                    tx.text(piece);
                }
            }
            if choice.get("finish_reason").is_some_and(|f| !f.is_null()) {
                finish = finish_reason(choice);
            }
        }
        if tx.is_closed() {
            return Err(self.cancelled_error());
        }
        if !done {
            return Err(self.fail(
                RemoteErrorKind::CutOff,
                format!("the stream ended without [DONE] after {} characters", text.chars().count()),
            ));
        }
        let end = Instant::now();
        let mut usage = usage.unwrap_or_else(|| {
            tracing::debug!(model = %self.name, pieces, "the server sent no usage; counting the pieces");
            Usage { completion_tokens: pieces, ..Usage::default() }
        });
        usage.time_to_first_token = first.unwrap_or(end).duration_since(started);
        usage.total_time = end.duration_since(started);
        Ok(Completion { text, finish_reason: finish, usage, logprobs: None, redactions: Vec::new() })
    }

    fn embed(&self, texts: &[String], cancelled: Cancelled<'_>) -> Result<Vec<Vec<f32>>> {
        let response = self.post("/embeddings", &json!({ "model": self.model, "input": texts }), cancelled)?;
        let text = self.read_body(response, cancelled)?;
        let value = self.parse_answer(&text)?;
        let data = value["data"]
            .as_array()
            .ok_or_else(|| self.fail(RemoteErrorKind::Malformed, "the embeddings answer has no data"))?;
        data.iter()
            .map(|d| {
                let v: Vec<f32> = d["embedding"]
                    .as_array()
                    .ok_or_else(|| self.fail(RemoteErrorKind::Malformed, "an embedding is missing"))?
                    .iter()
                    .map(|x| x.as_f64().unwrap_or(0.0) as f32)
                    .collect();
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                Ok(if n > 0.0 { v.into_iter().map(|x| x / n).collect() } else { v })
            })
            .collect()
    }
}

/// Reads what an error answer says: the server's message and code (OpenAI-style error body), its Retry-After.
fn refusal(mut response: ureq::http::Response<ureq::Body>) -> Refusal {
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    let text = response
        .body_mut()
        .with_config()
        .limit(ERROR_BODY_LIMIT as u64)
        .lossy_utf8(true)
        .read_to_string()
        .unwrap_or_default();
    let lower = text.to_ascii_lowercase();
    let mentions_response_format = lower.contains("response_format") || lower.contains("json_schema");
    let parsed = serde_json::from_str::<Value>(&text).ok().and_then(|v| server_error(&v));
    let (code, message) = match parsed {
        Some(e) => (e.code, Some(e.message)),
        None => (None, None),
    };
    let body = text.trim().chars().take(200).collect();
    Refusal { code, message, body, retry_after, mentions_response_format }
}

/// The error in an OpenAI-style `{"error": {"message": .., "code" or "type": ..}}` body (or `{"error": ".."}`).
fn server_error(value: &Value) -> Option<RemoteError> {
    let error = value.get("error").filter(|e| !e.is_null())?;
    let (message, code) = match error {
        Value::String(s) => (s.clone(), None),
        Value::Object(_) => {
            let message = error["message"].as_str().map_or_else(|| error.to_string(), str::to_owned);
            let code = [&error["code"], &error["type"]].into_iter().find_map(|c| match c {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            });
            (message, code)
        }
        other => (other.to_string(), None),
    };
    Some(RemoteError::new(RemoteErrorKind::ServerError, message).with_code(code))
}

fn usage_of(u: &Value) -> Usage {
    Usage {
        prompt_tokens: u["prompt_tokens"].as_u64().unwrap_or(0) as usize,
        cached_prompt_tokens: u["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0) as usize,
        completion_tokens: u["completion_tokens"].as_u64().unwrap_or(0) as usize,
        ..Usage::default()
    }
}

fn finish_reason(choice: &Value) -> FinishReason {
    match choice["finish_reason"].as_str() {
        Some("length") => FinishReason::MaxTokens,
        _ => FinishReason::EndOfText,
    }
}

/// Sleeps `wait` in short slices; false (at once) if the caller goes away meanwhile.
fn sleep_unless(wait: Duration, cancelled: Cancelled<'_>) -> bool {
    let until = Instant::now() + wait;
    loop {
        if cancelled() {
            return false;
        }
        let now = Instant::now();
        if now >= until {
            return true;
        }
        std::thread::sleep(CANCEL_POLL.min(until - now));
    }
}

/// `wait` varied by up to a quarter either way (a cheap xorshift generator seeded from the clock).
fn jitter(wait: Duration) -> Duration {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut x = STATE.load(Ordering::Relaxed);
    if x == 0 {
        x = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64) | 1;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    STATE.store(x, Ordering::Relaxed);
    // A factor in [0.75, 1.25).
    let factor = 0.75 + (x >> 11) as f64 / (1u64 << 53) as f64 * 0.5;
    wait.mul_f64(factor)
}

/// A Retry-After value: delay seconds, or an HTTP date (IMF-fixdate, `Wed, 21 Oct 2015 07:28:00 GMT`); a date
/// in the past is no wait.
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = parse_http_date(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parses an RFC 7231 IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
fn parse_http_date(s: &str) -> Option<SystemTime> {
    let (_weekday, rest) = s.split_once(", ")?;
    let parts: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, time, "GMT"] = parts.as_slice() else { return None };
    let day: u64 = day.parse().ok()?;
    let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        .iter()
        .position(|m| m == month)? as u64
        + 1;
    let year: u64 = year.parse().ok()?;
    let mut hms = time.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    if hms.next().is_some() || !(1..=31).contains(&day) || year < 1970 || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    // Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm, years from 1970 on).
    let (y, mo) = if month <= 2 { (year - 1, month + 9) } else { (year, month - 3) };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * mo + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    Some(UNIX_EPOCH + Duration::from_secs(days * 86_400 + h * 3600 + m * 60 + sec))
}

// Cancelling a request blocked in the HTTP client. The helper thread running a request marks it as the thread's
// current request (`InFlight::enter`). The connector registers each new connection's socket with the request
// that opened it, and a connection taken again from the client's pool moves to the request using it at its
// first use (`CancelTransport::claim`). Cancelling shuts the socket down, which wakes the blocked read at once.

/// A request on a helper thread, as seen by whoever may cancel it.
#[derive(Default)]
struct InFlight {
    state: Mutex<InFlightState>,
}

#[derive(Default)]
struct InFlightState {
    cancelled: bool,
    /// The request has ended: nothing is shut down any more.
    done: bool,
    /// The connection in use.
    conn: Option<Conn>,
}

/// A connection's socket (only a weak handle: the connection closes as usual when dropped).
#[derive(Clone)]
struct Conn {
    id: u64,
    socket: Weak<dyn ShutdownHandle>,
}

impl Conn {
    fn shutdown(&self) {
        if let Some(socket) = self.socket.upgrade() {
            socket.shutdown();
        }
    }
}

thread_local! {
    /// The request this helper thread is running.
    static CURRENT: RefCell<Option<Arc<InFlight>>> = const { RefCell::new(None) };
}

fn cancelled_io() -> ureq::Error {
    ureq::Error::Io(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "cancelled: the caller went away"))
}

impl InFlight {
    fn state(&self) -> MutexGuard<'_, InFlightState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Cancels the request: shuts its connection down, and any connection it opens later. The shutdown is
    /// done under the lock, so a connection that another request has taken meanwhile is never touched.
    fn cancel(&self) {
        let mut state = self.state();
        if state.done || state.cancelled {
            return;
        }
        state.cancelled = true;
        if let Some(conn) = state.conn.take() {
            conn.shutdown();
        }
    }

    /// Makes `conn` this request's connection; if the request is cancelled, shuts it down instead.
    fn attach(&self, conn: &Conn) -> std::result::Result<(), ureq::Error> {
        let mut state = self.state();
        if state.cancelled {
            drop(state);
            conn.shutdown();
            return Err(cancelled_io());
        }
        if !state.done {
            state.conn = Some(conn.clone());
        }
        Ok(())
    }

    /// Forgets connection `id` (another request uses it now).
    fn detach(&self, id: u64) {
        let mut state = self.state();
        if state.conn.as_ref().is_some_and(|c| c.id == id) {
            state.conn = None;
        }
    }

    fn is_done(&self) -> bool {
        self.state().done
    }

    /// Marks the calling thread as running this request until the guard is dropped; then the request is done.
    fn enter(self: &Arc<Self>) -> Entered {
        CURRENT.with(|current| *current.borrow_mut() = Some(Arc::clone(self)));
        Entered(Arc::clone(self))
    }
}

/// From [`InFlight::enter`].
struct Entered(Arc<InFlight>);

impl Drop for Entered {
    fn drop(&mut self) {
        CURRENT.with(|current| current.borrow_mut().take());
        let mut state = self.0.state();
        state.done = true;
        state.conn = None;
    }
}

/// Cancels a request when dropped (held by the caller's future).
struct CancelOnDrop(Arc<InFlight>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Ureq's default connector (TCP, proxies, TLS), whose connections are known to the requests using them.
#[derive(Debug)]
struct Cancellable(DefaultConnector);

impl Connector for Cancellable {
    type Out = CancelTransport;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<()>,
    ) -> std::result::Result<Option<CancelTransport>, ureq::Error> {
        static IDS: AtomicU64 = AtomicU64::new(0);
        let owner = CURRENT.with(|current| current.borrow().clone());
        // The connector that opens the socket registers it (before any TLS or proxy handshake, so that these
        // are interrupted too): it goes to the agent as before, and to the request.
        let registered: Arc<Mutex<Option<Conn>>> = Arc::default();
        let register = {
            let (forward, registered, owner) =
                (Arc::clone(&details.register_shutdown), Arc::clone(&registered), owner.clone());
            move |socket: Weak<dyn ShutdownHandle>| {
                forward(socket.clone())?;
                let conn = Conn { id: IDS.fetch_add(1, Ordering::Relaxed), socket };
                if let Some(owner) = &owner {
                    owner.attach(&conn)?;
                }
                *registered.lock().unwrap_or_else(PoisonError::into_inner) = Some(conn);
                Ok(())
            }
        };
        let details = ConnectionDetails {
            uri: details.uri,
            addrs: details.addrs.clone(),
            config: details.config,
            request_level: details.request_level,
            resolver: details.resolver,
            now: details.now,
            timeout: details.timeout,
            current_time: Arc::clone(&details.current_time),
            run_connector: Arc::clone(&details.run_connector),
            register_shutdown: Arc::new(register),
        };
        let Some(inner) = self.0.connect(&details, chained)? else { return Ok(None) };
        let conn = registered.lock().unwrap_or_else(PoisonError::into_inner).take();
        Ok(Some(CancelTransport { inner, conn, owner }))
    }
}

/// A connection, with the request that uses it.
struct CancelTransport {
    inner: Box<dyn Transport>,
    /// Its socket (none if the connector registered none, as for a connection through a CONNECT proxy, whose
    /// own connection to the proxy is a `CancelTransport` within).
    conn: Option<Conn>,
    owner: Option<Arc<InFlight>>,
}

impl std::fmt::Debug for CancelTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelTransport").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl CancelTransport {
    /// Moves the connection to the calling thread's request, if that is another one (a connection taken from
    /// the pool): the previous request can no longer shut it down.
    fn claim(&mut self) -> std::result::Result<(), ureq::Error> {
        let Some(conn) = &self.conn else { return Ok(()) };
        let current = CURRENT.with(|current| {
            let current = current.borrow();
            match (&*current, &self.owner) {
                (Some(a), Some(b)) if Arc::ptr_eq(a, b) => None,
                (None, None) => None,
                (current, _) => Some(current.clone()),
            }
        });
        let Some(current) = current else { return Ok(()) };
        if let Some(previous) = self.owner.take() {
            previous.detach(conn.id);
        }
        if let Some(request) = &current {
            request.attach(conn)?;
        }
        self.owner = current;
        Ok(())
    }
}

impl Transport for CancelTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.inner.buffers()
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> std::result::Result<(), ureq::Error> {
        self.claim()?;
        self.inner.transmit_output(amount, timeout)
    }

    fn await_input(&mut self, timeout: NextTimeout) -> std::result::Result<bool, ureq::Error> {
        self.claim()?;
        self.inner.await_input(timeout)
    }

    fn is_open(&mut self) -> bool {
        // The pool asks this of a connection before handing it to a request (on that request's thread).
        self.claim().is_ok() && self.inner.is_open()
    }

    fn is_tls(&self) -> bool {
        self.inner.is_tls()
    }
}

/// A stream's sender, shared with the watcher; taken out to finish the stream.
struct SharedSender(Mutex<Option<StreamSender>>);

impl SharedSender {
    fn sender(&self) -> MutexGuard<'_, Option<StreamSender>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_closed(&self) -> bool {
        self.sender().as_ref().is_none_or(StreamSender::is_closed)
    }

    fn text(&self, piece: &str) {
        if let Some(tx) = self.sender().as_mut() {
            tx.text(piece);
        }
    }

    fn finish(&self, result: Result<Completion>) {
        let tx = self.sender().take();
        if let Some(tx) = tx {
            tx.finish(result);
        }
    }
}

/// Cancels the streams in flight whose reader is gone: a stream's sender can only be asked, so one thread (for
/// all models) asks every 20 ms while streams are in flight, and sleeps while there are none.
struct Watcher {
    streams: Mutex<Vec<(Arc<InFlight>, Arc<SharedSender>)>>,
    wake: Condvar,
}

impl Watcher {
    /// The watcher (started at the first stream), or none if its thread cannot start.
    fn get() -> Option<&'static Watcher> {
        static WATCHER: OnceLock<Option<&'static Watcher>> = OnceLock::new();
        *WATCHER.get_or_init(|| {
            let watcher: &'static Watcher =
                Box::leak(Box::new(Watcher { streams: Mutex::new(Vec::new()), wake: Condvar::new() }));
            match std::thread::Builder::new().name("slm-remote-watch".into()).spawn(move || watcher.run()) {
                Ok(_) => Some(watcher),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start the remote stream watcher: a dropped stream closes its connection only at its next bytes");
                    None
                }
            }
        })
    }

    fn streams(&self) -> MutexGuard<'_, Vec<(Arc<InFlight>, Arc<SharedSender>)>> {
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run(&self) {
        let mut streams = self.streams();
        loop {
            streams.retain(|(request, tx)| {
                if request.is_done() {
                    return false;
                }
                if tx.is_closed() {
                    request.cancel();
                    return false;
                }
                true
            });
            streams = if streams.is_empty() {
                self.wake.wait(streams).unwrap_or_else(PoisonError::into_inner)
            } else {
                self.wake.wait_timeout(streams, CANCEL_POLL).unwrap_or_else(PoisonError::into_inner).0
            };
        }
    }

    /// Watches a stream until the guard is dropped.
    fn watch(&'static self, request: &Arc<InFlight>, tx: &Arc<SharedSender>) -> Watched {
        self.streams().push((Arc::clone(request), Arc::clone(tx)));
        self.wake.notify_one();
        Watched { watcher: self, request: Arc::clone(request) }
    }
}

/// From [`Watcher::watch`].
struct Watched {
    watcher: &'static Watcher,
    request: Arc<InFlight>,
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.watcher.streams().retain(|(request, _)| !Arc::ptr_eq(request, &self.request));
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// The model's helper threads: started as requests come, at most `max`; they take jobs from one queue and
/// stop when the model is dropped.
struct Pool {
    max: usize,
    state: Mutex<PoolState>,
}

struct PoolState {
    jobs: std_mpsc::Sender<Job>,
    queue: Arc<Mutex<std_mpsc::Receiver<Job>>>,
    threads: usize,
}

impl Pool {
    fn new(max: usize) -> Self {
        let (jobs, queue) = std_mpsc::channel();
        Self { max, state: Mutex::new(PoolState { jobs, queue: Arc::new(Mutex::new(queue)), threads: 0 }) }
    }

    /// Queues a job, starting another thread if the pool is not full yet. Never blocks on the network.
    fn submit(&self, job: Job) -> Result<()> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.threads < self.max {
            let queue = Arc::clone(&state.queue);
            let spawned = std::thread::Builder::new().name("slm-remote".into()).spawn(move || loop {
                let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
                let Ok(job) = job else { return };
                // A panicking job drops its answer channel (its caller sees the worker stop); the thread stays.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            });
            match spawned {
                Ok(_) => state.threads += 1,
                Err(e) if state.threads == 0 => {
                    tracing::warn!(error = %e, "cannot start a remote request thread");
                    return Err(Error::WorkerStopped);
                }
                Err(e) => tracing::debug!(error = %e, "cannot start another remote request thread"),
            }
        }
        state.jobs.send(job).map_err(|_| Error::WorkerStopped)
    }
}

/// Runs blocking work on the model's pool and awaits its answer; `work` gets a check of whether the caller
/// (this future) is gone. Dropping this future shuts down the connection the work is using.
async fn on_pool<T: Send + 'static>(
    inner: &Arc<Inner>,
    work: impl FnOnce(&Inner, Cancelled<'_>) -> Result<T> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = oneshot::channel::<Result<T>>();
    let worker = Arc::clone(inner);
    let request = Arc::new(InFlight::default());
    let _cancel = CancelOnDrop(Arc::clone(&request));
    inner.pool.submit(Box::new(move || {
        if tx.is_canceled() {
            return; // dropped while queued: never sent
        }
        let answer = {
            let _entered = request.enter();
            let cancelled = || tx.is_canceled();
            work(&worker, &cancelled)
        };
        let _ = tx.send(answer);
    }))?;
    rx.await.map_err(|_| Error::WorkerStopped)?
}

/// The request's texts under the model's own policy: refused, redacted (with what to restore the answer with)
/// or as they are.
fn guard(inner: &Inner, request: &mut Request) -> Result<Option<Redaction>> {
    inner.privacy.apply(&inner.name, &mut request.prompt.texts_mut())
}

#[async_trait::async_trait]
impl LanguageModel for RemoteModel {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn provider(&self) -> &str {
        "openai"
    }

    async fn complete(&self, mut request: Request) -> Result<Completion> {
        request.sampling.check()?;
        let redaction = guard(&self.inner, &mut request)?;
        let completion = on_pool(&self.inner, move |inner, cancelled| inner.complete(&request, cancelled)).await?;
        Ok(completion.restored(redaction.as_ref()))
    }

    fn stream(&self, mut request: Request) -> TokenStream {
        if let Err(e) = request.sampling.check() {
            return TokenStream::failed(e);
        }
        let redaction = match guard(&self.inner, &mut request) {
            Ok(r) => r,
            Err(e) => return TokenStream::failed(e),
        };
        let (tx, rx) = stream::channel();
        let tx = Arc::new(SharedSender(Mutex::new(Some(tx))));
        let inner = Arc::clone(&self.inner);
        let submitted = self.inner.pool.submit(Box::new(move || {
            if tx.is_closed() {
                return; // dropped while queued: never sent
            }
            let result = {
                let in_flight = Arc::new(InFlight::default());
                let _entered = in_flight.enter();
                let _watched = Watcher::get().map(|w| w.watch(&in_flight, &tx));
                inner.stream(&request, &tx)
            };
            tx.finish(result);
        }));
        match submitted {
            // Pieces go out as they come, with placeholders (a value split over pieces cannot be restored piece
            // by piece); the finished completion has the values back.
            Ok(()) => TokenStream::new(rx).map_completion(move |c| c.restored(redaction.as_ref())),
            Err(e) => TokenStream::failed(e),
        }
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let mut texts = texts.to_vec();
        {
            let mut refs: Vec<&mut String> = texts.iter_mut().collect();
            self.inner.privacy.apply(&self.inner.name, &mut refs)?;
        }
        on_pool(&self.inner, move |inner, cancelled| inner.embed(&texts, cancelled)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(1_445_412_470); // Wed, 21 Oct 2015 07:27:50 GMT
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now), Some(Duration::from_secs(10)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(UNIX_EPOCH + Duration::from_secs(784_111_777))
        );
        assert_eq!(
            parse_http_date("Thu, 29 Feb 2024 00:00:00 GMT"),
            Some(UNIX_EPOCH + Duration::from_secs(1_709_164_800))
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 UTC", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[test]
    fn jitter_stays_within_a_quarter() {
        for _ in 0..1000 {
            let j = jitter(Duration::from_millis(1000));
            assert!(j >= Duration::from_millis(750) && j < Duration::from_millis(1250), "{j:?}");
        }
    }

    #[test]
    fn error_objects_give_message_and_code() {
        let e = server_error(&json!({"error": {"message": "overloaded", "type": "server_error"}})).unwrap();
        assert_eq!(
            (e.kind, e.message.as_str(), e.code.as_deref()),
            (RemoteErrorKind::ServerError, "overloaded", Some("server_error"))
        );
        let e = server_error(&json!({"error": {"message": "m", "code": 42, "type": "t"}})).unwrap();
        assert_eq!(e.code.as_deref(), Some("42"));
        assert!(server_error(&json!({"choices": []})).is_none());
        assert!(server_error(&json!({"error": null})).is_none());
    }
}
