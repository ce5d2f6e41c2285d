//! Redaction on labelled sets of personal data (tests/data/pii.json and tests/data/pii_international.json, made
//! up in our own words), and input that tries to switch redaction off.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Deserialize;
use slm_agents::privacy::{PiiKind, Redactor};

#[derive(Deserialize)]
struct Item {
    kind: String,
    value: String,
    text: String,
}

#[derive(Deserialize)]
struct Data {
    items: Vec<Item>,
    negatives: Vec<String>,
}

fn kind(label: &str) -> PiiKind {
    match label {
        "email" => PiiKind::Email,
        "phone" => PiiKind::Phone,
        "card" => PiiKind::Card,
        "iban" => PiiKind::Iban,
        "ip" => PiiKind::IpAddress,
        "national_id" => PiiKind::NationalId,
        other => panic!("unknown kind {other}"),
    }
}

fn label(kind: &PiiKind) -> &'static str {
    match kind {
        PiiKind::Email => "email",
        PiiKind::Phone => "phone",
        PiiKind::Card => "card",
        PiiKind::Iban => "iban",
        PiiKind::IpAddress => "ip",
        PiiKind::NationalId => "national_id",
        _ => "other",
    }
}

#[test]
fn recall_on_labelled_personal_data_is_at_least_99_percent() {
    let data: Data = serde_json::from_str(include_str!("data/pii.json")).unwrap();
    assert!(data.items.len() >= 100);
    let redactor = Redactor::new();
    let mut found = 0;
    let mut misses = Vec::new();
    for item in &data.items {
        let r = redactor.redact(&item.text);
        let hit = !r.text().contains(&item.value)
            && r.replacements()
                .iter()
                .any(|rep| rep.kind == kind(&item.kind) && item.value.contains(rep.original.trim()));
        if hit {
            found += 1;
            // Restoring gives back the original text.
            assert_eq!(r.restore(r.text()), item.text);
        } else {
            misses.push(format!("{} {:?} -> {:?}", item.kind, item.value, r.text()));
        }
    }
    let recall = found as f64 / data.items.len() as f64;
    eprintln!("redaction recall {found}/{} = {recall:.3}; missed: {misses:?}", data.items.len());
    assert!(recall >= 0.99, "recall {recall:.3}; missed:\n{}", misses.join("\n"));

    let false_positives: Vec<_> = data.negatives.iter().filter(|t| redactor.redact(t).text() != t.as_str()).collect();
    eprintln!("false positives on {} sentences without personal data: {}", data.negatives.len(), false_positives.len());
    assert!(false_positives.is_empty(), "{false_positives:?}");
}

/// Per kind: recall (the value is replaced, whole, by a placeholder of its kind) and the share of the
/// sentences without personal data in which the kind replaced something.
#[test]
fn international_formats_per_kind_recall_and_false_positives() {
    let data: Data = serde_json::from_str(include_str!("data/pii_international.json")).unwrap();
    assert!(data.items.len() >= 300 && data.negatives.len() >= 300);
    let redactor = Redactor::new();
    // kind -> (items, found, misses)
    let mut recall: BTreeMap<&str, (usize, usize, Vec<String>)> = BTreeMap::new();
    for item in &data.items {
        let r = redactor.redact(&item.text);
        let entry = recall.entry(label(&kind(&item.kind))).or_default();
        entry.0 += 1;
        let hit = !r.text().contains(&item.value)
            && r.replacements().iter().any(|rep| rep.kind == kind(&item.kind) && rep.original == item.value);
        if hit {
            entry.1 += 1;
        } else {
            entry.2.push(format!("{:?} in {:?} -> {:?}", item.value, item.text, r.text()));
        }
        assert_eq!(r.restore(r.text()), item.text);
    }
    // kind -> sentences where it fired
    let mut false_positives: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for text in &data.negatives {
        let r = redactor.redact(text);
        let mut kinds: Vec<&str> = r.replacements().iter().map(|rep| label(&rep.kind)).collect();
        kinds.dedup();
        for k in kinds {
            false_positives.entry(k).or_default().push(format!("{text:?} -> {:?}", r.text()));
        }
    }
    let negatives = data.negatives.len();
    eprintln!("| kind | found | recall | false positives in {negatives} sentences | rate |");
    eprintln!("|---|---|---|---|---|");
    let mut failures = Vec::new();
    for (k, (n, found, misses)) in &recall {
        let fp = false_positives.get(k).map_or(0, Vec::len);
        let rate = *found as f64 / *n as f64;
        let fp_rate = fp as f64 / negatives as f64;
        eprintln!("| {k} | {found}/{n} | {:.1}% | {fp} | {:.1}% |", rate * 100.0, fp_rate * 100.0);
        for m in misses {
            eprintln!("    missed {m}");
        }
        for f in false_positives.get(k).into_iter().flatten() {
            eprintln!("    false positive {f}");
        }
        if rate < 0.99 || fp_rate > 0.01 {
            failures.push(format!("{k}: recall {rate:.3}, false positives {fp_rate:.3}"));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn brackets_json_and_placeholders_do_not_switch_redaction_off() {
    let redactor = Redactor::new();
    let cases = [
        ("[dana@example.com]", "[[EMAIL_1]]"),
        ("[[EMAIL_1] dana@example.com]", "[[EMAIL_1] [EMAIL_2]]"),
        ("[EMAIL_1]dana@example.com", "[EMAIL_1][EMAIL_2]"),
        // `EMAIL_dana` is a valid mailbox name: the whole address goes.
        ("[EMAIL_dana@example.com]", "[[EMAIL_1]]"),
        ("[EMAIL_1]: dana@example.com", "[EMAIL_1]: [EMAIL_2]"),
        ("[EMAIL_1 dana@example.com]", "[EMAIL_1 [EMAIL_1]]"),
        (
            r#"{"emails": ["a@b.io"], "phones": ["+1 415 555 0100"]}"#,
            r#"{"emails": ["[EMAIL_1]"], "phones": ["[PHONE_1]"]}"#,
        ),
        // A placeholder-shaped wrapper is not a placeholder.
        ("[CARD_4111111111111111]", "[CARD_[CARD_1]]"),
        ("[X_4111 1111 1111 1111_1]", "[X_[CARD_1]_1]"),
        ("[PHONE_1][PHONE_2] +44 20 7946 0958", "[PHONE_1][PHONE_2] [PHONE_3]"),
        ("<a href=\"mailto:dana@example.com\">x</a>", "<a href=\"mailto:[EMAIL_1]\">x</a>"),
        ("`o'brien@example.ie`", "`[EMAIL_1]`"),
        ("**IBAN:** gb82 west 1234 5698 7654 32", "**IBAN:** [IBAN_1]"),
        ("ip=[2001:db8::1]:8080", "ip=[[IP_1]]:8080"),
        ("SSN: 123-45-6789.", "SSN: [NATIONAL_ID_1]."),
    ];
    for (text, expected) in cases {
        let r = redactor.redact(text);
        assert_eq!(r.text(), expected, "{text}");
        assert_eq!(r.restore(r.text()), text, "{text}");
    }

    // A text that already holds `[EMAIL_1]` gets `[EMAIL_2]` for a new value, in every message.
    let (texts, redaction) = redactor.redact_many(&["earlier: [EMAIL_1]", "new: dana@example.com", "[EMAIL_2] too"]);
    assert_eq!(texts, ["earlier: [EMAIL_1]", "new: [EMAIL_3]", "[EMAIL_2] too"]);
    assert_eq!(redaction.restore("[EMAIL_1] [EMAIL_3]"), "[EMAIL_1] dana@example.com");

    // Redacting a redacted text again changes nothing, and the two restores give the original back.
    let text = "Mail dana@example.com, call +44 20 7946 0958, pay DE89 3704 0044 0532 0130 00.";
    let first = redactor.redact(text);
    let second = redactor.redact(first.text());
    assert_eq!(second.text(), first.text());
    assert_eq!(first.restore(&second.restore(second.text())), text);
}

#[test]
fn host_labels_become_placeholders_that_are_protected_and_restored() {
    let redactor = Redactor::new().with_pattern("booking-code", r"\bBK-[0-9]{6}\b").unwrap();
    let r = redactor.redact("Booking BK-204981 for dana@example.com.");
    assert_eq!(r.text(), "Booking [BOOKING_CODE_1] for [EMAIL_1].");
    assert_eq!(r.restore("[BOOKING_CODE_1] / [EMAIL_1]"), "BK-204981 / dana@example.com");
}

#[test]
fn large_and_hostile_texts_take_linear_time() {
    let redactor = Redactor::new();
    let sentence =
        "Dana (dana@example.com, +44 20 7946 0958) paid 189 EUR on 2026-11-28 with 4111 1111 1111 1111 from \
                    192.0.2.1; version 10.0.19045, order ORD-2024-118734. ";
    let text = sentence.repeat(100_000 / sentence.len() + 1);
    let start = Instant::now();
    let r = redactor.redact(&text);
    let elapsed = start.elapsed();
    eprintln!("redacting {} KB of text with {} values: {elapsed:?}", text.len() / 1024, r.replacements().len());
    assert!(!r.text().contains("dana@example.com") && !r.text().contains("4111 1111"));
    assert_eq!(r.restore(r.text()), text);

    // Inputs made to make a pattern work hard: long runs of digits, separators, colons and mailbox characters.
    for hostile in [
        "1 ".repeat(50_000),
        "1-".repeat(50_000),
        "a:".repeat(50_000),
        "0".repeat(100_000),
        "a.".repeat(50_000) + "@",
        "[EMAIL_1]".repeat(10_000),
        "+(1)".repeat(25_000),
    ] {
        let start = Instant::now();
        let r = redactor.redact(&hostile);
        eprintln!("hostile input of {} KB ({:?}…): {:?}", hostile.len() / 1024, &hostile[..8], start.elapsed());
        assert_eq!(r.restore(r.text()), hostile);
    }
}
