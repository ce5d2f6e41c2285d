//! Routing by a small model's choice: only valid route names can come out.

use std::sync::Arc;

use super::{Decision, Router};
use crate::model::{Constraint, LanguageModel, Message, Request};
use crate::run::{Parsed, RunContext};
use crate::{Error, Result};

/// A small model reads the routes' descriptions and picks one name, under a grammar that allows only the
/// route names. Confidence is the probability the model gave the chosen name (the product of its tokens'
/// probabilities over what the grammar allowed, so the confidences of all routes add up to 1).
///
/// ```no_run
/// use slm_agents::model::LlamaModel;
/// use slm_agents::router::{ModelRouter, Router};
/// use slm_agents::run::RunContext;
///
/// # async fn demo() -> slm_agents::Result<()> {
/// let slm = LlamaModel::builder("models/SmolLM2-135M-Instruct.Q4_1.gguf").load()?;
/// let router = ModelRouter::builder(slm)
///     .route("flights", "flights", "finds and books flights")
///     .route("hotels", "hotels", "finds and books hotels")
///     .route("other", "other", "anything else")
///     .build()?;
/// let d = router.route("a room in Rome for two nights", &RunContext::new()).await?;
/// println!("{} ({:.2}): {}", d.route, d.confidence, d.reason);
/// # Ok(()) }
/// ```
pub struct ModelRouter<R> {
    model: Arc<dyn LanguageModel>,
    routes: Vec<(R, String)>,
    /// The system prompt, then the worked examples as user and assistant turns.
    prefix: Vec<Message>,
    pattern: String,
}

impl<R: std::fmt::Debug> std::fmt::Debug for ModelRouter<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelRouter").field("routes", &self.routes).finish_non_exhaustive()
    }
}

/// Builds a [`ModelRouter`]; from [`ModelRouter::builder`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct ModelRouterBuilder<R> {
    model: Arc<dyn LanguageModel>,
    routes: Vec<(R, String, String)>,
    instructions: String,
    examples: Vec<(String, String)>,
}

impl<R: std::fmt::Debug> std::fmt::Debug for ModelRouterBuilder<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelRouterBuilder").field("routes", &self.routes).finish_non_exhaustive()
    }
}

impl<R: Clone + Send + Sync + 'static> ModelRouter<R> {
    /// Starts a router that asks `model`.
    pub fn builder(model: impl LanguageModel + 'static) -> ModelRouterBuilder<R> {
        ModelRouterBuilder {
            model: Arc::new(model),
            routes: Vec::new(),
            instructions: "You send each request to the one desk that handles it.".into(),
            examples: Vec::new(),
        }
    }
}

impl<R: Clone + Send + Sync + 'static> ModelRouterBuilder<R> {
    /// Adds a route: its value, the name the model writes (letters, digits, `_`, `-`) and what it handles.
    pub fn route(mut self, route: R, name: impl Into<String>, description: impl Into<String>) -> Self {
        self.routes.push((route, name.into(), description.into()));
        self
    }

    /// Replaces the opening instruction of the prompt.
    pub fn instructions(mut self, instructions: impl Into<String>) -> Self {
        self.instructions = instructions.into();
        self
    }

    /// Adds a worked example (a request and the name of its route) to the prompt.
    pub fn example(mut self, request: impl Into<String>, route_name: impl Into<String>) -> Self {
        self.examples.push((request.into(), route_name.into()));
        self
    }

    /// Builds the router.
    ///
    /// # Errors
    /// [`Error::InvalidSetting`] with fewer than two routes, repeated or badly formed names, or an example that
    /// names no route.
    pub fn build(self) -> Result<ModelRouter<R>> {
        if self.routes.len() < 2 {
            return Err(Error::InvalidSetting {
                setting: "routes",
                reason: "a model router needs two routes or more".into(),
            });
        }
        let mut names: Vec<&str> = Vec::new();
        for (_, name, _) in &self.routes {
            if name.is_empty()
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                || names.contains(&name.as_str())
            {
                return Err(Error::InvalidSetting {
                    setting: "route name",
                    reason: format!("`{name}` is empty, repeated or not a plain name"),
                });
            }
            names.push(name);
        }
        for (request, name) in &self.examples {
            if !names.contains(&name.as_str()) {
                return Err(Error::InvalidSetting {
                    setting: "router example",
                    reason: format!("{request:?} names no route `{name}`"),
                });
            }
        }
        let mut system = format!("{}\nDesks:\n", self.instructions.trim());
        for (_, name, description) in &self.routes {
            system.push_str(&format!("- {name}: {description}\n"));
        }
        system.push_str("Answer with the desk's name only.");
        // Worked examples as chat turns: small chat models follow turns better than a list in the prompt.
        let mut prefix = vec![Message::system(system)];
        for (request, name) in &self.examples {
            prefix.push(Message::user(request.clone()));
            prefix.push(Message::assistant(name.clone()));
        }
        let pattern = names.iter().map(|n| regex::escape(n)).collect::<Vec<_>>().join("|");
        Ok(ModelRouter {
            model: self.model,
            routes: self.routes.into_iter().map(|(r, n, _)| (r, n)).collect(),
            prefix,
            pattern: format!("({pattern})"),
        })
    }
}

#[async_trait::async_trait]
impl<R: Clone + Send + Sync + 'static> Router<R> for ModelRouter<R> {
    async fn route(&self, task: &str, ctx: &RunContext) -> Result<Decision<R>> {
        let mut messages = self.prefix.clone();
        messages.push(Message::user(task));
        let request = Request::chat(messages)
            .with_constraint(Constraint::Regex(self.pattern.clone()))
            .with_logprobs()
            .with_max_tokens(16);
        let (completion, route) = ctx
            .model_call(&*self.model)
            .caller("router")
            .complete_parsed(request, |c| {
                let name = c.text.trim();
                let route = self.routes.iter().find(|(_, n)| n == name).map(|(r, _)| r.clone()).ok_or_else(|| {
                    Error::Validation {
                        type_name: "route".into(),
                        reason: "not one of the route names".into(),
                        output: c.text.clone(),
                    }
                })?;
                Ok(Parsed::value(route).validated(true))
            })
            .await?;
        let name = completion.text.trim();
        // Without log-probabilities (a model that does not report them), the choice is all we know.
        let confidence = completion
            .logprobs
            .as_ref()
            .map_or(1.0, |lps| lps.iter().map(|t| f64::from(t.logprob)).sum::<f64>().exp() as f32)
            .clamp(0.0, 1.0);
        Ok(Decision {
            route,
            confidence,
            reason: format!("{} chose `{name}` with probability {confidence:.2}", self.model.name()),
        })
    }
}
