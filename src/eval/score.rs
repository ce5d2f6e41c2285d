//! Scoring one outcome against what was expected, after BFCL's AST checker.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Expected, ExpectedCall, Outcome};
use crate::tool::ToolCall;

/// Whether an outcome is right, and why (or why not); from [`score`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Whether the outcome is what was expected.
    pub correct: bool,
    /// What matched, or the first thing that did not.
    pub reason: String,
}

impl Verdict {
    fn right(reason: impl Into<String>) -> Self {
        Self { correct: true, reason: reason.into() }
    }
    fn wrong(reason: impl Into<String>) -> Self {
        Self { correct: false, reason: reason.into() }
    }
}

/// BFCL's `standardize_string`: removes the characters `` ,./-_*^`` (space included), lowercases, and writes
/// `'` as `"`; two strings match when their standard forms are equal ("April 1, 2024" and "april 1 2024").
///
/// ```
/// use slm_agents::eval::standardize;
/// assert_eq!(standardize("New York, NY"), "newyorkny");
/// assert_eq!(standardize("it's_2*3^2"), "it\"s232");
/// ```
pub fn standardize(text: &str) -> String {
    text.chars()
        .filter(|c| !" ,./-_*^".contains(*c))
        .flat_map(char::to_lowercase)
        .collect::<String>()
        .replace('\'', "\"")
}

/// Scores an outcome against what was expected, following BFCL's AST checker:
///
/// - [`Expected::Calls`]: the outcome must be as many calls; each expected call is matched to a distinct actual
///   call, in any order. A call matches when its tool's name is the same (exactly) and its arguments are an
///   object whose every argument is among the expected call's keys and has one of the accepted values, and
///   every expected argument left out has `""` among its accepted values (it is optional). Values match when
///   strings are equal after [`standardize`], numbers are equal as numbers (an integer is accepted for a
///   float), lists have the same length and match element by element, and dicts match key by key, where an
///   accepted dict maps each key to its own list of accepted values (`""` among them: the key may be left
///   out), as BFCL writes them. Other values (booleans, null) must be equal.
/// - [`Expected::NoCall`]: the outcome must be an answer (no call). An error, a cut-off turn included, is wrong.
/// - [`Expected::Answer`]: the outcome must be an answer equal to the expected value as JSON.
///
/// ```
/// use std::collections::BTreeMap;
/// use serde_json::json;
/// use slm_agents::eval::{score, Expected, ExpectedCall, Outcome};
/// use slm_agents::tool::ToolCall;
///
/// let expected = Expected::Calls(vec![ExpectedCall {
///     tool: "get_weather".into(),
///     arguments: BTreeMap::from([
///         ("city".to_string(), vec![json!("New York"), json!("NYC")]),
///         ("unit".to_string(), vec![json!("celsius"), json!("")]),
///     ]),
/// }]);
/// let call = ToolCall { tool: "get_weather".into(), arguments: json!({"city": "new york"}) };
/// assert!(score(&expected, &Outcome::Calls(vec![call])).correct);
/// assert!(!score(&expected, &Outcome::Answer(json!("It is sunny."))).correct);
/// ```
pub fn score(expected: &Expected, outcome: &Outcome) -> Verdict {
    match (expected, outcome) {
        (_, Outcome::Error { kind, message, cut_off }) => {
            let what = if *cut_off { "the turn was cut off" } else { "the turn failed" };
            Verdict::wrong(format!("{what} ({kind}): {message}"))
        }
        (Expected::Calls(want), Outcome::Calls(got)) => score_calls(want, got),
        (Expected::Calls(want), Outcome::Answer(_)) => {
            Verdict::wrong(format!("answered instead of calling {}", names(want.iter().map(|c| c.tool.as_str()))))
        }
        (Expected::NoCall, Outcome::Answer(_)) => Verdict::right("answered without a call"),
        (Expected::NoCall, Outcome::Calls(got)) => {
            Verdict::wrong(format!("called {} where no call was right", names(got.iter().map(|c| c.tool.as_str()))))
        }
        (Expected::Answer(want), Outcome::Answer(got)) => {
            if values_equal(want, got) {
                Verdict::right("the expected answer")
            } else {
                Verdict::wrong(format!("answered {got}, expected {want}"))
            }
        }
        (Expected::Answer(_), Outcome::Calls(got)) => {
            Verdict::wrong(format!("called {} instead of answering", names(got.iter().map(|c| c.tool.as_str()))))
        }
    }
}

fn names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

/// JSON equality where numbers compare by value (`1` equals `1.0`).
fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => numbers_equal(x, y),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| values_equal(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| values_equal(v, w)))
        }
        _ => a == b,
    }
}

fn numbers_equal(x: &serde_json::Number, y: &serde_json::Number) -> bool {
    match (x.as_i64(), y.as_i64()) {
        (Some(a), Some(b)) => a == b,
        _ => match (x.as_u64(), y.as_u64()) {
            (Some(a), Some(b)) => a == b,
            _ => x.as_f64() == y.as_f64(),
        },
    }
}

fn score_calls(want: &[ExpectedCall], got: &[ToolCall]) -> Verdict {
    if want.len() != got.len() {
        return Verdict::wrong(format!(
            "{} call(s) ({}), expected {} ({})",
            got.len(),
            names(got.iter().map(|c| c.tool.as_str())),
            want.len(),
            names(want.iter().map(|c| c.tool.as_str()))
        ));
    }
    if let [one] = want {
        return match call_matches(one, &got[0]) {
            Ok(()) => Verdict::right("the expected call"),
            Err(reason) => Verdict::wrong(reason),
        };
    }
    // Several calls: a matching of expected to actual calls, each actual call used once (backtracking: the
    // lists are short).
    let fits: Vec<Vec<bool>> = want.iter().map(|w| got.iter().map(|g| call_matches(w, g).is_ok()).collect()).collect();
    let mut used = vec![false; got.len()];
    if assign(&fits, 0, &mut used) {
        return Verdict::right(format!("the {} expected calls, in some order", want.len()));
    }
    // Name the first expected call that matches no actual call, with the reason for the closest one.
    for (i, w) in want.iter().enumerate() {
        if !fits[i].iter().any(|&f| f) {
            let reason = got
                .iter()
                .filter_map(|g| call_matches(w, g).err())
                .find(|r| !r.starts_with("wrong tool"))
                .unwrap_or_else(|| format!("no call of `{}`", w.tool));
            return Verdict::wrong(format!("expected call {} (`{}`) matches no call: {reason}", i + 1, w.tool));
        }
    }
    Verdict::wrong("the calls cannot be matched one to one with the expected calls")
}

fn assign(fits: &[Vec<bool>], i: usize, used: &mut [bool]) -> bool {
    if i == fits.len() {
        return true;
    }
    for j in 0..used.len() {
        if fits[i][j] && !used[j] {
            used[j] = true;
            if assign(fits, i + 1, used) {
                return true;
            }
            used[j] = false;
        }
    }
    false
}

/// Whether one actual call matches one expected call; the reason when it does not.
fn call_matches(want: &ExpectedCall, got: &ToolCall) -> Result<(), String> {
    if want.tool != got.tool {
        return Err(format!("wrong tool: called `{}`, expected `{}`", got.tool, want.tool));
    }
    let empty = Map::new();
    let arguments = match &got.arguments {
        Value::Object(map) => map,
        Value::Null => &empty,
        other => return Err(format!("the arguments of `{}` are not an object: {other}", got.tool)),
    };
    for (name, value) in arguments {
        let Some(accepted) = want.arguments.get(name) else {
            return Err(format!("unexpected argument `{name}` = {value}"));
        };
        if !accepted.iter().any(|a| value_matches(value, a)) {
            return Err(format!("argument `{name}` = {value} is not one of {}", Value::from(accepted.clone())));
        }
    }
    for (name, accepted) in &want.arguments {
        if !arguments.contains_key(name) && !accepted.iter().any(is_optional_mark) {
            return Err(format!("missing required argument `{name}`"));
        }
    }
    Ok(())
}

fn is_optional_mark(v: &Value) -> bool {
    v.as_str() == Some("")
}

/// Whether an actual value matches one accepted value.
fn value_matches(actual: &Value, accepted: &Value) -> bool {
    match (actual, accepted) {
        (Value::String(a), Value::String(b)) => standardize(a) == standardize(b),
        (Value::Number(a), Value::Number(b)) => numbers_equal(a, b),
        (Value::Array(a), Value::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| value_matches(x, y)),
        (Value::Object(a), Value::Object(b)) => dict_matches(a, b),
        _ => actual == accepted,
    }
}

/// BFCL's `dict_checker`: each accepted key maps to its list of accepted values (a value that is not a list is
/// the one accepted value).
fn dict_matches(actual: &Map<String, Value>, accepted: &Map<String, Value>) -> bool {
    let options = |v: &Value| -> Vec<Value> {
        match v {
            Value::Array(items) => items.clone(),
            other => vec![other.clone()],
        }
    };
    let values_ok = actual
        .iter()
        .all(|(key, value)| accepted.get(key).is_some_and(|acc| options(acc).iter().any(|a| value_matches(value, a))));
    let missing_ok =
        accepted.iter().all(|(key, acc)| actual.contains_key(key) || options(acc).iter().any(is_optional_mark));
    values_ok && missing_ok
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use serde_json::{json, Value};

    use super::*;

    fn expected(tool: &str, args: &[(&str, Value)]) -> ExpectedCall {
        ExpectedCall {
            tool: tool.into(),
            arguments: args
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_array().cloned().expect("accepted values are a list")))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    fn call(tool: &str, arguments: Value) -> ToolCall {
        ToolCall { tool: tool.into(), arguments }
    }

    fn one(want: ExpectedCall, got: ToolCall) -> Verdict {
        score(&Expected::Calls(vec![want]), &Outcome::Calls(vec![got]))
    }

    fn triangle() -> ExpectedCall {
        expected(
            "calculate_triangle_area",
            &[("base", json!([10])), ("height", json!([5])), ("unit", json!(["units", ""]))],
        )
    }

    #[test]
    fn standardize_is_bfcls() {
        assert_eq!(standardize("April 1, 2024"), standardize("april 1 2024"));
        assert_eq!(standardize("April 1,2024"), "april12024");
        assert_eq!(standardize("San_Francisco/CA-US.*^"), "sanfranciscoca us".replace(' ', ""));
        assert_eq!(standardize("it's"), "it\"s");
        assert_ne!(standardize("New York"), standardize("Newark"));
        // Only those characters go: other punctuation stays.
        assert_eq!(standardize("a:b;c!"), "a:b;c!");
    }

    #[test]
    fn strings_match_after_standardization() {
        let want = expected("find", &[("city", json!(["San Francisco, CA"]))]);
        assert!(one(want.clone(), call("find", json!({"city": "san francisco ca"}))).correct);
        assert!(one(want.clone(), call("find", json!({"city": "SAN-FRANCISCO,CA"}))).correct);
        let v = one(want, call("find", json!({"city": "Los Angeles"})));
        assert!(!v.correct);
        assert!(v.reason.contains("`city`"), "{}", v.reason);
    }

    #[test]
    fn the_first_simple_python_case() {
        assert!(one(triangle(), call("calculate_triangle_area", json!({"base": 10, "height": 5}))).correct);
        assert!(
            one(triangle(), call("calculate_triangle_area", json!({"base": 10, "height": 5, "unit": "units"}))).correct
        );
        assert!(!one(triangle(), call("calculate_triangle_area", json!({"base": 10, "height": 6}))).correct);
    }

    #[test]
    fn an_integer_is_accepted_for_a_float() {
        let want = expected("circle", &[("radius", json!([5.0]))]);
        assert!(one(want.clone(), call("circle", json!({"radius": 5}))).correct);
        assert!(one(want.clone(), call("circle", json!({"radius": 5.0}))).correct);
        assert!(!one(want, call("circle", json!({"radius": 5.5}))).correct);
        // A number written as a string is not a number.
        let want = expected("circle", &[("radius", json!([5]))]);
        assert!(!one(want, call("circle", json!({"radius": "5"}))).correct);
    }

    #[test]
    fn an_empty_string_marks_an_optional_argument() {
        let want = expected("f", &[("a", json!([1])), ("b", json!(["x", ""]))]);
        assert!(one(want.clone(), call("f", json!({"a": 1}))).correct);
        assert!(one(want.clone(), call("f", json!({"a": 1, "b": "X"}))).correct);
        assert!(!one(want, call("f", json!({"a": 1, "b": "y"}))).correct);
    }

    #[test]
    fn a_missing_required_argument_is_wrong() {
        let v = one(triangle(), call("calculate_triangle_area", json!({"base": 10})));
        assert!(!v.correct);
        assert!(v.reason.contains("missing required argument `height`"), "{}", v.reason);
        // No arguments at all.
        assert!(!one(triangle(), call("calculate_triangle_area", Value::Null)).correct);
    }

    #[test]
    fn an_extra_argument_is_wrong() {
        let v = one(triangle(), call("calculate_triangle_area", json!({"base": 10, "height": 5, "color": "red"})));
        assert!(!v.correct);
        assert!(v.reason.contains("unexpected argument `color`"), "{}", v.reason);
    }

    #[test]
    fn a_wrong_name_is_wrong() {
        let v = one(triangle(), call("calculate_circle_area", json!({"base": 10, "height": 5})));
        assert!(!v.correct);
        assert!(v.reason.contains("wrong tool"), "{}", v.reason);
        // Names are compared exactly (dots kept).
        let want = expected("math.hypot", &[("x", json!([3])), ("y", json!([4]))]);
        assert!(one(want.clone(), call("math.hypot", json!({"x": 3, "y": 4}))).correct);
        assert!(!one(want, call("math_hypot", json!({"x": 3, "y": 4}))).correct);
    }

    #[test]
    fn arguments_that_are_not_an_object_are_wrong() {
        assert!(!one(triangle(), call("calculate_triangle_area", json!([10, 5]))).correct);
    }

    #[test]
    fn parallel_calls_match_in_any_order_one_to_one() {
        let want = Expected::Calls(vec![
            expected("spotify.play", &[("artist", json!(["Taylor Swift"])), ("duration", json!([20]))]),
            expected("spotify.play", &[("artist", json!(["Maroon 5"])), ("duration", json!([15]))]),
        ]);
        let a = call("spotify.play", json!({"artist": "Taylor Swift", "duration": 20}));
        let b = call("spotify.play", json!({"artist": "maroon 5", "duration": 15}));
        assert!(score(&want, &Outcome::Calls(vec![a.clone(), b.clone()])).correct);
        assert!(score(&want, &Outcome::Calls(vec![b.clone(), a.clone()])).correct);
        // One call twice does not cover both expected calls.
        assert!(!score(&want, &Outcome::Calls(vec![a.clone(), a.clone()])).correct);
        // Too few or too many.
        let v = score(&want, &Outcome::Calls(vec![a.clone()]));
        assert!(!v.correct && v.reason.contains("expected 2"), "{}", v.reason);
        assert!(!score(&want, &Outcome::Calls(vec![a.clone(), b.clone(), a])).correct);
    }

    #[test]
    fn parallel_matching_is_not_greedy() {
        // The first expected call accepts either actual call; the second only the first one. A greedy matcher
        // that gives the first actual call to the first expected call would fail.
        let want = Expected::Calls(vec![expected("f", &[("x", json!([1, 2]))]), expected("f", &[("x", json!([1]))])]);
        let got = Outcome::Calls(vec![call("f", json!({"x": 1})), call("f", json!({"x": 2}))]);
        assert!(score(&want, &got).correct);
    }

    #[test]
    fn nested_lists_and_dicts_use_the_same_rules() {
        let want = expected(
            "plan",
            &[
                ("cities", json!([["New York", "Los Angeles"], ["NYC", "LA"]])),
                ("sizes", json!([[1.5, 2]])),
                ("options", json!([{"mode": ["fast", ""], "stops": [2]}])),
                ("legs", json!([[{"from": ["Paris"], "to": ["Rome"]}, {"from": ["Rome"], "to": ["Berlin"]}]])),
            ],
        );
        let good = json!({
            "cities": ["new york", "los-angeles"],
            "sizes": [1.5, 2],
            "options": {"stops": 2},
            "legs": [{"from": "paris", "to": "ROME"}, {"from": "Rome", "to": "Berlin"}],
        });
        assert!(
            one(want.clone(), call("plan", good.clone())).correct,
            "{}",
            one(want.clone(), call("plan", good.clone())).reason
        );
        let bad = |path: &str, value: Value| {
            let mut args = good.clone();
            args[path] = value;
            !one(want.clone(), call("plan", args)).correct
        };
        assert!(bad("cities", json!(["Los Angeles", "New York"])), "lists keep their order");
        assert!(bad("cities", json!(["New York"])), "lists keep their length");
        assert!(bad("sizes", json!([1.5, 3])));
        assert!(bad("options", json!({"stops": 2, "mode": "slow"})), "a dict value is checked");
        assert!(bad("options", json!({"mode": "fast"})), "a required dict key is missing");
        assert!(bad("options", json!({"stops": 2, "color": "red"})), "an unexpected dict key");
        assert!(bad("legs", json!([{"from": "Paris", "to": "Rome"}])), "a list of dicts keeps its length");
        assert!(bad("legs", json!([{"from": "Paris", "to": "Rome"}, {"from": "Rome", "to": "Madrid"}])));
    }

    #[test]
    fn booleans_are_not_numbers() {
        let want = expected("f", &[("on", json!([true]))]);
        assert!(one(want.clone(), call("f", json!({"on": true}))).correct);
        assert!(!one(want.clone(), call("f", json!({"on": 1}))).correct);
        assert!(!one(want, call("f", json!({"on": "true"}))).correct);
    }

    #[test]
    fn no_call_against_an_answer_a_call_and_a_cut_off() {
        assert!(score(&Expected::NoCall, &Outcome::Answer(json!("I cannot do that."))).correct);
        let v = score(&Expected::NoCall, &Outcome::Calls(vec![call("bmi", json!({"weight": 70}))]));
        assert!(!v.correct && v.reason.contains("`bmi`"), "{}", v.reason);
        let cut = Outcome::Error {
            kind: "InvalidOutput".into(),
            message: "output for `turn of eval` was cut off after 256 tokens".into(),
            cut_off: true,
        };
        let v = score(&Expected::NoCall, &cut);
        assert!(!v.correct && v.reason.contains("cut off"), "{}", v.reason);
        assert!(!score(&Expected::Calls(vec![triangle()]), &cut).correct);
    }

    #[test]
    fn a_call_expected_against_an_answer() {
        let v = score(&Expected::Calls(vec![triangle()]), &Outcome::Answer(json!("The area is 25.")));
        assert!(!v.correct && v.reason.contains("answered instead"), "{}", v.reason);
    }

    #[test]
    fn answers_are_compared_as_json() {
        let want = Expected::Answer(json!({"city": "Lisbon", "days": 3}));
        assert!(score(&want, &Outcome::Answer(json!({"days": 3, "city": "Lisbon"}))).correct);
        assert!(score(&want, &Outcome::Answer(json!({"days": 3.0, "city": "Lisbon"}))).correct);
        assert!(!score(&want, &Outcome::Answer(json!({"days": 3, "city": "lisbon"}))).correct, "no normalisation");
        assert!(!score(&want, &Outcome::Answer(json!({"days": 3}))).correct);
        assert!(!score(&want, &Outcome::Answer(json!({"days": 3, "city": "Lisbon", "x": 1}))).correct);
        assert!(!score(&want, &Outcome::Calls(vec![call("f", json!({}))])).correct);
        assert!(score(&Expected::Answer(json!("yes")), &Outcome::Answer(json!("yes"))).correct);
    }
}
