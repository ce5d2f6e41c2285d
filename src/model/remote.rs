//! A model behind an OpenAI-compatible Chat Completions endpoint (feature `remote`).
//!
//! The large model to escalate to, or a served small model when one machine is not enough (llama.cpp server,
//! vLLM and hosted endpoints speak this API). Requests run on a helper thread with a blocking HTTP client, so
//! no async runtime is needed and no executor thread ever waits on the network.

use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::{mpsc, oneshot};
use serde_json::{json, Value};

use super::stream::StreamEvent;
use super::{Completion, Constraint, FinishReason, LanguageModel, Prompt, Request, TokenLogprob, TokenStream, Usage};
use crate::privacy::{Privacy, Redaction};
use crate::{Error, RemoteError, RemoteErrorKind, Result};

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
    privacy: Privacy,
    /// Set once the server refused `json_schema` response formats: then `{"type": "json_object", "schema": ..}`
    /// (llama-cpp-python's form) is sent instead.
    json_object_schema: std::sync::atomic::AtomicBool,
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

    /// The longest one request may take, connection included (default 60 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How many times a request answered with 429 or a 5xx status is tried again (default 2), waiting
    /// `backoff`, then twice that, and so on (default 250 ms).
    pub fn retries(mut self, retries: u32, backoff: Duration) -> Self {
        self.max_retries = retries;
        self.backoff = backoff;
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

    /// Builds the model. No connection is made until the first request.
    ///
    /// # Errors
    /// [`Error::InvalidSetting`] if the base URL is not http(s).
    pub fn build(self) -> Result<RemoteModel> {
        if !(self.base_url.starts_with("http://") || self.base_url.starts_with("https://")) {
            return Err(Error::InvalidSetting {
                setting: "base_url",
                reason: format!("`{}` is not an http(s) URL", self.base_url),
            });
        }
        let api_key = self.api_key.or_else(|| self.api_key_env.and_then(|v| std::env::var(v).ok()));
        let agent: ureq::Agent =
            ureq::Agent::config_builder().timeout_global(Some(self.timeout)).http_status_as_error(false).build().into();
        Ok(RemoteModel {
            inner: Arc::new(Inner {
                name: self.model.clone(),
                model: self.model,
                base_url: self.base_url,
                api_key,
                agent,
                max_retries: self.max_retries,
                backoff: self.backoff,
                privacy: self.privacy,
                json_object_schema: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }
}

fn remote_error(reason: impl Into<String>) -> Error {
    Error::Remote { model: String::new(), error: RemoteError::new(RemoteErrorKind::Malformed, reason) }
}

impl Inner {
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
                body["response_format"] = if self.json_object_schema.load(std::sync::atomic::Ordering::Relaxed) {
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

    /// Posts with retries on 429 and 5xx; returns the successful response.
    fn post(&self, path: &str, body: &Value) -> Result<ureq::http::Response<ureq::Body>> {
        let url = format!("{}{path}", self.base_url);
        let payload = body.to_string();
        let mut wait = self.backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = self.agent.post(&url).header("Content-Type", "application/json");
            if let Some(key) = &self.api_key {
                req = req.header("Authorization", &format!("Bearer {key}"));
            }
            let response = req.send(payload.as_str()).map_err(|e| match e {
                ureq::Error::Timeout(_) => remote_error(format!("{url}: no answer in time")),
                other => remote_error(format!("{url}: {other}")),
            })?;
            let status = response.status().as_u16();
            if status < 300 {
                return Ok(response);
            }
            let retryable = status == 429 || status >= 500;
            if !retryable || attempt > self.max_retries {
                let mut response = response;
                let text = response.body_mut().read_to_string().unwrap_or_default();
                return Err(remote_error(format!(
                    "{url}: HTTP {status} after {attempt} tries: {}",
                    text.chars().take(200).collect::<String>()
                )));
            }
            tracing::debug!(%url, status, attempt, "retrying");
            std::thread::sleep(wait);
            wait = wait.saturating_mul(2);
        }
    }

    /// Posts a chat request; if the server refuses the standard `json_schema` response format, switches to the
    /// `json_object` + `schema` form for this and later requests.
    fn post_chat(&self, request: &Request, stream: bool) -> Result<ureq::http::Response<ureq::Body>> {
        let body = self.body(request, stream)?;
        match self.post("/chat/completions", &body) {
            Err(Error::Remote { error, .. })
                if error.message.contains("response_format")
                    && request.constraint.is_some()
                    && !self.json_object_schema.swap(true, std::sync::atomic::Ordering::Relaxed) =>
            {
                tracing::debug!(%error, "server refused json_schema; using json_object with a schema");
                self.post("/chat/completions", &self.body(request, stream)?)
            }
            other => other,
        }
    }

    fn complete(&self, request: &Request) -> Result<Completion> {
        let started = Instant::now();
        let mut response = self.post_chat(request, false)?;
        let text =
            response.body_mut().read_to_string().map_err(|e| remote_error(format!("reading the answer: {e}")))?;
        let value: Value = serde_json::from_str(&text).map_err(|_| {
            remote_error(format!("the answer is not JSON: {}", text.chars().take(120).collect::<String>()))
        })?;
        let choice =
            value.get("choices").and_then(|c| c.get(0)).ok_or_else(|| remote_error("the answer has no choices"))?;
        let content = choice
            .get("message")
            .and_then(|m| m.get("content"))
            .and_then(Value::as_str)
            .ok_or_else(|| remote_error("the answer has no message content"))?
            .to_owned();
        let total = started.elapsed();
        let usage = Usage {
            prompt_tokens: value["usage"]["prompt_tokens"].as_u64().unwrap_or(0) as usize,
            cached_prompt_tokens: value["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0)
                as usize,
            completion_tokens: value["usage"]["completion_tokens"].as_u64().unwrap_or(0) as usize,
            time_to_first_token: total,
            total_time: total,
        };
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

    fn stream(&self, request: &Request, tx: &mpsc::UnboundedSender<StreamEvent>) -> Result<Completion> {
        let started = Instant::now();
        let response = self.post_chat(request, true)?;
        let reader = BufReader::new(response.into_body().into_reader());
        let mut text = String::new();
        let mut first = None;
        let mut finish = FinishReason::EndOfText;
        let mut usage = Usage::default();
        let mut pieces = 0;
        for line in reader.lines() {
            if tx.is_closed() {
                break;
            }
            let line = line.map_err(|e| remote_error(format!("reading the stream: {e}")))?;
            let Some(data) = line.strip_prefix("data:") else { continue };
            let data = data.trim();
            if data == "[DONE]" {
                break;
            }
            let event: Value =
                serde_json::from_str(data).map_err(|_| remote_error(format!("a stream event is not JSON: {data}")))?;
            if let Some(u) = event.get("usage").filter(|u| u.is_object()) {
                usage.prompt_tokens = u["prompt_tokens"].as_u64().unwrap_or(0) as usize;
                usage.completion_tokens = u["completion_tokens"].as_u64().unwrap_or(0) as usize;
            }
            let Some(choice) = event.get("choices").and_then(|c| c.get(0)) else { continue };
            if let Some(piece) = choice["delta"]["content"].as_str() {
                if !piece.is_empty() {
                    first.get_or_insert_with(Instant::now);
                    pieces += 1;
                    text.push_str(piece);
                    let _ = tx.unbounded_send(StreamEvent::Text(piece.to_owned()));
                }
            }
            if choice.get("finish_reason").is_some_and(|f| !f.is_null()) {
                finish = finish_reason(choice);
            }
        }
        let end = Instant::now();
        if usage.completion_tokens == 0 {
            usage.completion_tokens = pieces;
        }
        usage.time_to_first_token = first.unwrap_or(end).duration_since(started);
        usage.total_time = end.duration_since(started);
        Ok(Completion { text, finish_reason: finish, usage, logprobs: None, redactions: Vec::new() })
    }

    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let mut response = self.post("/embeddings", &json!({ "model": self.model, "input": texts }))?;
        let text =
            response.body_mut().read_to_string().map_err(|e| remote_error(format!("reading the answer: {e}")))?;
        let value: Value =
            serde_json::from_str(&text).map_err(|_| remote_error("the embeddings answer is not JSON"))?;
        let data = value["data"].as_array().ok_or_else(|| remote_error("the embeddings answer has no data"))?;
        data.iter()
            .map(|d| {
                let v: Vec<f32> = d["embedding"]
                    .as_array()
                    .ok_or_else(|| remote_error("an embedding is missing"))?
                    .iter()
                    .map(|x| x.as_f64().unwrap_or(0.0) as f32)
                    .collect();
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                Ok(if n > 0.0 { v.into_iter().map(|x| x / n).collect() } else { v })
            })
            .collect()
    }
}

fn finish_reason(choice: &Value) -> FinishReason {
    match choice["finish_reason"].as_str() {
        Some("length") => FinishReason::MaxTokens,
        _ => FinishReason::EndOfText,
    }
}

/// Runs blocking work on a helper thread and awaits its answer.
async fn off_thread<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("slm-remote".into())
        .spawn(move || {
            let _ = tx.send(work());
        })
        .map_err(|e| remote_error(format!("cannot start a thread: {e}")))?;
    rx.await.map_err(|_| remote_error("the request thread stopped"))?
}

/// The request's texts under the model's own policy: refused, redacted (with what to restore the answer with)
/// or as they are.
fn guard(inner: &Inner, request: &mut Request) -> Result<Option<Redaction>> {
    let mut texts: Vec<&mut String> = match &mut request.prompt {
        Prompt::Chat(messages) => messages.iter_mut().map(|m| &mut m.content).collect(),
        Prompt::Raw(text) => vec![text],
    };
    inner.privacy.apply(&inner.name, &mut texts)
}

fn restore(redaction: Option<&Redaction>, mut completion: Completion) -> Completion {
    if let Some(r) = redaction {
        completion.text = r.restore(&completion.text);
        completion.redactions.extend(r.replaced());
    }
    completion
}

#[async_trait::async_trait]
impl LanguageModel for RemoteModel {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn is_remote(&self) -> bool {
        true
    }

    async fn complete(&self, mut request: Request) -> Result<Completion> {
        request.sampling.check()?;
        let redaction = guard(&self.inner, &mut request)?;
        let inner = Arc::clone(&self.inner);
        let completion = off_thread(move || inner.complete(&request)).await?;
        Ok(restore(redaction.as_ref(), completion))
    }

    fn stream(&self, mut request: Request) -> TokenStream {
        if let Err(e) = request.sampling.check() {
            return TokenStream::failed(e);
        }
        let redaction = match guard(&self.inner, &mut request) {
            Ok(r) => r,
            Err(e) => return TokenStream::failed(e),
        };
        let (tx, rx) = mpsc::unbounded();
        let inner = Arc::clone(&self.inner);
        let spawned = std::thread::Builder::new().name("slm-remote".into()).spawn(move || {
            // Pieces go out as they come, with placeholders (a value split over pieces cannot be restored piece
            // by piece); the finished completion has the values back.
            let event = match inner.stream(&request, &tx) {
                Ok(c) => StreamEvent::Done(restore(redaction.as_ref(), c)),
                Err(e) => StreamEvent::Failed(e),
            };
            let _ = tx.unbounded_send(event);
        });
        match spawned {
            Ok(_) => TokenStream::new(rx),
            Err(e) => TokenStream::failed(remote_error(format!("cannot start a thread: {e}"))),
        }
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let mut texts = texts.to_vec();
        {
            let mut refs: Vec<&mut String> = texts.iter_mut().collect();
            self.inner.privacy.apply(&self.inner.name, &mut refs)?;
        }
        let inner = Arc::clone(&self.inner);
        off_thread(move || inner.embed(&texts)).await
    }
}
