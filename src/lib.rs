#![doc = include_str!("../docs/crate.md")]
#![deny(missing_docs)]
#![warn(unreachable_pub, clippy::unwrap_used, clippy::await_holding_lock)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod agent;
#[cfg(feature = "distill")]
#[cfg_attr(docsrs, doc(cfg(feature = "distill")))]
pub mod distill;
mod error;
pub mod eval;
// On docs.rs (no llama.cpp build), the module is documented from its pure-Rust side.
#[cfg(any(feature = "train", all(docsrs, feature = "distill")))]
#[cfg_attr(docsrs, doc(cfg(feature = "train")))]
pub mod finetune;
pub mod graph;
pub mod ledger;
#[cfg(feature = "mcp")]
#[cfg_attr(docsrs, doc(cfg(feature = "mcp")))]
pub mod mcp;
pub mod model;
pub mod privacy;
pub mod router;
pub mod run;
pub mod specialist;
pub mod structured;
pub mod tool;

pub use error::{Error, ErrorKind, RemoteError, RemoteErrorKind, Result};

/// The attribute for implementing the crate's async traits ([`Agent`](agent::Agent),
/// [`Specialist`](specialist::Specialist), [`Router`](router::Router), [`LanguageModel`](model::LanguageModel)),
/// re-exported so that hosts need no dependency of their own: `#[slm_agents::async_trait]`.
pub use async_trait::async_trait;

/// The items most programs need: `use slm_agents::prelude::*;`.
pub mod prelude {
    pub use crate::agent::Agent;
    pub use crate::graph::{Graph, Handle, Retry, RunReport};
    #[cfg(any(feature = "llama", docsrs))]
    pub use crate::model::LlamaModel;
    pub use crate::model::{
        Completion, Constraint, LanguageModel, Message, Request, Role, Sampling, TokenStream, Usage,
    };
    pub use crate::run::{MemoryRecorder, RunContext};
    pub use crate::specialist::{ModelSpecialist, Specialist, SpecialistCard};
    pub use crate::structured::{Generated, OutputSchema, StructuredExt};
    pub use crate::tool::{tool_fn, tool_fn_blocking, DynTool, Tool, ToolError, Toolbox};
    pub use crate::{Error, Result};
}
