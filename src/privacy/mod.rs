//! What may leave the device: the privacy policy of a run and the redaction of personal data.
//!
//! A [`Privacy`] policy travels in the [`RunContext`](crate::run::RunContext). `LocalOnly` forbids any call to a
//! remote model; `Redact` replaces personal data with placeholders before anything is sent and restores the
//! original values where they come back in the answer. [`Redactor`] finds emails, phone numbers, card numbers
//! (Luhn-checked), IBANs (checksum-checked), IP addresses, national identity numbers (US SSN, UK National
//! Insurance, French INSEE, each checked) and patterns the host adds.
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

mod detect;

use std::collections::{HashMap, HashSet};
use std::ops::Range;
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
    /// An email address, in any script (`josé.müller@exämple.de`, `用户@例子.中国`).
    Email,
    /// A phone number: with a country code (`+44 20 7946 0958`, `0044 …`), 8 to 15 digits; without one, a
    /// national number with a trunk 0 or an area code in parentheses, or a North American 3-3-4 number.
    Phone,
    /// A payment card number (13 to 19 digits grouped as cards are printed, passing the Luhn check).
    Card,
    /// An IBAN (country code, check digits passing the mod-97 check; any case, any spacing).
    Iban,
    /// An IPv4 or IPv6 address (compressed, with an IPv4 tail or a zone).
    IpAddress,
    /// A national identity number with a known shape and check: a US Social Security number, a UK National
    /// Insurance number, a French INSEE (NIR) number.
    NationalId,
    /// A pattern added by the host, with its label.
    Custom(String),
}

impl PiiKind {
    /// The label of the placeholders: `EMAIL` in `[EMAIL_1]`. A host's label is upper-cased, and any
    /// character other than A-Z, 0-9 and `_` becomes `_`, so that every placeholder has one shape.
    fn label(&self) -> String {
        match self {
            PiiKind::Email => "EMAIL".into(),
            PiiKind::Phone => "PHONE".into(),
            PiiKind::Card => "CARD".into(),
            PiiKind::Iban => "IBAN".into(),
            PiiKind::IpAddress => "IP".into(),
            PiiKind::NationalId => "NATIONAL_ID".into(),
            PiiKind::Custom(label) => {
                let label: String = label
                    .to_uppercase()
                    .chars()
                    .map(|c| if c.is_ascii_uppercase() || c.is_ascii_digit() { c } else { '_' })
                    .collect();
                if label.starts_with(|c: char| c.is_ascii_uppercase()) {
                    label
                } else {
                    format!("PII_{label}")
                }
            }
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

    /// Puts the original values back where their placeholders appear in `answer`, in one pass: a restored
    /// value is never read again for placeholders, and `[PHONE_12]` is never taken for `[PHONE_1]`.
    pub fn restore(&self, answer: &str) -> String {
        let values: HashMap<&str, &str> =
            self.replacements.iter().map(|r| (r.placeholder.as_str(), r.original.as_str())).collect();
        let mut out = String::with_capacity(answer.len());
        let mut last = 0;
        for m in placeholder_pattern().find_iter(answer) {
            if let Some(original) = values.get(m.as_str()) {
                out.push_str(&answer[last..m.start()]);
                out.push_str(original);
                last = m.end();
            }
        }
        out.push_str(&answer[last..]);
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

impl Redactor {
    /// A redactor for emails, IBANs, national identity numbers, card numbers, IP addresses and phone
    /// numbers.
    pub fn new() -> Self {
        Self { detectors: detect::builtin_detectors() }
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
        // Placeholders already in the texts (an earlier redaction's) are never reused for another value.
        let taken: HashSet<String> = texts
            .iter()
            .flat_map(|t| placeholder_pattern().find_iter(t.as_ref()).map(|m| m.as_str().to_owned()))
            .collect();
        let labels: HashSet<String> = self.detectors.iter().map(|(kind, _)| kind.label()).collect();
        let mut numbering =
            Numbering { taken, labels, replacements: Vec::new(), known: HashMap::new(), next: HashMap::new() };
        let out: Vec<String> = texts.iter().map(|t| self.redact_into(t.as_ref(), &mut numbering)).collect();
        let text = out.join("\n");
        (out, Redaction { text, replacements: numbering.replacements })
    }

    fn redact_into(&self, text: &str, numbering: &mut Numbering) -> String {
        let mut current = text.to_owned();
        for (kind, regex) in &self.detectors {
            let shields = numbering.shields(&current);
            let mut out = String::with_capacity(current.len());
            let mut last = 0;
            let mut pos = 0;
            // A rejected candidate may hide a real value that starts a little later inside it (`ed 261042A…`
            // is no UK number, but the French one in it is): the search goes on from the next character, up to
            // `RETRY` bytes past the first rejection, then from the candidate's end, so it stays linear.
            let (mut window_end, mut rejected_end) = (0, 0);
            while let Some(m) = regex.find_at(&current, pos) {
                let accepted = if m.is_empty() || inside(&shields, m.start()) {
                    None
                } else {
                    detect::refine(kind, &current, m.range())
                        .filter(|r| r.start >= last && !r.is_empty() && !inside(&shields, r.start))
                };
                match accepted {
                    Some(range) => {
                        let placeholder = numbering.placeholder(kind, &current[range.clone()]);
                        out.push_str(&current[last..range.start]);
                        out.push_str(&placeholder);
                        last = range.end;
                        pos = range.end;
                    }
                    None => {
                        if m.start() >= rejected_end {
                            // A fresh rejection, not inside an earlier rejected candidate.
                            window_end = m.start() + RETRY;
                        }
                        rejected_end = rejected_end.max(m.end());
                        let next = m.start() + current[m.start()..].chars().next().map_or(1, char::len_utf8);
                        pos = if next < window_end { next } else { rejected_end.max(next) };
                    }
                }
                if pos > current.len() {
                    break;
                }
            }
            out.push_str(&current[last..]);
            current = out;
        }
        current
    }
}

/// The placeholders of one redaction: what each value got, the next number of each label, and the
/// placeholders that were in the texts before.
struct Numbering {
    taken: HashSet<String>,
    labels: HashSet<String>,
    replacements: Vec<Replacement>,
    known: HashMap<(PiiKind, String), String>,
    next: HashMap<String, usize>,
}

impl Numbering {
    fn placeholder(&mut self, kind: &PiiKind, value: &str) -> String {
        if let Some(p) = self.known.get(&(kind.clone(), value.to_owned())) {
            return p.clone();
        }
        let label = kind.label();
        let n = self.next.entry(label.clone()).or_insert(1);
        let mut placeholder = format!("[{label}_{n}]");
        while self.taken.contains(&placeholder) {
            *n += 1;
            placeholder = format!("[{label}_{n}]");
        }
        *n += 1;
        self.known.insert((kind.clone(), value.to_owned()), placeholder.clone());
        self.replacements.push(Replacement {
            kind: kind.clone(),
            placeholder: placeholder.clone(),
            original: value.to_owned(),
        });
        placeholder
    }

    /// The spans of `text` no detector may start in: whole placeholders of this redactor's labels (written
    /// by an earlier detector, or by an earlier redaction). Only a whole placeholder counts: a stray `[`
    /// before a value does not protect it, nor does a placeholder-shaped wrapper with an unknown label or a
    /// long number (`[CARD_4111111111111111]`).
    fn shields(&self, text: &str) -> Vec<Range<usize>> {
        placeholder_pattern()
            .find_iter(text)
            .filter(|m| {
                let inner = &m.as_str()[1..m.len() - 1];
                inner.rsplit_once('_').is_some_and(|(label, _)| self.labels.contains(label))
            })
            .map(|m| m.range())
            .collect()
    }
}

/// How far past a rejected candidate's start the search tries again from each character.
const RETRY: usize = 32;

/// What a placeholder looks like: `[EMAIL_1]`, `[BOOKING_12]`.
fn placeholder_pattern() -> &'static Regex {
    static PATTERN: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    PATTERN.get_or_init(|| detect::builtin(r"\[[A-Z][A-Z0-9_]*_[0-9]{1,6}\]"))
}

/// Whether `at` lies inside one of the sorted, disjoint `spans`.
fn inside(spans: &[Range<usize>], at: usize) -> bool {
    let i = spans.partition_point(|s| s.end <= at);
    spans.get(i).is_some_and(|s| s.start <= at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums() {
        use detect::{fr_nir, iban_checksum, luhn, uk_nino, us_ssn};
        assert!(luhn(&[4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]));
        assert!(!luhn(&[4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2]));
        assert!(iban_checksum("GB82 WEST 1234 5698 7654 32"));
        assert!(iban_checksum("gb82 west 1234 5698 7654 32"));
        assert!(!iban_checksum("GB82 WEST 1234 5698 7654 33"));
        assert!(us_ssn("123-45-6789"));
        for bad in ["000-12-3456", "666-12-3456", "912-34-5678", "123-00-4567", "123-45-0000"] {
            assert!(!us_ssn(bad), "{bad}");
        }
        assert!(uk_nino("AB 12 34 56 C"));
        for bad in ["DA123456C", "AO123456C", "GB123456A", "AB123456E", "Ab123456C"] {
            assert!(!uk_nino(bad), "{bad}");
        }
        // 1 85 05 78 006 084: key 97 - 1850578006084 mod 97 = 91.
        assert!(fr_nir("1 85 05 78 006 084 91"));
        assert!(!fr_nir("1 85 05 78 006 084 92"));
        // Corsica: 2A counts as 19.
        let body = "28505".to_owned() + "19" + "006084";
        let key = 97 - body.parse::<u64>().unwrap() % 97;
        assert!(fr_nir(&format!("2 85 05 2A 006 084 {key:02}")));
        assert!(!fr_nir(&format!("2 85 05 2B 006 084 {key:02}")));
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
