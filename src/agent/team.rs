//! A team: a manager model plans, specialists do the steps (independent ones in parallel), a composer answers.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{Agent, BoxAgent, MapOutput};
use crate::graph::{Graph, Handle};
use crate::model::{LanguageModel, Message, Request};
use crate::run::{Parsed, RunContext};
use crate::specialist::Specialist;
use crate::structured::OutputSchema;
use crate::{Error, Result};

/// One step of a manager's plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PlanStep {
    /// The specialist that does it (one of the team's), or `"none"` when no specialist fits.
    pub specialist: String,
    /// The sub-task, in words.
    pub task: String,
    /// Earlier steps (0-based) whose results this step needs.
    pub needs: Vec<usize>,
}

/// A manager's plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Plan {
    /// The steps, in order.
    pub steps: Vec<PlanStep>,
}

/// What the composer is given: the request and every step's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TeamResults {
    /// The original request.
    pub request: String,
    /// The steps and their results.
    pub results: Vec<StepResult>,
}

/// One step's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StepResult {
    /// The specialist that did it.
    pub specialist: String,
    /// Its sub-task.
    pub task: String,
    /// What it answered (its typed output as JSON).
    pub result: Value,
}

/// A member as the team runs it: a task in words in, its answer as JSON out.
type MemberRun = BoxAgent<String, Value>;

struct Member {
    name: String,
    description: String,
    examples: Vec<String>,
    run: MemberRun,
}

/// A team of specialists led by a manager model.
///
/// The manager writes a [`Plan`] under a grammar (each step names one of the team's specialists — a closed
/// set — its sub-task and the earlier steps it needs); the plan runs as a task graph, independent steps in
/// parallel; the composer turns the results into the team's typed answer. A plan that is empty, refers to
/// later steps, or says no specialist fits (`"none"`) goes to the escalation agent when there is one, and is
/// otherwise an [`Error::Plan`].
///
/// Build one with [`Team::builder`]; a team is an [`Agent`], and so a graph node.
pub struct Team<O> {
    name: String,
    manager: Arc<dyn LanguageModel>,
    manager_prompt: Vec<Message>,
    members: Vec<Member>,
    plan_schema: OutputSchema,
    composer: Arc<dyn Agent<Input = TeamResults, Output = O>>,
    escalation: Option<Arc<dyn Agent<Input = String, Output = O>>>,
}

impl<O> std::fmt::Debug for Team<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Team")
            .field("name", &self.name)
            .field("members", &self.members.iter().map(|m| &m.name).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Team`]; from [`Team::builder`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct TeamBuilder<O> {
    name: String,
    manager: Option<Arc<dyn LanguageModel>>,
    instructions: String,
    members: Vec<Member>,
    examples: Vec<(String, Plan)>,
    composer: Option<Arc<dyn Agent<Input = TeamResults, Output = O>>>,
    escalation: Option<Arc<dyn Agent<Input = String, Output = O>>>,
    max_steps: usize,
}

impl<O> std::fmt::Debug for TeamBuilder<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TeamBuilder").field("name", &self.name).finish_non_exhaustive()
    }
}

impl<O: Clone + Send + Sync + 'static> Team<O> {
    /// Starts building a team named `name`.
    pub fn builder(name: impl Into<String>) -> TeamBuilder<O> {
        TeamBuilder {
            name: name.into(),
            manager: None,
            instructions: "You are the manager of a team of specialists. Split the request into steps, each done by \
                           one specialist. A step lists in `needs` the earlier steps (counted from 0) whose results it uses."
                .into(),
            members: Vec::new(),
            examples: Vec::new(),
            composer: None,
            escalation: None,
            max_steps: 6,
        }
    }
}

impl<O: Clone + Send + Sync + 'static> TeamBuilder<O> {
    /// The model that writes the plan (a small one does: the plan is grammar-constrained).
    pub fn manager(mut self, model: impl LanguageModel + 'static) -> Self {
        self.manager = Some(Arc::new(model));
        self
    }

    /// Replaces the manager's instructions (the list of specialists is added).
    pub fn instructions(mut self, instructions: impl Into<String>) -> Self {
        self.instructions = instructions.into();
        self
    }

    /// Adds a specialist that takes a task in words; its card tells the manager what it does.
    pub fn member<S>(mut self, specialist: S) -> Self
    where
        S: Specialist<Input = String> + 'static,
        S::Output: Serialize,
    {
        let card = specialist.card().clone();
        let run: MemberRun = Arc::new(MapOutput::new(specialist, |out: S::Output| {
            serde_json::to_value(out)
                .map_err(|e| Error::InvalidRequest { reason: format!("a result cannot be serialized: {e}") })
        }));
        self.members.push(Member { name: card.name, description: card.description, examples: card.examples, run });
        self
    }

    /// Adds a worked example of a request and its plan, shown to the manager (small models plan much better
    /// with one).
    pub fn plan_example(mut self, request: impl Into<String>, plan: Plan) -> Self {
        self.examples.push((request.into(), plan));
        self
    }

    /// The agent that writes the team's answer from the steps' results.
    pub fn composer(mut self, composer: impl Agent<Input = TeamResults, Output = O> + 'static) -> Self {
        self.composer = Some(Arc::new(composer));
        self
    }

    /// Where requests go when the plan is unusable (for example an agent on a large model).
    pub fn escalate_to(mut self, agent: impl Agent<Input = String, Output = O> + 'static) -> Self {
        self.escalation = Some(Arc::new(agent));
        self
    }

    /// The most steps a plan may have (default 6).
    pub fn max_steps(mut self, steps: usize) -> Self {
        self.max_steps = steps;
        self
    }

    /// Builds the team.
    ///
    /// # Errors
    /// [`Error::InvalidSetting`] without a manager, members or composer, or with members sharing a name.
    pub fn build(self) -> Result<Team<O>> {
        let missing = |what: &str| Error::InvalidSetting {
            setting: "team",
            reason: format!("team `{}` has no {what}", self.name),
        };
        let manager = self.manager.clone().ok_or_else(|| missing("manager"))?;
        let composer = self.composer.clone().ok_or_else(|| missing("composer"))?;
        if self.members.is_empty() {
            return Err(missing("members"));
        }
        let mut names: Vec<&str> = Vec::new();
        for m in &self.members {
            if m.name == "none" || names.contains(&m.name.as_str()) {
                return Err(Error::InvalidSetting {
                    setting: "team",
                    reason: format!("member name `{}` is reserved or repeated", m.name),
                });
            }
            names.push(&m.name);
        }
        let mut choices: Vec<Value> = names.iter().map(|n| json!(n)).collect();
        choices.push(json!("none"));
        let max = self.max_steps.max(1);
        // One schema per position, so that step i can only need steps 0..i: the grammar itself rules out
        // forward references (and so cycles).
        let step_schema = |i: usize| {
            let needs = if i == 0 {
                json!({ "type": "array", "maxItems": 0 })
            } else {
                json!({ "type": "array", "maxItems": i, "items": { "type": "integer", "minimum": 0, "maximum": i - 1 } })
            };
            json!({
                "type": "object",
                "properties": {
                    "specialist": { "enum": choices },
                    "task": { "type": "string", "minLength": 1, "maxLength": 200 },
                    "needs": needs
                },
                "required": ["specialist", "task", "needs"],
                "additionalProperties": false
            })
        };
        let schema = json!({
            "type": "object",
            "properties": {
                "steps": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": max,
                    "prefixItems": (0..max).map(step_schema).collect::<Vec<_>>(),
                    "items": false
                }
            },
            "required": ["steps"],
            "additionalProperties": false
        });
        let plan_schema = OutputSchema::from_value(format!("plan of {}", self.name), schema)?;
        let mut system = format!("{}\nSpecialists:\n", self.instructions.trim());
        for m in &self.members {
            system.push_str(&format!("- {}: {}", m.name, m.description));
            if let Some(e) = m.examples.first() {
                system.push_str(&format!(" (e.g. \"{e}\")"));
            }
            system.push('\n');
        }
        system.push_str("Use \"none\" if no specialist fits the request. Answer with the plan as JSON.");
        let mut prompt = vec![Message::system(system)];
        for (request, plan) in &self.examples {
            prompt.push(Message::user(request.clone()));
            prompt.push(Message::assistant(serde_json::to_string(plan).unwrap_or_default()));
        }
        Ok(Team {
            name: self.name,
            manager,
            manager_prompt: prompt,
            members: self.members,
            plan_schema,
            composer,
            escalation: self.escalation,
        })
    }
}

impl<O: Clone + Send + Sync + 'static> Team<O> {
    /// Asks the manager for a plan and checks it.
    ///
    /// # Errors
    /// [`Error::Plan`] when the plan is unusable; any error of the manager's model.
    pub async fn plan(&self, request: &str, ctx: &RunContext) -> Result<Plan> {
        let mut messages = self.manager_prompt.clone();
        messages.push(Message::user(request));
        let request = Request::chat(messages).with_constraint(self.plan_schema.constraint()).with_max_tokens(400);
        let caller = format!("{}/manager", self.name);
        ctx.model_call(&*self.manager)
            .caller(caller)
            .complete_parsed(request, |c| {
                let plan = self.plan_schema.parse::<Plan>(c)?;
                self.check(&plan)?;
                Ok(Parsed::value(plan).validated(true))
            })
            .await
            .map(|(_, plan)| plan)
    }

    fn check(&self, plan: &Plan) -> Result<()> {
        let bad = |reason: String| Err(Error::Plan { team: self.name.clone(), reason });
        if plan.steps.is_empty() {
            return bad("the plan has no steps".into());
        }
        for (i, step) in plan.steps.iter().enumerate() {
            if step.specialist == "none" {
                return bad(format!("step {i} ({:?}) fits no specialist", step.task));
            }
            if !self.members.iter().any(|m| m.name == step.specialist) {
                return bad(format!("step {i} names no member `{}`", step.specialist));
            }
            if let Some(n) = step.needs.iter().find(|&&n| n >= i) {
                return bad(format!("step {i} needs step {n}, which does not come before it"));
            }
        }
        Ok(())
    }

    /// Runs a checked plan as a task graph and returns every step's result.
    async fn execute(&self, request: &str, plan: &Plan, ctx: &RunContext) -> Result<Vec<StepResult>> {
        let mut g = Graph::builder::<Value>();
        let input = g.input();
        let mut handles: Vec<Handle<Value>> = Vec::with_capacity(plan.steps.len());
        for (i, step) in plan.steps.iter().enumerate() {
            let Some(member) = self.members.iter().find(|m| m.name == step.specialist) else {
                return Err(Error::Plan {
                    team: self.name.clone(),
                    reason: format!("no member `{}`", step.specialist),
                });
            };
            let mut deps = vec![input];
            deps.extend(step.needs.iter().map(|&n| handles[n]));
            let node = g
                .add(StepNode { run: Arc::clone(&member.run), task: step.task.clone(), needs: step.needs.clone() })
                .named(format!("{i}: {}", step.specialist))
                .after(&deps[..]);
            handles.push(node);
        }
        let all =
            g.add(|values: Vec<Value>| async move { Ok::<_, Error>(values) }).named("collect").after(&handles[..]);
        let graph = g.output(all).build()?;
        let values = graph.run(Value::String(request.to_owned()), ctx).await?;
        Ok(plan
            .steps
            .iter()
            .zip(values)
            .map(|(s, v)| StepResult { specialist: s.specialist.clone(), task: s.task.clone(), result: v })
            .collect())
    }
}

/// One step of a plan as a graph node: its task in words, with the request and the results it needs.
struct StepNode {
    run: MemberRun,
    task: String,
    needs: Vec<usize>,
}

#[async_trait::async_trait]
impl Agent for StepNode {
    type Input = Vec<Value>;
    type Output = Value;

    fn name(&self) -> String {
        "step".into()
    }

    async fn run(&self, values: Vec<Value>, ctx: &RunContext) -> Result<Value> {
        let mut text = self.task.clone();
        if let Some(Value::String(request)) = values.first() {
            text = format!("{text}\n(The whole request: {request})");
        }
        for (n, v) in self.needs.iter().zip(values.iter().skip(1)) {
            text.push_str(&format!("\nResult of step {n}: {v}"));
        }
        self.run.run(text, ctx).await
    }
}

#[async_trait::async_trait]
impl<O: Clone + Send + Sync + 'static> Agent for Team<O> {
    type Input = String;
    type Output = O;

    fn name(&self) -> String {
        self.name.clone()
    }

    async fn run(&self, request: String, ctx: &RunContext) -> Result<O> {
        use tracing::Instrument;
        let span = crate::run::spans::invoke_agent(ctx, &self.name);
        let result = self.run_team(request, ctx).instrument(span.clone()).await;
        if let Err(e) = &result {
            crate::run::spans::failed(&span, e);
        }
        result
    }
}

impl<O: Clone + Send + Sync + 'static> Team<O> {
    async fn run_team(&self, request: String, ctx: &RunContext) -> Result<O> {
        let plan = match self.plan(&request, ctx).await {
            Ok(plan) => plan,
            Err(e) if e.is_invalid_output() => {
                return match &self.escalation {
                    Some(agent) => {
                        tracing::info!(team = %self.name, reason = %e, "escalating");
                        let ctx = ctx.escalated(format!("the manager of `{}` could not plan: {e}", self.name));
                        agent.run(request, &ctx).await
                    }
                    None => Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        tracing::debug!(team = %self.name, steps = plan.steps.len(), "plan");
        let results = self.execute(&request, &plan, ctx).await?;
        self.composer.run(TeamResults { request, results }, ctx).await
    }
}
