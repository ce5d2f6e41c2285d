//! The calendar assistant's store, tool and specialist; shared by `examples/calendar` and `tests/calendar.rs`.
//!
//! One specialist with one `calendar` tool over a JSON file. The model turns a sentence into the tool's typed
//! arguments (action, title, day, time) under a grammar; the tool then refuses what the sentence does not
//! say: a day or a time the model would have had to invent, or a title that matches several meetings. That
//! refusal is the clear message a user gets for ambiguous input.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use slm_agents::prelude::*;

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

/// One meeting in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meeting {
    pub title: String,
    pub day: Weekday,
    /// HH:MM
    pub start: String,
}

/// Meetings kept in a JSON file, rewritten whole on every change.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    meetings: Mutex<Vec<Meeting>>,
}

impl Store {
    /// Opens the store at `path` (empty if the file does not exist yet).
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, String> {
        let path = path.into();
        let meetings = match std::fs::read_to_string(&path) {
            Ok(text) => {
                serde_json::from_str(&text).map_err(|e| format!("{} is not a calendar: {e}", path.display()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        Ok(Self { path, meetings: Mutex::new(meetings) })
    }

    /// The meetings, by day and time.
    pub fn meetings(&self) -> Vec<Meeting> {
        let mut all = self.meetings.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        all.sort_by(|a, b| (a.day as u8, &a.start).cmp(&(b.day as u8, &b.start)));
        all
    }

    fn update<T>(
        &self,
        change: impl FnOnce(&mut Vec<Meeting>) -> Result<T, CalendarError>,
    ) -> Result<T, CalendarError> {
        let mut meetings = self.meetings.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let out = change(&mut meetings)?;
        let text = serde_json::to_string_pretty(&*meetings).map_err(|e| CalendarError::Store(e.to_string()))?;
        std::fs::write(&self.path, text).map_err(|e| CalendarError::Store(format!("{}: {e}", self.path.display())))?;
        Ok(out)
    }
}

/// What the calendar tool can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Add,
    List,
    Move,
}

/// Arguments of the `calendar` tool.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct CalendarArgs {
    /// add, list or move
    pub action: Action,
    /// Who or what the meeting is with, e.g. "Dana"
    #[schemars(length(max = 40))]
    pub title: String,
    /// The day (to add, to list, or to move the meeting to)
    pub day: Weekday,
    /// The time as HH:MM (to add, or to move the meeting to)
    #[schemars(regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub start: String,
}

/// Why the calendar refused: each message says what to add to the request.
#[derive(Debug, thiserror::Error)]
pub enum CalendarError {
    #[error("the request does not say {0}; say for example \"a meeting with Dana on Tuesday at 10:00\"")]
    Missing(String),
    #[error("no meeting matches \"{0}\"")]
    NoMatch(String),
    #[error("{} meetings match \"{title}\": {}; say which one", .matches.len(), .matches.join(", "))]
    Ambiguous { title: String, matches: Vec<String> },
    #[error("the calendar cannot be saved: {0}")]
    Store(String),
}

/// The `calendar` tool, for one request: it checks the model's arguments against the request's own words.
pub struct CalendarTool {
    pub store: Arc<Store>,
    pub request: String,
}

fn describe(m: &Meeting) -> String {
    format!("{} on {:?} at {}", m.title, m.day, m.start)
}

impl CalendarTool {
    fn says(&self, word: &str) -> bool {
        let request = self.request.to_lowercase();
        request.split(|c: char| !c.is_alphanumeric()).any(|w| !w.is_empty() && w == word.to_lowercase())
    }

    /// The day, if the request names it.
    fn day(&self, day: Weekday) -> Option<Weekday> {
        let name = format!("{day:?}");
        (self.says(&name) || self.says(&name[..3])).then_some(day)
    }

    /// The time, if the request names its hour ("10:00", "10am", "at 10").
    fn time(&self, start: &str) -> Option<String> {
        let hour: u32 = start[..2].parse().unwrap_or(99);
        let spoken = [hour, if hour > 12 { hour - 12 } else { hour }];
        let digits: Vec<u32> = self
            .request
            .split(|c: char| !c.is_ascii_digit())
            .filter(|d| !d.is_empty() && d.len() <= 2)
            .filter_map(|d| d.parse().ok())
            .collect();
        spoken.iter().any(|h| digits.contains(h)).then(|| start.to_owned())
    }

    /// The title, if the request names it (generic words such as "meeting" do not count).
    fn title(&self, title: &str) -> Option<String> {
        const GENERIC: [&str; 8] = ["meeting", "call", "the", "with", "a", "an", "my", "calendar"];
        let title = title.trim();
        title
            .split(|c: char| !c.is_alphanumeric())
            .any(|w| !w.is_empty() && !GENERIC.contains(&w.to_lowercase().as_str()) && self.says(w))
            .then(|| title.to_owned())
    }

    /// The day and time of an add or a move; what the request leaves out is an error naming it.
    fn when(&self, args: &CalendarArgs, title: Option<&Option<String>>) -> Result<(Weekday, String), CalendarError> {
        let (day, start) = (self.day(args.day), self.time(&args.start));
        let mut missing = Vec::new();
        if title.is_some_and(Option::is_none) {
            missing.push("with whom");
        }
        if day.is_none() {
            missing.push("which day");
        }
        if start.is_none() {
            missing.push("what time");
        }
        match (day, start) {
            (Some(day), Some(start)) if missing.is_empty() => Ok((day, start)),
            _ => Err(CalendarError::Missing(missing.join(", "))),
        }
    }

    /// The one meeting whose title shares a word with `title`.
    fn find(meetings: &[Meeting], title: &str) -> Result<usize, CalendarError> {
        let words: Vec<String> = title.split_whitespace().map(str::to_lowercase).filter(|w| w.len() > 2).collect();
        let hits: Vec<usize> = meetings
            .iter()
            .enumerate()
            .filter(|(_, m)| {
                let t = m.title.to_lowercase();
                words.iter().any(|w| t.split_whitespace().any(|x| x == w))
            })
            .map(|(i, _)| i)
            .collect();
        match hits.as_slice() {
            [i] => Ok(*i),
            [] => Err(CalendarError::NoMatch(title.to_owned())),
            many => Err(CalendarError::Ambiguous {
                title: title.to_owned(),
                matches: many.iter().map(|&i| describe(&meetings[i])).collect(),
            }),
        }
    }
}

impl Tool for CalendarTool {
    const NAME: &'static str = "calendar";
    type Args = CalendarArgs;
    type Output = serde_json::Value;
    type Error = CalendarError;

    fn description(&self) -> String {
        "Adds, lists or moves meetings in the user's calendar".into()
    }

    async fn call(&self, args: CalendarArgs) -> Result<serde_json::Value, CalendarError> {
        match args.action {
            Action::Add => {
                // Title, day and time must come from the request, not from the model's imagination.
                let title = self.title(&args.title);
                let (day, start) = self.when(&args, Some(&title))?;
                let meeting = Meeting { title: title.unwrap_or_default(), day, start };
                self.store.update(|all| {
                    all.push(meeting.clone());
                    Ok(())
                })?;
                Ok(serde_json::json!({ "done": format!("Added {}.", describe(&meeting)) }))
            }
            Action::List => {
                let day = self.day(args.day);
                let found: Vec<String> =
                    self.store.meetings().iter().filter(|m| day.is_none_or(|d| m.day == d)).map(describe).collect();
                let done = if found.is_empty() {
                    "No meetings.".to_owned()
                } else {
                    format!("{} meeting(s): {}.", found.len(), found.join("; "))
                };
                Ok(serde_json::json!({ "done": done }))
            }
            Action::Move => {
                let (day, start) = self.when(&args, None)?;
                let moved = self.store.update(|all| {
                    let i = Self::find(all, &args.title)?;
                    let before = describe(&all[i]);
                    all[i].day = day;
                    all[i].start = start.clone();
                    Ok((before, describe(&all[i])))
                })?;
                Ok(serde_json::json!({ "done": format!("Moved {}; it was {}.", moved.1, moved.0) }))
            }
        }
    }
}

/// The assistant's answer.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Confirmation {
    /// One sentence for the user
    #[schemars(length(min = 2, max = 120))]
    pub message: String,
}

/// The calendar specialist for one request.
pub fn assistant(
    model: &LlamaModel,
    store: &Arc<Store>,
    request: &str,
) -> slm_agents::Result<ModelSpecialist<String, Confirmation>> {
    ModelSpecialist::builder("calendar")
        .description("adds, lists and moves meetings")
        .model(model.clone())
        .instructions(
            "You manage the user's calendar. Call the calendar tool once, then tell the user what it has done, in its words. \
             Examples of calls:\n\
             \"Add a call with Ann on Monday at 9:00\" -> {\"tool\":\"calendar\",\"arguments\":{\"action\":\"add\",\"title\":\"Ann\",\"day\":\"Monday\",\"start\":\"09:00\"}}\n\
             \"What is on Friday?\" -> {\"tool\":\"calendar\",\"arguments\":{\"action\":\"list\",\"title\":\"\",\"day\":\"Friday\",\"start\":\"00:00\"}}\n\
             \"Move the call with Ann to Thursday at 16:30\" -> {\"tool\":\"calendar\",\"arguments\":{\"action\":\"move\",\"title\":\"Ann\",\"day\":\"Thursday\",\"start\":\"16:30\"}}",
        )
        .tool(CalendarTool { store: Arc::clone(store), request: request.to_owned() })
        .output::<Confirmation>()
        .max_tool_calls(1)
        // A refusal is the answer: the user must say more, and the model must not guess.
        .max_tool_errors(0)
        .max_steps(3)
        .max_tokens(96)
        .build()
}
