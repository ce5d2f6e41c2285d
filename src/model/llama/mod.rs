//! Local GGUF models run in-process by llama.cpp (feature `llama`, on by default).
//!
//! [`LlamaModelBuilder`] holds the settings and checks them in Rust; [`LlamaModel`] is the handle the rest of
//! the crate and hosts use. Everything that names `llama_cpp_2` lives in `native/`, and none of its types
//! appear in the public API. Without the `llama` feature (docs.rs builds the docs that way, with `--cfg
//! docsrs`), `native/` is replaced by `docs_only.rs`, so these two types are still documented.

mod builder;
mod handle;
#[cfg(feature = "llama")]
mod native;
#[cfg(not(feature = "llama"))]
#[path = "docs_only.rs"]
mod native;

pub use builder::{FastForward, LlamaModelBuilder};
pub use handle::LlamaModel;
