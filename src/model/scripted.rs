//! A deterministic stand-in model for unit tests of orchestration logic (feature `test-util`).

use std::collections::VecDeque;
use std::sync::Mutex;

use super::{Completion, FinishReason, LanguageModel, Request, TokenStream, Usage};
use crate::{Error, Result};

/// A model that answers with scripted texts, in order, and remembers the requests it got.
///
/// For tests of orchestration (tool loops, graphs, routers) where a real model's choices would make the test
/// about the model. It does not check constraints: script valid outputs. Features of the crate are always also
/// tested on a real GGUF model.
///
/// ```
/// # use slm_agents::model::{LanguageModel, Request, ScriptedModel};
/// let model = ScriptedModel::new(["first", "second"]);
/// let a = futures::executor::block_on(model.complete(Request::raw("hi"))).unwrap();
/// assert_eq!(a.text, "first");
/// assert_eq!(model.requests().len(), 1);
/// ```
#[derive(Debug, Default)]
pub struct ScriptedModel {
    replies: Mutex<VecDeque<String>>,
    requests: Mutex<Vec<Request>>,
}

impl ScriptedModel {
    /// A model that will answer these texts, one per request.
    pub fn new<S: Into<String>>(replies: impl IntoIterator<Item = S>) -> Self {
        Self { replies: Mutex::new(replies.into_iter().map(Into::into).collect()), requests: Mutex::default() }
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn next(&self, request: Request) -> Result<Completion> {
        self.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(request);
        let text = self
            .replies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop_front()
            .ok_or_else(|| Error::InvalidRequest { reason: "the scripted model has no replies left".into() })?;
        let completion_tokens = text.split_whitespace().count().max(1);
        Ok(Completion {
            text,
            finish_reason: FinishReason::EndOfText,
            usage: Usage { completion_tokens, ..Usage::default() },
            logprobs: None,
            redactions: Vec::new(),
        })
    }
}

#[async_trait::async_trait]
impl LanguageModel for ScriptedModel {
    fn name(&self) -> &str {
        "scripted"
    }

    fn provider(&self) -> &str {
        "scripted"
    }

    fn streams_tokens(&self) -> bool {
        true
    }

    async fn complete(&self, request: Request) -> Result<Completion> {
        self.next(request)
    }

    fn stream(&self, request: Request) -> TokenStream {
        let (mut tx, rx) = super::stream::channel();
        match self.next(request) {
            Ok(c) => {
                tx.text(&c.text);
                tx.finish(Ok(c));
                TokenStream::new(rx)
            }
            Err(e) => TokenStream::failed(e),
        }
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        // A bag-of-bytes vector: deterministic, and similar texts land near each other.
        Ok(texts
            .iter()
            .map(|t| {
                let mut v = vec![0f32; 64];
                for b in t.to_lowercase().bytes() {
                    v[usize::from(b) % 64] += 1.0;
                }
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
                v.into_iter().map(|x| x / n).collect()
            })
            .collect())
    }
}
