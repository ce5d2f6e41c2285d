//! Routing by rules: closures, keywords, regular expressions.

use regex::Regex;

use super::{Decision, Router};
use crate::run::RunContext;
use crate::{Error, Result};

type Rule = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Routes by the first rule that matches, in the order they were added; otherwise the fallback.
///
/// Confidence is 1 when a rule matched and 0 for the fallback.
pub struct RuleRouter<R> {
    rules: Vec<(Rule, R)>,
    fallback: R,
}

impl<R: std::fmt::Debug> std::fmt::Debug for RuleRouter<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleRouter").field("rules", &self.rules.len()).field("fallback", &self.fallback).finish()
    }
}

impl<R: Clone + Send + Sync + 'static> RuleRouter<R> {
    /// A router with no rules yet, sending everything to `fallback`.
    pub fn new(fallback: R) -> Self {
        Self { rules: Vec::new(), fallback }
    }

    /// Routes to `route` when `rule` returns true for the task.
    #[must_use]
    pub fn rule(
        mut self,
        name: impl Into<String>,
        rule: impl Fn(&str) -> bool + Send + Sync + 'static,
        route: R,
    ) -> Self {
        let name = name.into();
        self.rules.push((Box::new(move |t: &str| rule(t).then(|| format!("rule `{name}`"))), route));
        self
    }

    /// Routes to `route` when the task contains one of the keywords as a word (case-insensitive; a keyword
    /// also matches its plural and other endings: "flight" matches "flights").
    #[must_use]
    pub fn keywords<S: Into<String>>(mut self, keywords: impl IntoIterator<Item = S>, route: R) -> Self {
        let keywords: Vec<String> = keywords.into_iter().map(|k| k.into().to_lowercase()).collect();
        self.rules.push((
            Box::new(move |t: &str| {
                let text = t.to_lowercase();
                let words: Vec<&str> = text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).collect();
                keywords
                    .iter()
                    .find(|k| {
                        if k.contains(' ') {
                            text.contains(k.as_str())
                        } else {
                            words.iter().any(|w| w.starts_with(k.as_str()) && w.len() <= k.len() + 3)
                        }
                    })
                    .map(|k| format!("keyword `{k}`"))
            }),
            route,
        ));
        self
    }

    /// Routes to `route` when the regular expression matches the task.
    ///
    /// # Errors
    /// [`Error::InvalidSetting`] if the pattern is not a valid regular expression.
    pub fn regex(mut self, pattern: &str, route: R) -> Result<Self> {
        let regex = Regex::new(pattern)
            .map_err(|e| Error::InvalidSetting { setting: "router regex", reason: e.to_string() })?;
        let shown = pattern.to_owned();
        self.rules.push((Box::new(move |t: &str| regex.is_match(t).then(|| format!("pattern `{shown}`"))), route));
        Ok(self)
    }
}

#[async_trait::async_trait]
impl<R: Clone + Send + Sync + 'static> Router<R> for RuleRouter<R> {
    async fn route(&self, task: &str, _ctx: &RunContext) -> Result<Decision<R>> {
        for (rule, route) in &self.rules {
            if let Some(reason) = rule(task) {
                return Ok(Decision { route: route.clone(), confidence: 1.0, reason });
            }
        }
        Ok(Decision { route: self.fallback.clone(), confidence: 0.0, reason: "no rule matched".into() })
    }
}
