//! Teams: a manager plans, specialists do the steps, a composer answers; unusable plans escalate.

mod support;

use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use slm_agents::agent::{Plan, PlanStep, Team, TeamResults};
use slm_agents::model::ScriptedModel;
use slm_agents::prelude::*;
use slm_agents::run::Outcome;
use slm_agents::Error;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct Note {
    #[schemars(length(max = 80))]
    text: String,
}

fn answer(text: &str) -> String {
    serde_json::json!({ "answer": { "text": text } }).to_string()
}

fn member(name: &str, description: &str, model: Arc<ScriptedModel>) -> ModelSpecialist<String, Note> {
    ModelSpecialist::builder(name).description(description).model_arc(model).output::<Note>().build().unwrap()
}

struct Fallback;

#[async_trait::async_trait]
impl Agent for Fallback {
    type Input = String;
    type Output = Note;
    fn name(&self) -> String {
        "large model".into()
    }
    async fn run(&self, input: String, _ctx: &RunContext) -> slm_agents::Result<Note> {
        Ok(Note { text: format!("escalated: {input}") })
    }
}

fn team(plan: &str, escalate: bool) -> (Team<Note>, Arc<ScriptedModel>) {
    let flights = Arc::new(ScriptedModel::new([answer("SL311 at 08:10")]));
    let hotels = Arc::new(ScriptedModel::new([answer("Neva View, 95 EUR")]));
    let composer_model = Arc::new(ScriptedModel::new([answer("Fly SL311, sleep at Neva View")]));
    let composer = ModelSpecialist::builder("secretary")
        .model_arc(composer_model.clone())
        .input::<TeamResults>()
        .output::<Note>()
        .build()
        .unwrap();
    let mut b = Team::builder("travel")
        .manager(ScriptedModel::new([plan]))
        .member(member("flights", "finds flights", flights))
        .member(member("hotels", "finds hotels", hotels))
        .composer(composer);
    if escalate {
        b = b.escalate_to(Fallback);
    }
    (b.build().unwrap(), composer_model)
}

#[tokio::test]
async fn a_plan_runs_its_steps_and_the_composer_gets_every_result() {
    let plan = r#"{"steps": [{"specialist": "flights", "task": "flights to St Petersburg", "needs": []},
                             {"specialist": "hotels", "task": "a hotel for two nights", "needs": [0]}]}"#;
    let (team, composer) = team(plan, false);
    let events = Arc::new(MemoryRecorder::default());
    let note =
        team.run("weekend in St Petersburg".into(), &RunContext::new().with_recorder(events.clone())).await.unwrap();
    assert_eq!(note.text, "Fly SL311, sleep at Neva View");
    // The composer saw both results.
    let prompt = format!("{:?}", composer.requests()[0].prompt);
    assert!(prompt.contains("SL311") && prompt.contains("Neva View"), "{prompt}");
    let who: Vec<String> = events.model_calls().into_iter().map(|m| m.specialist).collect();
    assert!(
        who.contains(&"travel/manager".to_string())
            && who.contains(&"flights".to_string())
            && who.contains(&"hotels".to_string())
    );
}

#[tokio::test]
async fn a_plan_naming_no_fitting_specialist_escalates_or_fails_clearly() {
    let plan = r#"{"steps": [{"specialist": "none", "task": "explain baroque architecture", "needs": []}]}"#;
    let (with, _) = team(plan, true);
    let note = with.run("tell me about the Baroque".into(), &RunContext::new()).await.unwrap();
    assert_eq!(note.text, "escalated: tell me about the Baroque");
    let (without, _) = team(plan, false);
    let err = without.run("tell me about the Baroque".into(), &RunContext::new()).await.unwrap_err();
    assert!(
        matches!(&err, Error::Plan { team, reason } if team == "travel" && reason.contains("fits no specialist")),
        "{err}"
    );
}

#[tokio::test]
async fn an_escalation_is_recorded_on_the_calls_it_makes_with_the_reason() {
    let plan = r#"{"steps": [{"specialist": "none", "task": "explain baroque architecture", "needs": []}]}"#;
    let large = ModelSpecialist::builder("large model")
        .model(ScriptedModel::new([answer("Baroque: curves, light, drama")]))
        .output::<Note>()
        .build()
        .unwrap();
    let team = Team::builder("travel")
        .manager(ScriptedModel::new([plan]))
        .member(member("flights", "finds flights", Arc::new(ScriptedModel::new([answer("-")]))))
        .composer(member_composer())
        .escalate_to(large)
        .build()
        .unwrap();
    let events = Arc::new(MemoryRecorder::default());
    let note = team.run("tell me about the Baroque".into(), &RunContext::new().with_recorder(events.clone())).await;
    assert_eq!(note.unwrap().text, "Baroque: curves, light, drama");
    let calls = events.model_calls();
    let manager = calls.iter().find(|c| c.specialist == "travel/manager").unwrap();
    assert!(manager.escalation.is_none());
    assert!(matches!(&manager.outcome, Outcome::Failed { error } if error.contains("fits no specialist")));
    let escalated = calls.iter().find(|c| c.specialist == "large model").unwrap();
    let why = escalated.escalation.as_deref().expect("recorded as escalated");
    assert!(why.contains("could not plan") && why.contains("fits no specialist"), "{why}");
}

fn member_composer() -> ModelSpecialist<TeamResults, Note> {
    ModelSpecialist::builder("secretary")
        .model(ScriptedModel::new([answer("-")]))
        .input::<TeamResults>()
        .output::<Note>()
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_plan_whose_steps_need_later_steps_is_refused_or_escalated() {
    // The grammar gives step i a `needs` of at most steps 0..i, so a constrained manager cannot write this; a
    // model that ignores constraints (the scripted one here) is caught by validation.
    let plan = r#"{"steps": [{"specialist": "flights", "task": "x", "needs": [1]}, {"specialist": "hotels", "task": "y", "needs": []}]}"#;
    let (without, _) = team(plan, false);
    let err = without.run("r".into(), &RunContext::new()).await.unwrap_err();
    assert!(matches!(&err, Error::Validation { type_name, .. } if type_name == "plan of travel"), "{err}");
    let (with, _) = team(plan, true);
    assert_eq!(with.run("r".into(), &RunContext::new()).await.unwrap().text, "escalated: r");
}

#[tokio::test]
async fn a_small_model_manager_writes_a_plan_of_team_members() {
    let model = support::smollm2();
    let specialist = |name: &str, description: &str, example: &str| {
        ModelSpecialist::builder(name)
            .description(description)
            .example(example)
            .model(model.clone())
            .instructions(format!("You are the {name} specialist. Answer in one short sentence."))
            .output::<Note>()
            .max_tokens(64)
            .build()
            .unwrap()
    };
    let secretary = ModelSpecialist::builder("secretary")
        .model(model.clone())
        .instructions("You write one short summary of the team's results.")
        .input::<TeamResults>()
        .output::<Note>()
        .max_tokens(64)
        .build()
        .unwrap();
    let step = |s: &str, t: &str, needs: Vec<usize>| PlanStep { specialist: s.into(), task: t.into(), needs };
    let team = Team::builder("travel")
        .manager(model.clone())
        .member(specialist("flights", "finds flights between cities", "a flight from Paris to Rome"))
        .member(specialist("hotels", "finds hotels in a city", "a hotel in Berlin for two nights"))
        .member(specialist("guide", "suggests sights to visit", "what to see in Lisbon"))
        .plan_example(
            "Plan two days in Rome from Paris",
            Plan {
                steps: vec![
                    step("flights", "flight from Paris to Rome", vec![]),
                    step("hotels", "hotel in Rome for one night", vec![]),
                    step("guide", "sights in Rome", vec![]),
                ],
            },
        )
        .composer(secretary)
        .build()
        .unwrap();
    let ctx = RunContext::new();
    let plan = team.plan("Plan me a weekend in St Petersburg from Tel Aviv", &ctx).await.unwrap();
    assert!(!plan.steps.is_empty());
    for s in &plan.steps {
        assert!(["flights", "hotels", "guide"].contains(&s.specialist.as_str()), "{plan:?}");
    }
    let note = team.run("Plan me a weekend in St Petersburg from Tel Aviv".into(), &ctx).await.unwrap();
    assert!(!note.text.is_empty());
}
