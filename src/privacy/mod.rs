//! What may leave the device: the privacy policy of a run and the redaction of personal data.
//!
//! A [`Privacy`] policy travels in the [`RunContext`](crate::run::RunContext). `LocalOnly` forbids any call to a
//! remote model; `Redact` replaces personal data with placeholders before anything is sent and restores the
//! original values where they come back in the answer. [`Redactor`] finds emails, phone numbers, card numbers
//! (Luhn-checked), IBANs (checksum-checked), IP addresses and patterns the host adds.
//!
//! ```
//! use slm_agents::privacy::Redactor;
//!
//! let redactor = Redactor::new();
//! let r = redactor.redact("Mail dana@example.com or call +972 54-123-4567 about card 4111 1111 1111 1111.");
//! assert_eq!(r.text(), "Mail [EMAIL_1] or call [PHONE_1] about card [CARD_1].");
//! // The remote model answers with a placeholder; the original comes back.
//! assert_eq!(r.restore("I wrote to [EMAIL_1]."), "I wrote to dana@example.com.");
//! ```
//!
#![doc = include_str!("../../docs/escalation-and-privacy.md")]

use std::sync::Arc;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// What may leave the device in a run.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum Privacy {
    /// Anything may be sent to a remote model as it is.
    #[default]
    Allow,
    /// Nothing may be sent: any remote call is an error, and no connection is made.
    LocalOnly,
    /// Personal data is replaced by placeholders before a remote call and restored in the answer.
    Redact(Arc<Redactor>),
}

impl Privacy {
    /// `Redact` with the default [`Redactor`].
    pub fn redact() -> Self {
        Privacy::Redact(Arc::new(Redactor::new()))
    }

    /// Whether nothing may leave the device.
    pub fn is_local_only(&self) -> bool {
        matches!(self, Privacy::LocalOnly)
    }

    /// Applies the policy to texts about to be sent to the remote model `model`, in place: `LocalOnly` is an
    /// error (nothing is sent), `Redact` replaces personal data in all the texts with one numbering and returns
    /// the [`Redaction`] to restore the answer with, `Allow` leaves them alone.
    ///
    /// [`RunContext`](crate::run::RunContext) applies the run's policy this way before it calls a remote
    /// model, and [`RemoteModel`](crate::model::RemoteModel) its own. Applied twice (a run's and a model's),
    /// the placeholders do not clash: a redactor never reuses a placeholder already in the texts.
    ///
    /// # Errors
    /// [`Error::PrivacyViolation`] under `LocalOnly`.
    pub fn apply(&self, model: &str, texts: &mut [&mut String]) -> Result<Option<Redaction>> {
        match self {
            Privacy::LocalOnly => Err(Error::PrivacyViolation { model: model.to_owned() }),
            Privacy::Redact(redactor) => {
                let (redacted, redaction) = redactor.redact_many(&texts.iter().map(|t| t.as_str()).collect::<Vec<_>>());
                for (t, r) in texts.iter_mut().zip(redacted) {
                    **t = r;
                }
                Ok(Some(redaction))
            }
            _ => Ok(None),
        }
    }
}

/// Two policies are equal when they are the same kind and, for `Redact`, use the same detectors.
impl PartialEq for Privacy {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Privacy::Allow, Privacy::Allow) | (Privacy::LocalOnly, Privacy::LocalOnly) => true,
            (Privacy::Redact(a), Privacy::Redact(b)) => Arc::ptr_eq(a, b) || a.same_detectors(b),
            _ => false,
        }
    }
}

/// A kind of personal data.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum PiiKind {
    /// An email address.
    Email,
    /// A phone number (7 to 15 digits, with the usual separators and an optional `+` country code).
    Phone,
    /// A payment card number (13 to 19 digits passing the Luhn check).
    Card,
    /// An IBAN (country code, check digits passing the mod-97 check).
    Iban,
    /// An IPv4 or IPv6 address.
    IpAddress,
    /// A pattern added by the host, with its label.
    Custom(String),
}

impl PiiKind {
    fn label(&self) -> String {
        match self {
            PiiKind::Email => "EMAIL".into(),
            PiiKind::Phone => "PHONE".into(),
            PiiKind::Card => "CARD".into(),
            PiiKind::Iban => "IBAN".into(),
            PiiKind::IpAddress => "IP".into(),
            PiiKind::Custom(label) => label.to_uppercase(),
        }
    }
}

/// One value that was replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replacement {
    /// What it was.
    pub kind: PiiKind,
    /// The placeholder that stands for it, e.g. `[EMAIL_1]`.
    pub placeholder: String,
    /// The original value.
    pub original: String,
}

/// A redacted text and what was replaced in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redaction {
    text: String,
    replacements: Vec<Replacement>,
}

impl Redaction {
    /// The text with placeholders.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// What was replaced, in order of first appearance.
    pub fn replacements(&self) -> &[Replacement] {
        &self.replacements
    }

    /// What was replaced, as kind and placeholder, without the values: what a log may keep.
    pub fn replaced(&self) -> Vec<(PiiKind, String)> {
        self.replacements().iter().map(|r| (r.kind.clone(), r.placeholder.clone())).collect()
    }

    /// Puts the original values back where their placeholders appear in `answer`.
    pub fn restore(&self, answer: &str) -> String {
        let mut out = answer.to_owned();
        // Longest placeholders first, so that `[PHONE_12]` is not taken for `[PHONE_1]` plus "2]".
        let mut order: Vec<&Replacement> = self.replacements.iter().collect();
        order.sort_by_key(|r| std::cmp::Reverse(r.placeholder.len()));
        for r in order {
            out = out.replace(&r.placeholder, &r.original);
        }
        out
    }
}

/// Finds and replaces personal data.
#[derive(Debug, Clone)]
pub struct Redactor {
    detectors: Vec<(PiiKind, Regex)>,
}

impl Default for Redactor {
    fn default() -> Self {
        Self::new()
    }
}

// The patterns are constants, checked by the tests; a failure here is a bug in this file.
#[allow(clippy::expect_used)]
fn builtin(pattern: &str) -> Regex {
    Regex::new(pattern).expect("built-in pattern")
}

impl Redactor {
    /// A redactor for emails, IBANs, card numbers, IP addresses and phone numbers.
    pub fn new() -> Self {
        let detectors = vec![
            (PiiKind::Email, builtin(r"(?i)\b[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}\b")),
            (PiiKind::Iban, builtin(r"\b[A-Z]{2}[0-9]{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,4})?\b")),
            (PiiKind::Card, builtin(r"\b[0-9](?:[ -]?[0-9]){12,18}\b")),
            (
                PiiKind::IpAddress,
                builtin(
                    r"(?i)\b(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\b|\b(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}\b|\b(?:[0-9a-f]{1,4}:){1,7}:(?:[0-9a-f]{1,4}(?::[0-9a-f]{1,4}){0,6})?\b",
                ),
            ),
            (
                PiiKind::Phone,
                builtin(r"(?:\+[0-9]{1,3}[ .-]?)?(?:\([0-9]{1,4}\)[ .-]?)?[0-9]{2,4}(?:[ .-]?[0-9]{2,4}){1,4}\b"),
            ),
        ];
        Self { detectors }
    }

    /// Adds a pattern of the host's, replaced by `[LABEL_n]`.
    ///
    /// # Errors
    /// [`Error::InvalidSetting`] if the pattern is not a valid regular expression.
    pub fn with_pattern(mut self, label: impl Into<String>, pattern: &str) -> Result<Self> {
        let regex = Regex::new(pattern)
            .map_err(|e| Error::InvalidSetting { setting: "redaction pattern", reason: e.to_string() })?;
        // Host patterns go first: they are the most specific.
        self.detectors.insert(0, (PiiKind::Custom(label.into()), regex));
        Ok(self)
    }

    fn same_detectors(&self, other: &Redactor) -> bool {
        self.detectors.len() == other.detectors.len()
            && self.detectors.iter().zip(&other.detectors).all(|((k, r), (l, q))| k == l && r.as_str() == q.as_str())
    }

    /// Replaces every piece of personal data in `text` by a placeholder. The same value gets the same
    /// placeholder each time it appears.
    pub fn redact(&self, text: &str) -> Redaction {
        let (mut texts, redaction) = self.redact_many(&[text]);
        Redaction { text: texts.pop().unwrap_or_default(), replacements: redaction.replacements }
    }

    /// Redacts several texts (the messages of one request) with one numbering, so that a placeholder means
    /// the same value in all of them. Returns the texts and the redaction to restore answers with.
    pub fn redact_many<S: AsRef<str>>(&self, texts: &[S]) -> (Vec<String>, Redaction) {
        let mut replacements = Vec::new();
        // Placeholders already in the texts (an earlier redaction's) are never reused for another value.
        let taken: Vec<&str> =
            texts.iter().flat_map(|t| placeholder_pattern().find_iter(t.as_ref()).map(|m| m.as_str())).collect();
        let out: Vec<String> = texts.iter().map(|t| self.redact_into(t.as_ref(), &taken, &mut replacements)).collect();
        let text = out.join("\n");
        (out, Redaction { text, replacements })
    }

    fn redact_into(&self, text: &str, taken: &[&str], replacements: &mut Vec<Replacement>) -> String {
        let mut current = text.to_owned();
        for (kind, regex) in &self.detectors {
            let mut out = String::with_capacity(current.len());
            let mut last = 0;
            for m in regex.find_iter(&current) {
                let value = m.as_str();
                if !accept(kind, value) || inside_placeholder(&current, m.start()) {
                    continue;
                }
                let placeholder = match replacements.iter().find(|r| r.original == value && r.kind == *kind) {
                    Some(r) => r.placeholder.clone(),
                    None => {
                        let mut n = replacements.iter().filter(|r| r.kind == *kind).count() + 1;
                        let mut placeholder = format!("[{}_{n}]", kind.label());
                        while taken.contains(&placeholder.as_str()) {
                            n += 1;
                            placeholder = format!("[{}_{n}]", kind.label());
                        }
                        replacements.push(Replacement {
                            kind: kind.clone(),
                            placeholder: placeholder.clone(),
                            original: value.to_owned(),
                        });
                        placeholder
                    }
                };
                out.push_str(&current[last..m.start()]);
                out.push_str(&placeholder);
                last = m.end();
            }
            out.push_str(&current[last..]);
            current = out;
        }
        current
    }
}

/// What a placeholder looks like: `[EMAIL_1]`, `[BOOKING_12]`.
fn placeholder_pattern() -> &'static Regex {
    static PATTERN: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    PATTERN.get_or_init(|| builtin(r"\[[A-Z][A-Z0-9_]*_[0-9]+\]"))
}

/// Whether a match starts inside a placeholder (written by an earlier detector, or an earlier redaction).
/// Only a whole placeholder counts: a stray `[` before a value does not protect it.
fn inside_placeholder(text: &str, at: usize) -> bool {
    placeholder_pattern().find_iter(text).any(|p| p.start() <= at && at < p.end())
}

/// Checks that go beyond the pattern: checksums and digit counts.
fn accept(kind: &PiiKind, value: &str) -> bool {
    let digits: Vec<u32> = value.chars().filter_map(|c| c.to_digit(10)).collect();
    match kind {
        PiiKind::Card => (13..=19).contains(&digits.len()) && luhn(&digits),
        PiiKind::Iban => iban_checksum(value),
        PiiKind::Phone => (7..=15).contains(&digits.len()) && !looks_like_date(value),
        _ => true,
    }
}

fn luhn(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                if d * 2 > 9 {
                    d * 2 - 9
                } else {
                    d * 2
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn iban_checksum(value: &str) -> bool {
    let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut remainder: u32 = 0;
    for c in tail.chars().chain(head.chars()) {
        let n = match c.to_digit(36) {
            Some(n) => n,
            None => return false,
        };
        remainder = if n < 10 { (remainder * 10 + n) % 97 } else { (remainder * 100 + n) % 97 };
    }
    remainder == 1
}

/// `2026-11-28`, `28.11.2026`, `11/28/2026`: numbers with separators that are dates, not phones.
fn looks_like_date(value: &str) -> bool {
    let parts: Vec<&str> = value.split(['-', '.', '/', ' ']).filter(|p| !p.is_empty()).collect();
    parts.len() == 3
        && parts.iter().any(|p| p.len() == 4 && (p.starts_with("19") || p.starts_with("20")))
        && parts.iter().all(|p| p.len() <= 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums() {
        assert!(luhn(&[4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]));
        assert!(!luhn(&[4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2]));
        assert!(iban_checksum("GB82 WEST 1234 5698 7654 32"));
        assert!(!iban_checksum("GB82 WEST 1234 5698 7654 33"));
    }

    #[test]
    fn same_value_same_placeholder_and_restore() {
        let r = Redactor::new().redact("a@b.io, then again a@b.io and c@d.org");
        assert_eq!(r.text(), "[EMAIL_1], then again [EMAIL_1] and [EMAIL_2]");
        assert_eq!(r.restore("[EMAIL_2] < [EMAIL_1]"), "c@d.org < a@b.io");
    }

    #[test]
    fn prices_dates_and_short_numbers_are_left_alone() {
        let text = "The flight SL311 costs 189 EUR on 2026-11-28 at 08:10, gate 12, 3 bags.";
        assert_eq!(Redactor::new().redact(text).text(), text);
    }

    #[test]
    fn host_patterns_come_first() {
        let r = Redactor::new().with_pattern("passport", r"\b[A-Z][0-9]{8}\b").unwrap();
        assert_eq!(r.redact("passport X12345678").text(), "passport [PASSPORT_1]");
        assert!(Redactor::new().with_pattern("bad", "(").is_err());
    }
}
