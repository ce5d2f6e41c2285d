//! Streaming generation.
//!
//! A model writes a stream through a [`StreamSender`]: text pieces go down a bounded channel, and the end
//! (the completion or the error) down a oneshot. Sending never blocks the model's thread: a piece that does
//! not fit waits in the sender and goes out with the next one, and whatever is still waiting when the
//! generation ends reaches the reader from the finished completion. So a reader that does not keep up costs
//! a bounded channel plus one string, never an unbounded queue.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::channel::{mpsc, oneshot};
use futures::future::BoxFuture;
use futures::{FutureExt, Stream};

use super::Completion;
use crate::{Error, Result};

/// Text pieces a stream holds for a slow reader before they are joined in the sender.
const CAPACITY: usize = 64;

/// The writing end of a [`TokenStream`].
#[derive(Debug)]
pub(crate) struct StreamSender {
    text: mpsc::Sender<String>,
    /// Text that did not fit in the channel yet.
    pending: String,
    end: oneshot::Sender<Result<Completion>>,
}

/// A new stream: the sender for the model, the receiving half for [`TokenStream::new`].
pub(crate) fn channel() -> (StreamSender, StreamReceiver) {
    let (text, pieces) = mpsc::channel(CAPACITY);
    let (end, done) = oneshot::channel();
    (StreamSender { text, pending: String::new(), end }, StreamReceiver { pieces: Some(pieces), done })
}

/// The reading end, held by a [`TokenStream`].
#[derive(Debug)]
pub(crate) struct StreamReceiver {
    pieces: Option<mpsc::Receiver<String>>,
    done: oneshot::Receiver<Result<Completion>>,
}

impl StreamSender {
    /// Whether the reader has gone (the stream was dropped).
    pub(crate) fn is_closed(&self) -> bool {
        self.end.is_canceled()
    }

    /// Sends a piece of text, or keeps it until there is room.
    pub(crate) fn text(&mut self, piece: &str) {
        self.pending.push_str(piece);
        if self.pending.is_empty() {
            return;
        }
        let text = std::mem::take(&mut self.pending);
        if let Err(e) = self.text.try_send(text) {
            if e.is_full() {
                self.pending = e.into_inner();
            }
        }
    }

    /// Ends the stream with the completion or the error.
    pub(crate) fn finish(mut self, result: Result<Completion>) {
        self.text("");
        let StreamSender { text, end, .. } = self;
        drop(text);
        let _ = end.send(result);
    }
}

/// A stream of generated text pieces, from [`LanguageModel::stream`](super::LanguageModel::stream).
///
/// Yields `Ok(piece)` for each piece of text (whole UTF-8 characters; stop strings are never yielded), or one
/// `Err` if generation fails. When it has ended, [`completion`](Self::completion) returns the whole completion
/// with its usage. Dropping the stream cancels the generation. The pieces always add up to the completion's
/// text; a reader that falls behind gets several tokens joined into one piece.
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
    receiver: Option<StreamReceiver>,
    /// Bytes of text yielded so far.
    yielded: usize,
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
    pub(crate) fn new(receiver: StreamReceiver) -> Self {
        Self {
            submit: None,
            receiver: Some(receiver),
            yielded: 0,
            error: None,
            completion: None,
            on_end: None,
            map: None,
        }
    }

    /// A stream whose request still has to be handed over by `submit` (for example, waiting for queue room).
    pub(crate) fn with_submit(receiver: StreamReceiver, submit: BoxFuture<'static, Result<()>>) -> Self {
        let mut stream = Self::new(receiver);
        stream.submit = Some(submit);
        stream
    }

    /// A stream of a completion made by `completion`: its whole text as one piece, then its end. For a model
    /// that cannot stream, to implement [`LanguageModel::stream`](super::LanguageModel::stream) with its
    /// `complete`:
    ///
    /// ```
    /// use slm_agents::model::{Completion, Request, TokenStream};
    ///
    /// # #[derive(Clone)] struct MyModel;
    /// # impl MyModel { async fn complete(&self, _r: Request) -> slm_agents::Result<Completion> { unimplemented!() } }
    /// # impl MyModel {
    /// fn stream(&self, request: Request) -> TokenStream {
    ///     let model = self.clone();
    ///     TokenStream::from_future(async move { model.complete(request).await })
    /// }
    /// # }
    /// ```
    pub fn from_future(completion: impl Future<Output = Result<Completion>> + Send + 'static) -> Self {
        let (mut sender, receiver) = channel();
        let submit = async move {
            match completion.await {
                Ok(c) => {
                    sender.text(&c.text);
                    sender.finish(Ok(c));
                }
                Err(e) => sender.finish(Err(e)),
            }
            Ok(())
        };
        Self::with_submit(receiver, Box::pin(submit))
    }

    pub(crate) fn failed(error: Error) -> Self {
        Self { submit: None, receiver: None, yielded: 0, error: Some(error), completion: None, on_end: None, map: None }
    }

    /// Passes the finished completion through `f` before it is stored and reported, after any function given
    /// before (a remote model's own restore runs first, then the run's).
    pub(crate) fn map_completion(mut self, f: impl FnOnce(Completion) -> Completion + Send + 'static) -> Self {
        self.map = Some(match self.map.take() {
            Some(first) => Box::new(move |c| f(first(c))),
            None => Box::new(f),
        });
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

    /// The finished completion (full text, finish reason and usage), once the stream has ended without error.
    pub fn completion(&self) -> Option<&Completion> {
        self.completion.as_ref()
    }

    /// Consumes the stream and returns the finished completion.
    pub async fn finish(self) -> Result<Completion> {
        self.finish_with(drop).await
    }

    /// Consumes the stream, passing each piece to `each`, and returns the finished completion.
    pub(crate) async fn finish_with(mut self, mut each: impl FnMut(String)) -> Result<Completion> {
        use futures::StreamExt;
        while let Some(item) = self.next().await {
            each(item?);
        }
        self.completion.take().ok_or(Error::WorkerStopped)
    }

    fn fail(&mut self, error: Error) -> Poll<Option<Result<String>>> {
        self.receiver = None;
        self.end(StreamEnd::Failed(&error));
        Poll::Ready(Some(Err(error)))
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
            return this.fail(error);
        }
        let Some(receiver) = this.receiver.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(pieces) = receiver.pieces.as_mut() {
            match Pin::new(pieces).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(piece)) => {
                    this.yielded += piece.len();
                    return Poll::Ready(Some(Ok(piece)));
                }
                Poll::Ready(None) => receiver.pieces = None,
            }
        }
        match receiver.done.poll_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(_)) => this.fail(Error::WorkerStopped),
            Poll::Ready(Ok(Err(error))) => this.fail(error),
            Poll::Ready(Ok(Ok(completion))) => {
                // Text the reader did not get as pieces (it fell behind): the rest of the completion's text.
                let rest = completion.text.get(this.yielded..).filter(|r| !r.is_empty()).map(str::to_owned);
                let completion = match this.map.take() {
                    Some(f) => f(completion),
                    None => completion,
                };
                this.end(StreamEnd::Finished(&completion));
                this.completion = Some(completion);
                this.receiver = None;
                match rest {
                    Some(rest) => {
                        this.yielded += rest.len();
                        Poll::Ready(Some(Ok(rest)))
                    }
                    None => Poll::Ready(None),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;
    use crate::model::{FinishReason, Usage};

    fn completion(text: &str) -> Completion {
        Completion {
            text: text.to_owned(),
            finish_reason: FinishReason::EndOfText,
            usage: Usage::default(),
            logprobs: None,
            redactions: Vec::new(),
        }
    }

    #[test]
    fn a_reader_that_falls_behind_holds_a_bounded_queue_and_still_gets_all_the_text() {
        let (mut tx, rx) = channel();
        let mut whole = String::new();
        for i in 0..1000 {
            let piece = format!("{i} ");
            tx.text(&piece);
            whole.push_str(&piece);
        }
        tx.finish(Ok(completion(&whole)));
        let pieces: Vec<String> =
            futures::executor::block_on(TokenStream::new(rx).map(|p| p.unwrap()).collect::<Vec<_>>());
        assert!(pieces.len() <= CAPACITY + 2, "{} pieces queued", pieces.len());
        assert_eq!(pieces.concat(), whole);
    }

    #[test]
    fn pieces_add_up_to_the_completion_and_errors_end_the_stream() {
        let (mut tx, rx) = channel();
        tx.text("Hello, ");
        tx.text("world");
        tx.finish(Ok(completion("Hello, world")));
        let mut stream = TokenStream::new(rx);
        let pieces: Vec<String> = futures::executor::block_on((&mut stream).map(|p| p.unwrap()).collect::<Vec<_>>());
        assert_eq!(pieces, ["Hello, ", "world"]);
        assert_eq!(stream.completion().unwrap().text, "Hello, world");

        let (tx, rx) = channel();
        tx.finish(Err(Error::WorkerStopped));
        let items: Vec<Result<String>> = futures::executor::block_on(TokenStream::new(rx).collect::<Vec<_>>());
        assert!(matches!(items.as_slice(), [Err(Error::WorkerStopped)]));
    }
}
