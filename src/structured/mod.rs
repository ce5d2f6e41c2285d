//! Typed output: a Rust type's JSON Schema becomes a decoding constraint, and the output is validated and
//! deserialized.
//!
//! For any `T: JsonSchema + DeserializeOwned`, [`StructuredExt::generate`] derives `T`'s JSON Schema with
//! schemars, tightens it for decoding ([`OutputSchema`]), generates under that constraint, validates the text
//! against the schema with `jsonschema` and deserializes it. Because every token is checked against the
//! grammar while it is generated, even a 135M-parameter model cannot produce malformed JSON.
//!
//! ```no_run
//! use schemars::JsonSchema;
//! use serde::Deserialize;
//! use slm_agents::model::{LlamaModel, Message};
//! use slm_agents::structured::StructuredExt;
//!
//! #[derive(Debug, Deserialize, JsonSchema)]
//! struct City {
//!     name: String,
//!     country: String,
//! }
//!
//! # async fn demo() -> slm_agents::Result<()> {
//! let model = LlamaModel::builder("models/SmolLM2-135M-Instruct.Q4_1.gguf").load()?;
//! let city: City = model.generate(vec![Message::user("Which city is the capital of France?")]).await?;
//! # Ok(()) }
//! ```

mod schema;

pub(crate) use schema::short_type_name;

pub use schema::{inline_schema_for, OutputSchema, DEFAULT_MAX_ITEMS, DEFAULT_MAX_STRING, DEFAULT_NUMBER_BOUND};

use serde::de::DeserializeOwned;

use crate::model::{Completion, LanguageModel, Message, Request};
use crate::Result;

/// A typed value together with the completion it was parsed from (text and usage).
#[derive(Debug, Clone)]
pub struct Generated<T> {
    /// The parsed value.
    pub value: T,
    /// The raw completion: the JSON text, finish reason and usage.
    pub completion: Completion,
}

/// Typed generation on any [`LanguageModel`], including `Arc<dyn LanguageModel>`.
///
/// ```no_run
/// use schemars::JsonSchema;
/// use serde::Deserialize;
/// use slm_agents::model::{LlamaModel, Message, Request};
/// use slm_agents::structured::StructuredExt;
///
/// #[derive(Debug, Deserialize, JsonSchema)]
/// enum Sentiment {
///     Positive,
///     Negative,
///     Neutral,
/// }
///
/// # async fn demo() -> slm_agents::Result<()> {
/// let model = LlamaModel::builder("models/SmolLM2-135M-Instruct.Q4_1.gguf").load()?;
/// let mood: Sentiment = model.generate(vec![Message::user("Sentiment of 'I loved it!'?")]).await?;
/// let request = Request::chat([Message::user("Sentiment of 'meh'?")]).with_max_tokens(8);
/// let generated = model.generate_request::<Sentiment>(request).await?;
/// println!("{:?} in {} tokens", generated.value, generated.completion.usage.completion_tokens);
/// # Ok(()) }
/// ```
#[async_trait::async_trait]
pub trait StructuredExt: LanguageModel {
    /// Generates a `T` from chat messages: greedy decoding, at most 512 tokens.
    ///
    /// # Errors
    /// [`Error::Schema`](crate::Error::Schema) if `T`'s schema cannot become a grammar;
    /// [`Error::Incomplete`](crate::Error::Incomplete) if the token limit cut the output short;
    /// [`Error::Validation`](crate::Error::Validation) or [`Error::Deserialize`](crate::Error::Deserialize) if
    /// the output does not match (which the constraint should make impossible); any error of the model.
    async fn generate<T>(&self, messages: Vec<Message>) -> Result<T>
    where
        T: schemars::JsonSchema + DeserializeOwned + Send + 'static,
    {
        let request = Request::chat(messages).with_max_tokens(512);
        Ok(self.generate_request::<T>(request).await?.value)
    }

    /// Generates a `T` for a full request (sampling, limits, stop strings are kept; any constraint is replaced
    /// by `T`'s schema) and returns it with its completion.
    ///
    /// # Errors
    /// As [`generate`](Self::generate).
    async fn generate_request<T>(&self, request: Request) -> Result<Generated<T>>
    where
        T: schemars::JsonSchema + DeserializeOwned + Send + 'static,
    {
        let schema = OutputSchema::of::<T>()?;
        let completion = self.complete(request.with_constraint(schema.constraint())).await.map_err(|e| match e {
            crate::Error::Schema { reason, .. } => {
                crate::Error::Schema { type_name: schema.type_name().to_owned(), reason }
            }
            other => other,
        })?;
        let value = schema.parse::<T>(&completion)?;
        Ok(Generated { value, completion })
    }
}

impl<M: LanguageModel + ?Sized> StructuredExt for M {}
