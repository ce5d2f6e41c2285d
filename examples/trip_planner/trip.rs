//! The trip planner's data, tools, specialists, team and graph; shared by `examples/trip_planner` and
//! `tests/trip_planner.rs`, so that the test runs exactly what the example runs.
//!
//! A router sends trip requests to a team and anything else to an open-question agent (a large model over
//! an OpenAI-compatible endpoint when one is given). In the team, a small manager model splits the request into
//! steps for three specialists — flights (`search_flights`), hotels (`search_hotels`) and a guide
//! (`list_sights`) — which run in parallel; a secretary checks their picks against the data and writes one plan.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use slm_agents::agent::{Plan, PlanStep, Team, TeamResults};
use slm_agents::graph::Graph;
use slm_agents::prelude::*;
use slm_agents::router::RuleRouter;

/// The cities the bundled data serves. As an enum, a tool's arguments can only name one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum City {
    Berlin,
    Istanbul,
    Lisbon,
    London,
    Paris,
    Rome,
    #[serde(rename = "St Petersburg")]
    StPetersburg,
    #[serde(rename = "Tel Aviv")]
    TelAviv,
}

impl fmt::Display for City {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        f.write_str(&name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Weekday {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flight {
    pub flight: String,
    pub from: City,
    pub to: City,
    pub day: Weekday,
    pub depart: String,
    pub arrive: String,
    pub price_eur: u32,
    pub seats_left: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hotel {
    pub name: String,
    pub city: City,
    pub stars: u8,
    pub price_eur: u32,
    pub area: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sight {
    pub name: String,
    pub city: City,
    pub kind: String,
    pub hours: String,
    pub price_eur: u32,
}

/// The bundled data: made-up flights, hotels and sights.
#[derive(Debug, Clone, Default)]
pub struct TripData {
    pub flights: Vec<Flight>,
    pub hotels: Vec<Hotel>,
    pub sights: Vec<Sight>,
}

/// `examples/data` in this repository.
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data")
}

impl TripData {
    /// Reads `flights.json`, `hotels.json` and `sights.json` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        #[derive(Deserialize)]
        struct Flights {
            flights: Vec<Flight>,
        }
        #[derive(Deserialize)]
        struct Hotels {
            hotels: Vec<Hotel>,
        }
        #[derive(Deserialize)]
        struct Sights {
            sights: Vec<Sight>,
        }
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        Ok(Self {
            flights: serde_json::from_str::<Flights>(&read("flights.json")?)?.flights,
            hotels: serde_json::from_str::<Hotels>(&read("hotels.json")?)?.hotels,
            sights: serde_json::from_str::<Sights>(&read("sights.json")?)?.sights,
        })
    }
}

// ---------------------------------------------------------------------------------------------------------
// Tools: the "APIs" the specialists call. They read the data; they never guess.

/// Arguments of `search_flights`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct SearchFlightsArgs {
    /// Destination
    pub to: City,
    /// Day to fly out
    pub out_day: Weekday,
    /// Day to fly back
    pub back_day: Weekday,
}

/// What `search_flights` returns: the cheapest flight each way, if there is one.
#[derive(Debug, Serialize)]
pub struct RoundTrip {
    pub outbound: Option<Flight>,
    pub back: Option<Flight>,
}

/// Searches from the traveller's home city, which the code knows: no need to ask a model for it.
pub struct SearchFlights {
    pub data: Arc<TripData>,
    pub home: City,
}

impl Tool for SearchFlights {
    const NAME: &'static str = "search_flights";
    type Args = SearchFlightsArgs;
    type Output = RoundTrip;
    type Error = std::convert::Infallible;

    fn description(&self) -> String {
        "Flights from the traveller's home to a city and back on given days, cheapest first".into()
    }

    async fn call(&self, args: SearchFlightsArgs) -> Result<RoundTrip, Self::Error> {
        let find = |from: City, to: City, day: Weekday| {
            self.data
                .flights
                .iter()
                .filter(|f| f.from == from && f.to == to && f.day == day && f.seats_left > 0)
                .min_by_key(|f| f.price_eur)
                .cloned()
        };
        Ok(RoundTrip {
            outbound: find(self.home, args.to, args.out_day),
            back: find(args.to, self.home, args.back_day),
        })
    }
}

/// Arguments of `search_hotels` and `list_sights`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct CityArgs {
    /// The city
    pub city: City,
}

pub struct SearchHotels(pub Arc<TripData>);

impl Tool for SearchHotels {
    const NAME: &'static str = "search_hotels";
    type Args = CityArgs;
    type Output = Vec<Hotel>;
    type Error = std::convert::Infallible;

    fn description(&self) -> String {
        "Hotels in a city, best value first (price per night in EUR)".into()
    }

    async fn call(&self, args: CityArgs) -> Result<Vec<Hotel>, Self::Error> {
        let mut found: Vec<Hotel> = self.0.hotels.iter().filter(|h| h.city == args.city).cloned().collect();
        // Best value: a star is worth 30 EUR a night.
        found.sort_by_key(|h| i64::from(h.price_eur) - 30 * i64::from(h.stars));
        found.truncate(3);
        Ok(found)
    }
}

pub struct ListSights(pub Arc<TripData>);

impl Tool for ListSights {
    const NAME: &'static str = "list_sights";
    type Args = CityArgs;
    type Output = Vec<Sight>;
    type Error = std::convert::Infallible;

    fn description(&self) -> String {
        "Sights worth a visit in a city".into()
    }

    async fn call(&self, args: CityArgs) -> Result<Vec<Sight>, Self::Error> {
        Ok(self.0.sights.iter().filter(|s| s.city == args.city).take(4).cloned().collect())
    }
}

// ---------------------------------------------------------------------------------------------------------
// The specialists' typed answers. The grammar holds them to these shapes; the secretary checks the values.

/// The flights specialist's pick.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct FlightsPick {
    /// Flight number out, as search_flights returned it, or "none"
    #[schemars(regex(pattern = r"^(SL[0-9]{3}|none)$"))]
    pub outbound: String,
    /// Flight number back, as search_flights returned it, or "none"
    #[schemars(regex(pattern = r"^(SL[0-9]{3}|none)$"))]
    pub back: String,
}

/// The hotels specialist's pick.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct HotelPick {
    /// The hotel's name, as search_hotels returned it
    #[schemars(length(min = 2, max = 40))]
    pub hotel: String,
}

/// The guide's picks.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SightsPick {
    /// Names of sights, as list_sights returned them
    #[schemars(length(min = 1, max = 3), inner(length(min = 2, max = 48)))]
    pub sights: Vec<String>,
}

/// The secretary's line on top of the plan.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Summary {
    /// One friendly sentence
    #[schemars(length(min = 8, max = 140))]
    pub summary: String,
}

/// A short answer to an open question.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Answer {
    /// The answer
    #[schemars(length(min = 1, max = 400))]
    pub text: String,
}

// ---------------------------------------------------------------------------------------------------------
// The plan.

/// The finished plan: every entry is a record of the bundled data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TripPlan {
    pub destination: Option<City>,
    pub outbound: Option<Flight>,
    pub back: Option<Flight>,
    pub hotel: Option<Hotel>,
    pub nights: u32,
    pub sights: Vec<Sight>,
    pub summary: String,
    /// What the secretary could not confirm (a pick not in the data, a specialist that did not run).
    pub problems: Vec<String>,
}

impl TripPlan {
    /// Flights, hotel nights and sights, in EUR.
    pub fn total_eur(&self) -> u32 {
        let flights: u32 = self.outbound.iter().chain(&self.back).map(|f| f.price_eur).sum();
        let hotel = self.hotel.as_ref().map_or(0, |h| h.price_eur * self.nights);
        flights + hotel + self.sights.iter().map(|s| s.price_eur).sum::<u32>()
    }
}

impl fmt::Display for TripPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let place = self.destination.map_or_else(|| "?".to_owned(), |c| c.to_string());
        writeln!(f, "Weekend in {place}")?;
        writeln!(f, "  {}", self.summary)?;
        for (label, flight) in [("out ", &self.outbound), ("back", &self.back)] {
            match flight {
                Some(x) => writeln!(
                    f,
                    "  {label}  {} {:?} {} -> {} {}-{}  {} EUR",
                    x.flight, x.day, x.from, x.to, x.depart, x.arrive, x.price_eur
                )?,
                None => writeln!(f, "  {label}  (no flight)")?,
            }
        }
        match &self.hotel {
            Some(h) => writeln!(
                f,
                "  hotel {} ({}*, {}), {} nights x {} EUR",
                h.name, h.stars, h.area, self.nights, h.price_eur
            )?,
            None => writeln!(f, "  hotel (none)")?,
        }
        for s in &self.sights {
            writeln!(f, "  see   {} ({}, {}, {} EUR)", s.name, s.kind, s.hours, s.price_eur)?;
        }
        writeln!(f, "  total {} EUR", self.total_eur())?;
        for p in &self.problems {
            writeln!(f, "  note: {p}")?;
        }
        Ok(())
    }
}

/// What the planner answers: a plan, or the answer to an open question.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Reply {
    Plan(Box<TripPlan>),
    Answer(String),
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Plan(p) => p.fmt(f),
            Self::Answer(a) => writeln!(f, "{a}"),
        }
    }
}

/// Checks the specialists' picks against the data and assembles the plan; a small model writes its summary.
pub struct Secretary {
    data: Arc<TripData>,
    home: City,
    writer: ModelSpecialist<String, Summary>,
}

fn pick<T: serde::de::DeserializeOwned>(results: &TeamResults, specialist: &str) -> Option<T> {
    results
        .results
        .iter()
        .find(|r| r.specialist == specialist)
        .and_then(|r| serde_json::from_value(r.result.clone()).ok())
}

fn same(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

#[async_trait::async_trait]
impl Agent for Secretary {
    type Input = TeamResults;
    type Output = Reply;

    fn name(&self) -> String {
        "secretary".into()
    }

    async fn run(&self, results: TeamResults, ctx: &RunContext) -> slm_agents::Result<Reply> {
        let mut problems = Vec::new();
        let mut plan = TripPlan {
            destination: None,
            outbound: None,
            back: None,
            hotel: None,
            nights: 2,
            sights: Vec::new(),
            summary: String::new(),
            problems: Vec::new(),
        };
        let flight = |number: &str, problems: &mut Vec<String>| -> Option<Flight> {
            if number == "none" {
                problems.push("no flight on those days".into());
                return None;
            }
            let found = self.data.flights.iter().find(|f| f.flight == number).cloned();
            if found.is_none() {
                problems.push(format!("flight {number} is not in the timetable; left out"));
            }
            found
        };
        match pick::<FlightsPick>(&results, "flights") {
            Some(p) => {
                plan.outbound = flight(&p.outbound, &mut problems).filter(|f| {
                    let ok = f.from == self.home;
                    if !ok {
                        problems.push(format!("flight {} does not leave from {}; left out", f.flight, self.home));
                    }
                    ok
                });
                plan.destination = plan.outbound.as_ref().map(|f| f.to);
                plan.back = flight(&p.back, &mut problems).filter(|f| {
                    let ok = f.to == self.home && plan.destination.is_none_or(|d| f.from == d);
                    if !ok {
                        problems.push(format!("flight {} does not fly back home; left out", f.flight));
                    }
                    ok
                });
            }
            None => problems.push("the flights specialist did not run".into()),
        }
        match pick::<HotelPick>(&results, "hotels") {
            Some(p) => {
                plan.hotel = self.data.hotels.iter().find(|h| same(&h.name, &p.hotel)).cloned();
                if plan.hotel.is_none() {
                    problems.push(format!("hotel {:?} is not in the list; left out", p.hotel));
                }
            }
            None => problems.push("the hotels specialist did not run".into()),
        }
        match pick::<SightsPick>(&results, "guide") {
            Some(p) => {
                let city = plan.destination.or(plan.hotel.as_ref().map(|h| h.city));
                for name in p.sights {
                    match find_sight(&self.data, &name, city) {
                        Some(s) if !plan.sights.contains(s) => plan.sights.push(s.clone()),
                        Some(_) => {}
                        None => problems.push(format!("sight {name:?} is not in the guide; left out")),
                    }
                }
            }
            None => problems.push("the guide did not run".into()),
        }
        plan.destination = plan.destination.or(plan.hotel.as_ref().map(|h| h.city));
        if let (Some(out), Some(back)) = (&plan.outbound, &plan.back) {
            plan.nights = nights(out.day, back.day);
        }
        let facts = format!(
            "Trip to {}: flight {} out, hotel {}, sights: {}.",
            plan.destination.map_or_else(|| "?".to_owned(), |c| c.to_string()),
            plan.outbound.as_ref().map_or("none", |f| f.flight.as_str()),
            plan.hotel.as_ref().map_or("none", |h| h.name.as_str()),
            plan.sights.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
        );
        plan.summary = self.writer.run(facts, ctx).await?.summary;
        plan.problems = problems;
        Ok(Reply::Plan(Box::new(plan)))
    }
}

/// The sight called `name`, or else the one sight of `city` whose name contains it (a small model often
/// shortens names).
fn find_sight<'a>(data: &'a TripData, name: &str, city: Option<City>) -> Option<&'a Sight> {
    data.sights.iter().find(|s| same(&s.name, name)).or_else(|| {
        let key = name.trim().to_lowercase();
        let mut found = data
            .sights
            .iter()
            .filter(|s| city.is_none_or(|c| s.city == c) && key.len() >= 4 && s.name.to_lowercase().contains(&key));
        match (found.next(), found.next()) {
            (Some(s), None) => Some(s),
            _ => None,
        }
    })
}

fn nights(out: Weekday, back: Weekday) -> u32 {
    let (o, b) = (out as u32, back as u32);
    if b > o {
        b - o
    } else {
        b + 7 - o
    }
}

/// Answers what is not a trip request: on the large model when there is one, else on the small model.
pub struct OpenQuestion {
    answerer: ModelSpecialist<String, Answer>,
}

#[async_trait::async_trait]
impl Agent for OpenQuestion {
    type Input = String;
    type Output = Reply;

    fn name(&self) -> String {
        Agent::name(&self.answerer)
    }

    async fn run(&self, question: String, ctx: &RunContext) -> slm_agents::Result<Reply> {
        Ok(Reply::Answer(self.answerer.run(question, ctx).await?.text))
    }
}

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Desk {
    Trip,
    Open,
}

/// The planner's settings.
pub struct Planner {
    pub data: Arc<TripData>,
    /// Where the traveller lives (the flights specialist flies from here).
    pub home: City,
    /// The large model for open questions, if any.
    pub llm: Option<Arc<dyn LanguageModel>>,
}

impl Planner {
    fn team(&self, slm: &LlamaModel) -> slm_agents::Result<Team<Reply>> {
        let flights = ModelSpecialist::builder("flights")
            .description("finds flights out and back")
            .model(slm.clone())
            .instructions(
                "You book flights. Call search_flights once with the destination; a weekend means out on Friday \
                 and back on Sunday. Then answer with the outbound and the back flight number it returned.",
            )
            .tool(SearchFlights { data: Arc::clone(&self.data), home: self.home })
            .output::<FlightsPick>()
            .max_tool_calls(1)
            .max_steps(3)
            .max_tokens(64)
            .build()?;
        let hotels = ModelSpecialist::builder("hotels")
            .description("finds a hotel")
            .model(slm.clone())
            .instructions(
                "You book hotels. Call search_hotels once with the city. Then answer with the name of the first \
                 hotel it returned.",
            )
            .tool(SearchHotels(Arc::clone(&self.data)))
            .output::<HotelPick>()
            .max_tool_calls(1)
            .max_steps(3)
            .max_tokens(48)
            .build()?;
        let guide = ModelSpecialist::builder("guide")
            .description("picks sights to see")
            .model(slm.clone())
            .instructions(
                "You are a city guide. Call list_sights once with the city. Then answer with the names of two or \
                 three sights it returned.",
            )
            .tool(ListSights(Arc::clone(&self.data)))
            .output::<SightsPick>()
            .max_tool_calls(1)
            .max_steps(3)
            .max_tokens(80)
            .build()?;
        let writer = ModelSpecialist::builder("secretary")
            .model(slm.clone())
            .instructions(
                "You are a travel secretary. Sum up the trip in one friendly sentence, naming the hotel and a \
                 sight. For example: Two nights in Rome at Casa Monti, with the Colosseum on Saturday.",
            )
            .output::<Summary>()
            .max_tokens(96)
            .build()?;
        let step =
            |specialist: &str, task: &str| PlanStep { specialist: specialist.into(), task: task.into(), needs: vec![] };
        Team::builder("trip")
            .manager(slm.clone())
            .member(flights)
            .member(hotels)
            .member(guide)
            .plan_example(
                "Plan me a weekend in Rome",
                Plan {
                    steps: vec![
                        step("flights", "flights to Rome for the weekend"),
                        step("hotels", "a hotel in Rome"),
                        step("guide", "sights in Rome"),
                    ],
                },
            )
            .composer(Secretary { data: Arc::clone(&self.data), home: self.home, writer })
            .max_steps(4)
            .build()
    }

    /// The planner's graph: route, then the trip team or the open-question agent.
    pub fn graph(&self, slm: &LlamaModel) -> slm_agents::Result<Graph<String, Reply>> {
        let team = self.team(slm)?;
        let answerer = match &self.llm {
            Some(llm) => ModelSpecialist::builder("large model")
                .model_arc(Arc::clone(llm))
                .instructions("You are a knowledgeable travel assistant. Answer the question in a few sentences.")
                .output::<Answer>()
                .max_tokens(300)
                .build()?,
            None => ModelSpecialist::builder("generalist")
                .model(slm.clone())
                .instructions("You are a travel assistant. Answer the question in one or two sentences.")
                .output::<Answer>()
                .max_tokens(120)
                .build()?,
        };
        let router = RuleRouter::new(Desk::Open)
            .keywords(["plan", "weekend", "trip", "holiday", "vacation", "getaway", "book me"], Desk::Trip);
        let mut g = Graph::builder::<String>();
        let input = g.input();
        let desk = g.route(&input, router);
        let plan = g.add(team).named("trip team").on(&desk, Desk::Trip).after(&input);
        let open = g.add(OpenQuestion { answerer }).named("open question").on(&desk, Desk::Open).after(&input);
        let reply = g.merge([&plan, &open]);
        g.output(reply).build()
    }
}
