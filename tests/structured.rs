//! Typed output on real models: every answer parses, validates and deserializes.

mod support;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use slm_agents::model::{Constraint, LanguageModel, LlamaModel, Message, Request};
use slm_agents::structured::{OutputSchema, StructuredExt};
use slm_agents::Error;

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct MeetingRequest {
    #[schemars(length(min = 1, max = 60))]
    title: String,
    #[schemars(regex(pattern = r"^20[0-9]{2}-[01][0-9]-[0-3][0-9]$"))]
    date: String,
    #[schemars(regex(pattern = r"^[0-2][0-9]:[0-5][0-9]$"))]
    start_time: String,
    #[schemars(range(min = 5, max = 480))]
    duration_minutes: u32,
    #[schemars(length(max = 8), inner(length(min = 1, max = 40)))]
    attendees: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
enum Sentiment {
    Positive,
    Negative,
    Neutral,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "action", rename_all = "snake_case")]
enum CalendarAction {
    Add {
        #[schemars(length(max = 60))]
        title: String,
        #[schemars(range(min = 1, max = 31))]
        day: u8,
    },
    Cancel {
        #[schemars(length(max = 60))]
        title: String,
    },
    List,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct City {
    #[schemars(length(max = 40))]
    name: String,
    #[schemars(length(max = 40))]
    country: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Trip {
    from: City,
    to: City,
    #[schemars(range(min = 1, max = 9))]
    travellers: u8,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Product {
    #[schemars(length(max = 50))]
    name: String,
    #[schemars(range(min = 0.0, max = 10000.0))]
    price: f64,
    discount_percent: Option<u8>,
    in_stock: bool,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Keywords {
    #[schemars(length(min = 1, max = 5), inner(length(max = 24)))]
    words: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Shape {
    Circle {
        #[schemars(range(min = 0.0, max = 1000.0))]
        radius: f64,
    },
    Rectangle {
        #[schemars(range(min = 0.0, max = 1000.0))]
        width: f64,
        #[schemars(range(min = 0.0, max = 1000.0))]
        height: f64,
    },
}

fn ask(system: &str, user: &str) -> Request {
    Request::chat([Message::system(format!("{system} Answer in JSON.")), Message::user(user)]).with_max_tokens(160)
}

async fn all_parse<T>(model: &LlamaModel, system: &str, prompts: &[&str]) -> Vec<String>
where
    T: JsonSchema + DeserializeOwned + Serialize + Send + 'static,
{
    let runs = prompts.iter().map(|p| model.generate_request::<T>(ask(system, p)));
    let mut failures = Vec::new();
    for (prompt, result) in prompts.iter().zip(futures::future::join_all(runs).await) {
        match result {
            Ok(g) => {
                // Round trip: the value serializes back to JSON that validates.
                let schema = OutputSchema::of::<T>().unwrap();
                let back = serde_json::to_value(&g.value).unwrap();
                assert!(jsonschema::is_valid(schema.validation_schema(), &back), "{prompt}: {back}");
            }
            Err(e) => failures.push(format!("{}: {prompt}: {e}", std::any::type_name::<T>())),
        }
    }
    failures
}

#[tokio::test]
async fn typed_output_parses_and_validates_for_every_prompt() {
    let model = support::smollm2();
    let mut failures = Vec::new();
    let mut total = 0;
    let mut run = |n: usize, f: Vec<String>| {
        total += n;
        failures.extend(f);
    };

    let p = [
        "Add a meeting with Dana tomorrow at 3pm for 30 minutes about the budget",
        "Lunch with Maya and Tom on 2026-12-03 at 12:30 for an hour",
        "Book a 15 minute standup every day at 9",
        "Schedule the quarterly review with Lee, Ann and Bo on December 10 at 14:00 for two hours",
        "Call the dentist next Monday morning",
    ];
    run(p.len(), all_parse::<MeetingRequest>(&model, "You turn requests into calendar entries.", &p).await);

    let p = [
        "I loved this film!",
        "The service was terribly slow.",
        "It arrived on Tuesday.",
        "Best pizza in town",
        "Meh.",
    ];
    run(p.len(), all_parse::<Sentiment>(&model, "Classify the sentiment of the text.", &p).await);

    let p = [
        "Add dentist on the 14th",
        "Cancel the team lunch",
        "What is on my calendar?",
        "Put yoga on day 3",
        "Drop the budget meeting",
    ];
    run(p.len(), all_parse::<CalendarAction>(&model, "Turn the request into a calendar action.", &p).await);

    let p = [
        "Two of us fly from Tel Aviv to St Petersburg",
        "I travel alone from Paris to Rome",
        "A family of four going from Boston, USA to Dublin, Ireland",
        "From Tokyo to Osaka with my wife",
    ];
    run(p.len(), all_parse::<Trip>(&model, "Extract the trip.", &p).await);

    let p =
        ["Blue kettle, 35 dollars, 10% off, available", "Sold out: leather jacket for 240", "USB cable 4.99 in stock"];
    run(p.len(), all_parse::<Product>(&model, "Extract the product listing.", &p).await);

    let p = [
        "Small language models run on phones.",
        "The weekend trip includes flights and hotels.",
        "Rust is fast and safe.",
    ];
    run(p.len(), all_parse::<Keywords>(&model, "List the keywords of the text.", &p).await);

    let p = ["a circle of radius 2", "a rectangle 3 by 4", "a round table 1.5 m across"];
    run(p.len(), all_parse::<Shape>(&model, "Describe the shape.", &p).await);

    assert!(total >= 25, "at least 25 prompts");
    assert!(failures.is_empty(), "{} of {total} failed:\n{}", failures.len(), failures.join("\n"));
}

#[tokio::test]
async fn typed_output_works_on_a_second_architecture() {
    // Gemma 3 270M: a base model (raw prompt) with a 262k-token vocabulary.
    let model = support::gemma();
    for text in ["Paris is in France.", "Berlin is in Germany.", "Madrid is in Spain."] {
        let request = Request::raw(format!("Text: {text}\nJSON with the city and its country: ")).with_max_tokens(60);
        let city = model.generate_request::<City>(request).await.unwrap().value;
        assert!(!city.name.is_empty() && city.name.len() <= 40);
    }
}

#[tokio::test]
async fn a_cut_off_answer_is_an_incomplete_error() {
    let model = support::smollm2();
    let request = ask("Extract the trip.", "Two of us fly from Tel Aviv to St Petersburg").with_max_tokens(6);
    let err = model.generate_request::<Trip>(request).await.unwrap_err();
    assert!(matches!(err, Error::Incomplete { completion_tokens: 6, .. }), "{err}");
    assert!(err.to_string().contains("Trip"), "{err}");
}

#[tokio::test]
async fn a_schema_that_cannot_become_a_grammar_is_a_typed_error() {
    let model = support::smollm2();
    let dangling = serde_json::json!({ "$ref": "#/$defs/Missing" });
    let request = Request::chat([Message::user("hi")]).with_constraint(Constraint::JsonSchema(dangling));
    let err = model.complete(request).await.unwrap_err();
    assert!(matches!(err, Error::Schema { .. }), "{err}");
}

#[tokio::test]
async fn constrained_regex_output_matches() {
    let model = support::smollm2();
    let request = Request::chat([Message::user("What is 6 times 7?")])
        .with_constraint(Constraint::Regex("[0-9]{1,3}".into()))
        .with_max_tokens(8);
    let out = model.complete(request).await.unwrap();
    assert!(!out.text.is_empty() && out.text.chars().all(|c| c.is_ascii_digit()), "{:?}", out.text);
}

#[tokio::test]
async fn works_through_a_trait_object() {
    let model: std::sync::Arc<dyn LanguageModel> = std::sync::Arc::new(support::smollm2());
    let s: Sentiment =
        model.generate(vec![Message::user("Sentiment of: 'What a lovely day!' Answer in JSON.")]).await.unwrap();
    assert!(matches!(s, Sentiment::Positive | Sentiment::Negative | Sentiment::Neutral));
}
