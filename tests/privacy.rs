//! Redaction recall on a labelled set of personal data (tests/data/pii.json, made up in our own words).

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
        other => panic!("unknown kind {other}"),
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
