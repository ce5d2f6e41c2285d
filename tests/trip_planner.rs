//! The trip planner of `examples/trip_planner` on the real model: the plan's structure, every entry taken
//! from the bundled data, and the ledger of the run; open questions go to the open-question agent, and to a
//! large model over HTTP (escalated, with the router's reason) when one is given.

mod support;
#[allow(dead_code)]
#[path = "../examples/trip_planner/trip.rs"]
mod trip;

use std::sync::Arc;

use slm_agents::ledger::{read_jsonl, CostModel, JsonlLedger, Price, Report};
use slm_agents::model::RemoteModel;
use slm_agents::prelude::*;
use slm_agents::run::{NodeEvent, RunEvent};
use trip::{City, Planner, Reply, TripData, Weekday};

fn planner(llm: Option<Arc<dyn LanguageModel>>) -> (Planner, Arc<TripData>) {
    let data = Arc::new(TripData::load(&trip::data_dir()).unwrap());
    (Planner { data: Arc::clone(&data), home: City::TelAviv, llm }, data)
}

#[tokio::test]
async fn a_weekend_in_st_petersburg_is_planned_from_the_bundled_data() {
    let (planner, data) = planner(None);
    let graph = planner.graph(&support::smollm2()).unwrap();
    let path = support::scratch_dir("trip").join("ledger.jsonl");
    let _ = std::fs::remove_file(&path);
    let events = Arc::new(MemoryRecorder::default());
    let ledger = Arc::new(JsonlLedger::create(&path).unwrap());
    let ctx = RunContext::new().with_recorder(events.clone()).with_recorder(ledger.clone());
    let reply = graph.run("Plan me a weekend in St Petersburg".to_string(), &ctx).await.unwrap();
    ledger.flush();
    let Reply::Plan(plan) = reply else { panic!("a trip request was answered as a question: {reply:?}") };
    println!("{plan}");

    // The structure: flights both ways, a hotel, sights; nothing the secretary had to leave out.
    assert!(plan.problems.is_empty(), "{:?}", plan.problems);
    assert_eq!(plan.destination, Some(City::StPetersburg));
    let out = plan.outbound.as_ref().expect("an outbound flight");
    let back = plan.back.as_ref().expect("a flight back");
    assert_eq!((out.from, out.to, out.day), (City::TelAviv, City::StPetersburg, Weekday::Friday));
    assert_eq!((back.from, back.to, back.day), (City::StPetersburg, City::TelAviv, Weekday::Sunday));
    let hotel = plan.hotel.as_ref().expect("a hotel");
    assert_eq!(hotel.city, City::StPetersburg);
    assert!(!plan.sights.is_empty() && plan.sights.iter().all(|s| s.city == City::StPetersburg));
    assert_eq!(plan.nights, 2);

    // Taken from the data, not invented: every record is one of the bundled ones, and the flight numbers are
    // the ones the search_flights tool returned in this run.
    assert!(data.flights.contains(out) && data.flights.contains(back));
    assert!(data.hotels.contains(hotel));
    assert!(plan.sights.iter().all(|s| data.sights.contains(s)));
    let searched: Vec<String> = events
        .tool_calls()
        .into_iter()
        .filter(|c| c.tool == "search_flights")
        .filter_map(|c| c.result.map(|r| r.to_string()))
        .collect();
    assert!(searched.iter().any(|r| r.contains(&out.flight) && r.contains(&back.flight)), "{searched:?}");
    let calls = events.model_calls();
    let flights_answer = calls.iter().rev().find(|c| c.specialist == "flights").unwrap();
    assert!(flights_answer.output.as_deref().is_some_and(|o| o.contains(&out.flight)));

    // The ledger: every member and the manager made calls, none escalated; each specialist's calls sit under
    // its graph node, which sits under the team's node.
    for who in ["trip/manager", "flights", "hotels", "guide", "secretary"] {
        assert!(calls.iter().any(|c| c.specialist == who), "no call by {who}");
    }
    assert!(calls.iter().all(|c| c.escalation.is_none() && c.usage.is_some_and(|u| u.completion_tokens > 0)));
    let nodes: Vec<NodeEvent> =
        events.events().into_iter().filter_map(|e| if let RunEvent::Node(n) = e { Some(n) } else { None }).collect();
    let team = nodes.iter().find(|n| n.ids.node.as_deref() == Some("trip team")).expect("the team's node");
    assert!(team.route_reason.is_some(), "the team ran on the router's decision");
    let flights_node = nodes.iter().find(|n| n.ids.node.as_deref().is_some_and(|p| p.ends_with("flights"))).unwrap();
    assert_eq!(flights_node.ids.parent, Some(team.ids.id));
    assert!(calls.iter().filter(|c| c.specialist == "flights").all(|c| c.ids.parent == Some(flights_node.ids.id)));
    let run = ctx.run_id();
    assert!(events.events().iter().all(|e| e.ids().run == run));

    // The same records in the JSON Lines file, and a report over them with the baseline.
    let (records, skipped) = read_jsonl(&path).unwrap();
    assert_eq!((records.len(), skipped), (events.events().len(), 0));
    let costs = CostModel::new()
        .default_price(Price::PerHour(0.2))
        .baseline("large", Price::PerMillionTokens { input: 2.5, output: 10.0 });
    let report = Report::from_records(&records, &costs);
    assert_eq!(report.total.calls, calls.len());
    assert_eq!(report.total.tool_calls, 3);
    assert!(report.total.cost > 0.0 && report.total.baseline_cost > report.total.cost);
    let table = report.to_string();
    assert!(table.contains("flights") && table.contains("would cost"), "{table}");
    let svg = report.to_svg();
    assert!(svg.starts_with("<svg") && svg.contains("secretary") && svg.trim_end().ends_with("</svg>"));
}

#[tokio::test]
async fn an_open_question_goes_to_the_open_question_agent() {
    let (planner, _) = planner(None);
    let graph = planner.graph(&support::smollm2()).unwrap();
    let events = Arc::new(MemoryRecorder::default());
    let ctx = RunContext::new().with_recorder(events.clone());
    let reply = graph.run("What should I know about the metro in St Petersburg?".to_string(), &ctx).await.unwrap();
    assert!(matches!(&reply, Reply::Answer(text) if !text.trim().is_empty()), "{reply:?}");
    let calls = events.model_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].specialist, "generalist");
    assert!(!calls[0].remote && calls[0].escalation.is_none());
}

#[tokio::test]
async fn with_a_large_model_open_questions_are_escalated_with_the_routers_reason() {
    let server = support::TestServer::start();
    let llm: Arc<dyn LanguageModel> = Arc::new(RemoteModel::builder(&server.base_url, "smollm2").build().unwrap());
    let (planner, _) = planner(Some(llm));
    let graph = planner.graph(&support::smollm2()).unwrap();
    let events = Arc::new(MemoryRecorder::default());
    let ctx = RunContext::new().with_recorder(events.clone());
    let reply = graph.run("Why do the bridges of the Neva open at night?".to_string(), &ctx).await.unwrap();
    assert!(matches!(&reply, Reply::Answer(text) if !text.trim().is_empty()), "{reply:?}");
    let calls = events.model_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].specialist, "large model");
    assert!(calls[0].remote);
    let why = calls[0].escalation.as_deref().expect("escalated");
    assert!(why.contains("Open") && why.contains("no rule matched"), "the router's reason: {why}");
}
