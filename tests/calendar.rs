//! The calendar assistant of `examples/calendar` on the real model: adding, listing and moving meetings in a
//! JSON file store, and a clear refusal, naming what is missing, for requests that do not say enough.

#[allow(dead_code)]
#[path = "../examples/calendar/calendar.rs"]
mod calendar;
mod support;

use std::sync::Arc;

use calendar::{assistant, CalendarError, Meeting, Store, Weekday};
use slm_agents::prelude::*;
use slm_agents::tool::ToolError;
use slm_agents::Error;

async fn ask(store: &Arc<Store>, request: &str) -> slm_agents::Result<String> {
    let specialist = assistant(&support::smollm2(), store, request).unwrap();
    specialist.run(request.to_string(), &RunContext::new()).await.map(|c| c.message)
}

fn refusal(result: slm_agents::Result<String>) -> String {
    match result {
        Err(Error::Tool { source: ToolError::Failed(why), .. }) => {
            assert!(why.downcast_ref::<CalendarError>().is_some(), "{why}");
            why.to_string()
        }
        other => panic!("expected the calendar to refuse, got {other:?}"),
    }
}

fn meeting(title: &str, day: Weekday, start: &str) -> Meeting {
    Meeting { title: title.into(), day, start: start.into() }
}

#[tokio::test]
async fn meetings_are_added_listed_and_moved_in_the_file() {
    let path = support::scratch_dir("calendar").join("week.json");
    let _ = std::fs::remove_file(&path);
    let store = Arc::new(Store::open(&path).unwrap());

    ask(&store, "Add a meeting with Dana on Tuesday at 10:00").await.unwrap();
    assert_eq!(store.meetings(), vec![meeting("Dana", Weekday::Tuesday, "10:00")]);

    let listed = ask(&store, "List my meetings on Tuesday").await.unwrap();
    assert!(listed.contains("Dana"), "{listed}");

    ask(&store, "Move the meeting with Dana to Wednesday at 11:00").await.unwrap();
    assert_eq!(store.meetings(), vec![meeting("Dana", Weekday::Wednesday, "11:00")]);

    // The file holds the calendar: a new store over it sees the same meetings.
    assert_eq!(Store::open(&path).unwrap().meetings(), store.meetings());
}

#[tokio::test]
async fn a_request_that_does_not_say_enough_is_refused_with_what_is_missing() {
    let path = support::scratch_dir("calendar").join("vague.json");
    let _ = std::fs::remove_file(&path);
    let store = Arc::new(Store::open(&path).unwrap());

    let why = refusal(ask(&store, "Add a meeting to my calendar").await);
    assert!(why.contains("which day") && why.contains("what time"), "{why}");
    assert!(store.meetings().is_empty(), "nothing was guessed into the calendar");

    // Two meetings with Dana: moving "the meeting with Dana" is ambiguous, and the message lists both.
    std::fs::write(
        &path,
        serde_json::to_string(&[
            meeting("Dana", Weekday::Monday, "09:00"),
            meeting("Dana and Ben", Weekday::Friday, "15:00"),
        ])
        .unwrap(),
    )
    .unwrap();
    let store = Arc::new(Store::open(&path).unwrap());
    let why = refusal(ask(&store, "Move the meeting with Dana to Thursday at 10:00").await);
    assert!(why.contains("2 meetings match") && why.contains("Dana and Ben"), "{why}");
    assert_eq!(store.meetings().len(), 2);
    assert!(store.meetings().iter().all(|m| m.day != Weekday::Thursday));
}

#[test]
fn a_corrupt_store_is_a_clear_error() {
    let path = support::scratch_dir("calendar").join("corrupt.json");
    std::fs::write(&path, "{ not a calendar").unwrap();
    let err = Store::open(&path).unwrap_err();
    assert!(err.contains("is not a calendar"), "{err}");
}
