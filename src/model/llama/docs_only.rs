//! Stands in for `native/` when the crate is built without the `llama` feature under `--cfg docsrs`: the
//! public types keep their documentation, and nothing here can be reached (a [`Core`] cannot be made).

use std::path::Path;

use super::LlamaModelBuilder;
use crate::model::{Completion, Message, Request, TokenStream};
use crate::{Error, Result};

/// Has no values: without the engine no model can be loaded.
#[derive(Clone)]
pub(super) enum Core {}

pub(super) fn enable_native_logs() -> bool {
    false
}

impl Core {
    pub(super) fn load(_settings: LlamaModelBuilder) -> Result<Core> {
        Err(Error::Unavailable { what: "LlamaModel", feature: "llama" })
    }
    pub(super) fn name(&self) -> &str {
        match *self {}
    }
    pub(super) fn path(&self) -> &Path {
        match *self {}
    }
    pub(super) fn architecture(&self) -> &str {
        match *self {}
    }
    pub(super) fn has_chat_template(&self) -> bool {
        match *self {}
    }
    pub(super) fn threads(&self) -> usize {
        match *self {}
    }
    pub(super) fn lanes(&self) -> usize {
        match *self {}
    }
    pub(super) fn adapter(&self) -> Option<&str> {
        match *self {}
    }
    pub(super) fn slots(&self) -> usize {
        match *self {}
    }
    pub(super) fn batch_requests(&self) -> usize {
        match *self {}
    }
    pub(super) fn in_flight(&self) -> usize {
        match *self {}
    }
    pub(super) fn context_size(&self) -> usize {
        match *self {}
    }
    pub(super) fn render_chat(&self, _messages: &[Message]) -> Result<String> {
        match *self {}
    }
    pub(super) fn count_tokens(&self, _text: &str) -> usize {
        match *self {}
    }
    pub(super) fn with_adapter(&self, _adapter: &str, _scale: f32) -> Result<Core> {
        match *self {}
    }
    pub(super) async fn try_complete(&self, _request: Request) -> Result<Completion> {
        match *self {}
    }
    pub(super) async fn complete(&self, _request: Request) -> Result<Completion> {
        match *self {}
    }
    pub(super) fn stream(&self, _request: Request) -> TokenStream {
        match *self {}
    }
    pub(super) async fn embed(&self, _texts: &[String]) -> Result<Vec<Vec<f32>>> {
        match *self {}
    }
}
