//! The built-in detectors: a loose pattern finds candidates, and a check in code keeps those that have the
//! shape, the checksum and the surroundings of the kind (a candidate glued to letters or digits is part of
//! some other token, a date is not a phone number).
//!
//! Every pattern is run by the `regex` crate (finite automata, no backtracking), so a search takes time
//! linear in the text; the checks look at a candidate and the character or two around it.

use std::net::Ipv6Addr;
use std::ops::Range;

use regex::Regex;

use super::PiiKind;

// The patterns are constants, checked by the tests; a failure here is a bug in this file.
#[allow(clippy::expect_used)]
pub(super) fn builtin(pattern: &str) -> Regex {
    Regex::new(pattern).expect("built-in pattern")
}

/// Letters, marks and digits of any script: what a mailbox or a domain label is made of.
const W: &str = r"\p{L}\p{M}\p{N}";

/// The built-in detectors, in the order they run: the most specific shapes first, phone numbers (the
/// loosest) last.
pub(super) fn builtin_detectors() -> Vec<(PiiKind, Regex)> {
    let email = format!(
        r"[{W}_%+\-](?:[{W}._%+'\-]*[{W}_%+\-])?[@＠][{W}](?:[{W}\-]*[{W}])?(?:\.[{W}](?:[{W}\-]*[{W}])?)*\.(?:[\p{{L}}][\p{{L}}\p{{M}}]+|xn--[a-zA-Z0-9\-]+)"
    );
    vec![
        (PiiKind::Email, builtin(&email)),
        // Country code, check digits, then 11 to 30 letters or digits, spaced as people write them.
        (PiiKind::Iban, builtin(r"(?i)[A-Z]{2}[0-9]{2}(?:[ \x{A0}]{0,2}[A-Z0-9]){11,30}")),
        (
            PiiKind::NationalId,
            builtin(concat!(
                // US Social Security number.
                r"[0-9]{3}-[0-9]{2}-[0-9]{4}|[0-9]{3} [0-9]{2} [0-9]{4}",
                // UK National Insurance number.
                r"|(?i:[A-Z]{2}[ ]?[0-9]{2}[ ]?[0-9]{2}[ ]?[0-9]{2}[ ]?[A-D])",
                // French INSEE / NIR number (Corsica's departments are 2A and 2B).
                r"|[1278](?:[ ]?[0-9]){4}[ ]?(?:2[ABab]|[0-9][ ]?[0-9])(?:[ ]?[0-9]){8}",
            )),
        ),
        // The whole run of digits, single separators between them; the check looks at the grouping.
        (PiiKind::Card, builtin(r"[0-9](?:[ .\-]?[0-9]){12,}")),
        (
            PiiKind::IpAddress,
            builtin(concat!(
                r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])",
                // IPv6: any run of hex digits with a colon in it; the check parses it.
                r"|(?i:[0-9a-f]*:[0-9a-f:]*(?:[0-9a-f]|::))",
            )),
        ),
        (
            PiiKind::Phone,
            builtin(
                r"(?:\+[ ]?)?(?:\([ ]?\+?[0-9]{1,4}[ ]?\)|[0-9]{1,14})(?:(?:[ \x{A0}]|[ ]?[.\-–][ ]?|/)?(?:\([0-9]{1,4}\)|[0-9]{1,14})){0,10}",
            ),
        ),
    ]
}

/// Where the value really is in a candidate `text[range]` of a built-in `kind`, or `None` if the candidate is
/// not one. Host patterns are taken as they match.
pub(super) fn refine(kind: &PiiKind, text: &str, range: Range<usize>) -> Option<Range<usize>> {
    match kind {
        PiiKind::Email => Some(range),
        PiiKind::Iban => iban(text, range),
        PiiKind::NationalId => national_id(text, range),
        PiiKind::Card => card(text, range),
        PiiKind::IpAddress => ip(text, range),
        PiiKind::Phone => phone(text, range),
        _ => Some(range),
    }
}

fn before(text: &str, at: usize) -> Option<char> {
    text[..at].chars().next_back()
}

fn before2(text: &str, at: usize) -> Option<char> {
    let mut it = text[..at].chars();
    it.next_back();
    it.next_back()
}

fn after(text: &str, at: usize) -> Option<char> {
    text[at..].chars().next()
}

fn after2(text: &str, at: usize) -> Option<char> {
    text[at..].chars().nth(1)
}

fn is_alnum(c: Option<char>) -> bool {
    c.is_some_and(char::is_alphanumeric)
}

fn is_digit(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_ascii_digit())
}

/// A number stands alone: no letter or digit glued to it, and it does not continue a longer token such as
/// `ORD-2024-118734`, a decimal such as `3.14159…`, a version, or a longer spaced number.
fn stands_alone(text: &str, range: &Range<usize>) -> bool {
    let b = before(text, range.start);
    let a = after(text, range.end);
    if is_alnum(b) || is_alnum(a) || b == Some('+') {
        return false;
    }
    if matches!(b, Some('.' | '-' | '/')) && is_alnum(before2(text, range.start)) {
        return false;
    }
    // The next group of a longer spaced number (`9400 1000 0000 …`), unless it opens with `+` or `(`.
    let opens = text[range.clone()].starts_with(['+', '(']);
    if matches!(b, Some(' ' | '\u{a0}')) && is_digit(before2(text, range.start)) && !opens {
        return false;
    }
    if matches!(a, Some('.' | '-' | '/' | ':')) && is_digit(after2(text, range.end)) {
        return false;
    }
    true
}

// ----- IBAN ---------------------------------------------------------------------------------------------------

/// An IBAN ends where a group ends; a candidate may have run into the next word, so the longest prefix that
/// ends at a word boundary and passes the check wins.
fn iban(text: &str, range: Range<usize>) -> Option<Range<usize>> {
    if is_alnum(before(text, range.start)) {
        return None;
    }
    let candidate = &text[range.clone()];
    // Ends of the alphanumeric characters, with how many came before.
    let mut ends = Vec::new();
    let mut compact = String::new();
    for (i, c) in candidate.char_indices() {
        if c.is_ascii_alphanumeric() {
            compact.push(c.to_ascii_uppercase());
            let end = i + c.len_utf8();
            if !is_alnum(after(candidate, end)) {
                ends.push((compact.len(), end));
            }
        }
    }
    ends.iter()
        .rev()
        .filter(|(n, _)| (15..=34).contains(n))
        .find(|(n, _)| iban_checksum(&compact[..*n]))
        .map(|&(_, end)| range.start..range.start + end)
}

/// The mod-97 check of an IBAN (spaces ignored, letters of either case).
pub(super) fn iban_checksum(value: &str) -> bool {
    let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&compact.len()) || !compact.is_ascii() {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    if !head[..2].chars().all(|c| c.is_ascii_alphabetic()) || !head[2..].chars().all(|c| c.is_ascii_digit()) {
        return false;
    }
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

// ----- National identity numbers -------------------------------------------------------------------------------

fn national_id(text: &str, range: Range<usize>) -> Option<Range<usize>> {
    if !stands_alone(text, &range) {
        return None;
    }
    let value = &text[range.clone()];
    let ok = if value.starts_with(|c: char| c.is_ascii_alphabetic()) {
        uk_nino(value)
    } else if value.len() == 11 && value.chars().filter(|c| c.is_ascii_digit()).count() == 9 {
        us_ssn(value)
    } else {
        fr_nir(value)
    };
    ok.then_some(range)
}

/// `AAA-GG-SSSS` (or spaced): area not 000, 666 or 900-999, group not 00, serial not 0000.
pub(super) fn us_ssn(value: &str) -> bool {
    let digits: String = value.chars().filter(|c| c.is_ascii_digit()).collect();
    if digits.len() != 9 {
        return false;
    }
    let (area, rest) = digits.split_at(3);
    let (group, serial) = rest.split_at(2);
    area != "000" && area != "666" && !area.starts_with('9') && group != "00" && serial != "0000"
}

/// Two prefix letters (not D, F, I, Q, U, V; the second not O; not BG, GB, KN, NK, NT, TN, ZZ), six digits,
/// a suffix A to D; spaces allowed; all letters of one case.
pub(super) fn uk_nino(value: &str) -> bool {
    let letters: Vec<char> = value.chars().filter(|c| c.is_ascii_alphabetic()).collect();
    let digits = value.chars().filter(|c| c.is_ascii_digit()).count();
    if letters.len() != 3 || digits != 6 {
        return false;
    }
    let upper = letters.iter().all(|c| c.is_ascii_uppercase());
    let lower = letters.iter().all(|c| c.is_ascii_lowercase());
    if !upper && !lower {
        return false;
    }
    let l: Vec<char> = letters.iter().map(|c| c.to_ascii_uppercase()).collect();
    let prefix: String = l[..2].iter().collect();
    !"DFIQUV".contains(l[0])
        && !"DFIQUVO".contains(l[1])
        && !["BG", "GB", "KN", "NK", "NT", "TN", "ZZ"].contains(&prefix.as_str())
        && ('A'..='D').contains(&l[2])
}

/// 13 characters (sex, year, month, department, commune, order) and a key of 97 minus the number mod 97;
/// for Corsica's 2A and 2B the number is computed with 19 and 18 in their place.
pub(super) fn fr_nir(value: &str) -> bool {
    let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_uppercase();
    if compact.len() != 15 || !compact.is_ascii() {
        return false;
    }
    let (body, key) = compact.split_at(13);
    let month: u32 = match body[3..5].parse() {
        Ok(m) => m,
        Err(_) => return false,
    };
    if !(matches!(month, 1..=12 | 20 | 30..=42 | 50..=99)) {
        return false;
    }
    let number = match &body[5..7] {
        "2A" => format!("{}19{}", &body[..5], &body[7..]),
        "2B" => format!("{}18{}", &body[..5], &body[7..]),
        _ => body.to_owned(),
    };
    let (Ok(n), Ok(key)) = (number.parse::<u64>(), key.parse::<u64>()) else {
        return false;
    };
    key == 97 - n % 97
}

// ----- Cards ---------------------------------------------------------------------------------------------------

/// 13 to 19 digits starting with 2 to 6 (the card networks' ranges), grouped as cards are printed (fours,
/// or 4-6-5 and 4-6-4) with one kind of separator, passing the Luhn check.
fn card(text: &str, range: Range<usize>) -> Option<Range<usize>> {
    if !stands_alone(text, &range) {
        return None;
    }
    let value = &text[range.clone()];
    let digits: Vec<u32> = value.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) || !(2..=6).contains(&digits[0]) || !luhn(&digits) {
        return None;
    }
    let separators: Vec<char> = value.chars().filter(|c| !c.is_ascii_digit()).collect();
    if separators.windows(2).any(|w| w[0] != w[1]) {
        return None;
    }
    let groups: Vec<usize> = value.split([' ', '.', '-']).map(str::len).collect();
    let card_like = groups.len() == 1
        || groups == [4, 6, 5]
        || groups == [4, 6, 4]
        || (groups[..groups.len() - 1].iter().all(|&g| g == 4) && (1..=4).contains(&groups[groups.len() - 1]));
    card_like.then_some(range)
}

/// The Luhn check of a card number.
pub(super) fn luhn(digits: &[u32]) -> bool {
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

// ----- IP addresses --------------------------------------------------------------------------------------------

fn ip(text: &str, range: Range<usize>) -> Option<Range<usize>> {
    let value = &text[range.clone()];
    if !value.contains(':') {
        // IPv4: not part of a longer dotted number (a version such as 10.0.19045.3803.1).
        let b = before(text, range.start);
        let a = after(text, range.end);
        let glued_before = is_alnum(b) || (b == Some('.') && is_digit(before2(text, range.start)));
        let glued_after = is_alnum(a) || (a == Some('.') && is_digit(after2(text, range.end)));
        return (!glued_before && !glued_after).then_some(range);
    }
    ipv6(text, range)
}

/// A run of hex digits and colons that parses as an IPv6 address, with an IPv4 tail (`::ffff:192.0.2.1`) and
/// a zone (`fe80::1%eth0`) where they follow.
fn ipv6(text: &str, range: Range<usize>) -> Option<Range<usize>> {
    let b = before(text, range.start);
    if is_alnum(b) || matches!(b, Some('_' | ':' | '.')) {
        return None;
    }
    let mut end = range.end;
    // An IPv4 tail: the last group is decimal and a dotted quad goes on.
    let rest = &text[end..];
    if rest.starts_with('.') {
        let tail_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let tail = rest[..tail_len].trim_end_matches('.');
        if tail.matches('.').count() == 3 {
            end += tail.len();
        }
    }
    let address = &text[range.start..end];
    if address.parse::<Ipv6Addr>().is_err() {
        return None;
    }
    // `::1`, or a digit, or three groups: not a word pair such as `A::B`.
    let groups = address.split(':').filter(|g| !g.is_empty()).count();
    if !(address.starts_with("::") || address.chars().any(|c| c.is_ascii_digit()) || groups >= 3) {
        return None;
    }
    if text[end..].starts_with('%') {
        let zone = text[end + 1..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
            .unwrap_or(text.len() - end - 1);
        let zone_text = text[end + 1..end + 1 + zone].trim_end_matches(['.', '-']);
        if !zone_text.is_empty() {
            end += 1 + zone_text.len();
        }
    }
    let a = after(text, end);
    if is_alnum(a) || a == Some('_') {
        return None;
    }
    Some(range.start..end)
}

// ----- Phone numbers -------------------------------------------------------------------------------------------

/// A candidate phone number taken apart: groups of digits (and whether in parentheses) and the separator
/// before each group after the first (`\0` for none).
struct Groups {
    plus: bool,
    groups: Vec<(String, bool)>,
    separators: Vec<char>,
}

fn split_groups(value: &str) -> Groups {
    let mut plus = false;
    let mut groups: Vec<(String, bool)> = Vec::new();
    let mut separators = Vec::new();
    let mut current = String::new();
    let mut paren = false;
    let mut pending = '\0';
    for c in value.chars() {
        match c {
            '+' => plus = true,
            '(' => paren = true,
            ')' => {
                if !current.is_empty() {
                    groups.push((std::mem::take(&mut current), true));
                }
                paren = false;
            }
            '0'..='9' => {
                if current.is_empty() && !groups.is_empty() {
                    separators.push(pending);
                    pending = '\0';
                }
                current.push(c);
            }
            ' ' | '\u{a0}' if !current.is_empty() => {
                groups.push((std::mem::take(&mut current), paren));
                pending = ' ';
            }
            '.' | '-' | '–' | '/' => {
                if !current.is_empty() {
                    groups.push((std::mem::take(&mut current), paren));
                }
                pending = c;
            }
            _ => {}
        }
    }
    if !current.is_empty() {
        groups.push((current, paren));
    }
    Groups { plus, groups, separators }
}

/// A phone number: with a country code (`+44 …`, `0044 …`, `(+44) …`), 8 to 15 digits; without one, a
/// national number that starts with a trunk 0 or an area code in parentheses (9 to 12 digits), a North
/// American 3-3-4 number, or three or more short groups joined by hyphens or dots. Dates and numbers that
/// run on into a time, a decimal or a longer code are not.
fn phone(text: &str, range: Range<usize>) -> Option<Range<usize>> {
    let value = &text[range.clone()];
    let trimmed = value.trim_end();
    let range = range.start..range.start + trimmed.len();
    if !stands_alone(text, &range) {
        return None;
    }
    let g = split_groups(trimmed);
    if g.groups.is_empty() {
        return None;
    }
    let n: usize = g.groups.iter().map(|(d, _)| d.len()).sum();
    let first = &g.groups[0].0;
    let ok = if g.plus {
        (8..=16).contains(&n)
    } else if first.starts_with("00") && (3..=5).contains(&first.len()) && g.groups.len() >= 2 {
        (8..=15).contains(&(n - 2))
    } else if looks_like_date(&g) {
        false
    } else if g.groups.iter().any(|(_, paren)| *paren) {
        (8..=12).contains(&n)
    } else if first.starts_with('0') && !first.starts_with("00") && first.len() >= 2 {
        (9..=12).contains(&n)
    } else {
        north_american(&g) || short_groups(&g, n)
    };
    ok.then_some(range)
}

/// `415 555 0100`, `415.555.0100`, `1-415-555-0100`: area code and exchange starting with 2 to 9.
fn north_american(g: &Groups) -> bool {
    let lens: Vec<usize> = g.groups.iter().map(|(d, _)| d.len()).collect();
    let digits = |i: usize| g.groups[i].0.as_bytes()[0];
    let area_at = match lens.as_slice() {
        [3, 3, 4] => 0,
        [1, 3, 3, 4] if g.groups[0].0 == "1" => 1,
        _ => return false,
    };
    g.separators.iter().all(|&s| s != '\0' && s != '/')
        && (b'2'..=b'9').contains(&digits(area_at))
        && (b'2'..=b'9').contains(&digits(area_at + 1))
}

/// `555-0199-22`, `612.34.56.78`: three or more groups of 2 to 4 digits, one separator (a hyphen or a dot:
/// groups with spaces are too often something else, such as a meeting id or a row of figures), 9 to 11
/// digits; not all fours (a tracking or account number), nor thousands (`123.456.789`).
fn short_groups(g: &Groups, n: usize) -> bool {
    g.groups.len() >= 3
        && (9..=11).contains(&n)
        && g.groups.iter().all(|(d, _)| (2..=4).contains(&d.len()))
        && !g.groups.iter().all(|(d, _)| d.len() == 4)
        && !g.groups[1..].iter().all(|(d, _)| d.len() == 3)
        && g.separators.windows(2).all(|w| w[0] == w[1])
        && g.separators.first().is_some_and(|&s| matches!(s, '-' | '.'))
}

/// `2026-11-28`, `28.11.2026`, `11/28/2026`, `28.11.26`: the first three groups make a date, with one
/// separator between them.
fn looks_like_date(g: &Groups) -> bool {
    if g.groups.len() < 3 {
        return false;
    }
    let (s0, s1) = (g.separators[0], g.separators[1]);
    if s0 != s1 || !matches!(s0, '.' | '/' | '-' | ' ') {
        return false;
    }
    let parts: Vec<&str> = g.groups[..3].iter().map(|(d, _)| d.as_str()).collect();
    let num = |s: &str| s.parse::<u32>().unwrap_or(0);
    let day_month = |a: &str, b: &str| {
        a.len() <= 2 && b.len() <= 2 && {
            let (a, b) = (num(a), num(b));
            (1..=31).contains(&a) && (1..=31).contains(&b) && (a <= 12 || b <= 12)
        }
    };
    let year4 = |s: &str| s.len() == 4 && (s.starts_with("19") || s.starts_with("20"));
    if year4(parts[0]) && day_month(parts[1], parts[2]) {
        return true;
    }
    if year4(parts[2]) && day_month(parts[0], parts[1]) {
        return true;
    }
    // Two-digit years only in a date that stands alone, and not with spaces (`06 12 34 …` is a phone).
    g.groups.len() == 3 && s0 != ' ' && parts[2].len() == 2 && day_month(parts[0], parts[1])
}
