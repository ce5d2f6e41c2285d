//! Streaming generation.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::channel::mpsc;
use futures::future::BoxFuture;
use futures::Stream;

use super::Completion;
use crate::{Error, Result};

/// What a model sends down a stream.
#[derive(Debug)]
pub(crate) enum StreamEvent {
    /// A piece of generated text.
    Text(String),
    /// Generation finished.
    Done(Completion),
    /// Generation failed.
    Failed(Error),
}

/// A stream of generated text pieces, from [`LanguageModel::stream`](super::LanguageModel::stream).
///
/// Yields `Ok(piece)` for each piece of text (whole UTF-8 characters; stop strings are never yielded), or one
/// `Err` if generation fails. When it has ended, [`completion`](Self::completion) returns the whole completion
/// with its usage. Dropping the stream cancels the generation.
///
/// ```no_run
/// # async fn demo(model: &slm_agents::model::LlamaModel) -> slm_agents::Result<()> {
/// use futures::StreamExt;
/// use slm_agents::model::{LanguageModel, Message, Request};
///
/// let mut stream = model.stream(Request::chat([Message::user("Hello!")]));
/// while let Some(piece) = stream.next().await {
///     print!("{}", piece?);
/// }
/// let usage = stream.completion().expect("finished").usage;
/// # Ok(()) }
/// ```
#[must_use = "a stream does nothing unless polled"]
pub struct TokenStream {
    submit: Option<BoxFuture<'static, Result<()>>>,
    events: Option<mpsc::UnboundedReceiver<StreamEvent>>,
    error: Option<Error>,
    completion: Option<Completion>,
    on_end: Option<OnEnd>,
    map: Option<Box<dyn FnOnce(Completion) -> Completion + Send>>,
}

/// How a stream ended, for [`TokenStream::on_end`].
pub(crate) enum StreamEnd<'a> {
    Finished(&'a Completion),
    Failed(&'a Error),
    /// Dropped before it ended.
    Dropped,
}

type OnEnd = Box<dyn FnOnce(StreamEnd<'_>) + Send>;

impl Drop for TokenStream {
    fn drop(&mut self) {
        if let Some(f) = self.on_end.take() {
            f(StreamEnd::Dropped);
        }
    }
}

impl std::fmt::Debug for TokenStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenStream").field("completion", &self.completion).finish_non_exhaustive()
    }
}

impl TokenStream {
    pub(crate) fn new(events: mpsc::UnboundedReceiver<StreamEvent>) -> Self {
        Self { submit: None, events: Some(events), error: None, completion: None, on_end: None, map: None }
    }

    /// Passes the finished completion through `f` before it is stored and reported.
    pub(crate) fn map_completion(mut self, f: impl FnOnce(Completion) -> Completion + Send + 'static) -> Self {
        self.map = Some(Box::new(f));
        self
    }

    /// Calls `f` once when the stream ends: finished, failed, or dropped before its end.
    pub(crate) fn on_end(mut self, f: impl FnOnce(StreamEnd<'_>) + Send + 'static) -> Self {
        self.on_end = Some(Box::new(f));
        self
    }

    fn end(&mut self, how: StreamEnd<'_>) {
        if let Some(f) = self.on_end.take() {
            f(how);
        }
    }

    /// A stream whose request still has to be handed over by `submit` (for example, waiting for queue room).
    #[cfg_attr(not(feature = "llama"), allow(dead_code))]
    pub(crate) fn with_submit(
        events: mpsc::UnboundedReceiver<StreamEvent>,
        submit: BoxFuture<'static, Result<()>>,
    ) -> Self {
        Self { submit: Some(submit), events: Some(events), error: None, completion: None, on_end: None, map: None }
    }

    pub(crate) fn failed(error: Error) -> Self {
        Self { submit: None, events: None, error: Some(error), completion: None, on_end: None, map: None }
    }

    /// The finished completion (full text, finish reason and usage), once the stream has ended without error.
    pub fn completion(&self) -> Option<&Completion> {
        self.completion.as_ref()
    }

    /// Consumes the stream and returns the finished completion.
    pub async fn finish(mut self) -> Result<Completion> {
        use futures::StreamExt;
        while let Some(item) = self.next().await {
            item?;
        }
        self.completion.take().ok_or(Error::WorkerStopped)
    }
}

impl Stream for TokenStream {
    type Item = Result<String>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(submit) = this.submit.as_mut() {
            match submit.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) => this.submit = None,
                Poll::Ready(Err(e)) => {
                    this.submit = None;
                    this.error = Some(e);
                }
            }
        }
        if let Some(error) = this.error.take() {
            this.events = None;
            this.end(StreamEnd::Failed(&error));
            return Poll::Ready(Some(Err(error)));
        }
        let Some(events) = this.events.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(events).poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(StreamEvent::Text(text))) => Poll::Ready(Some(Ok(text))),
            Poll::Ready(Some(StreamEvent::Done(completion))) => {
                let completion = match this.map.take() {
                    Some(f) => f(completion),
                    None => completion,
                };
                this.end(StreamEnd::Finished(&completion));
                this.completion = Some(completion);
                this.events = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(StreamEvent::Failed(error))) => {
                this.events = None;
                this.end(StreamEnd::Failed(&error));
                Poll::Ready(Some(Err(error)))
            }
            Poll::Ready(None) => {
                this.events = None;
                let error = Error::WorkerStopped;
                this.end(StreamEnd::Failed(&error));
                Poll::Ready(Some(Err(error)))
            }
        }
    }
}
