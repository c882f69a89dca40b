//! Memory of past methods (the seed's fractal memory): the installed methods most like a new
//! mission, shown to the writer as examples, so that successful cycles teach later ones.
//!
//! Ranking is lexical, BM25 (k1 = 1.2, b = 0.75) over words: a method's document is its object's
//! name, its selector (split at `_` and case changes) and the words of its source (identifiers,
//! slot names, comments); the query is the mission's selector, intent and the receiver's slot
//! names. Models copy examples far more than they follow lists, so what they are shown counts.

use std::collections::{BTreeMap, BTreeSet};

use crate::image::{Image, ImageError};

use super::Mission;

/// Source bytes a recalled method may take in the prompt.
const MAX_SOURCE: usize = 1200;

/// A method recalled for a mission.
#[derive(Debug, Clone, PartialEq)]
pub struct Recalled {
    /// `object.selector`.
    pub label: String,
    pub source: String,
    pub score: f64,
}

/// Words of `text`: lower-case runs of letters and digits, split at `_` and at case changes
/// (`doubleCount`, `double_count` → `double`, `count`); Rust's keywords and the SDK's own words,
/// which every method has, are left out.
pub fn words(text: &str) -> Vec<String> {
    const COMMON: &[&str] = &[
        "use", "batos", "sdk", "prelude", "pub", "fn", "run", "me", "obj", "args", "vec", "value",
        "result", "string", "ok", "err", "let", "json", "mut", "the", "and", "a", "an", "of", "to",
        "it", "is", "in", "set", "get", "notify", "changed", "unwrap", "or", "if", "else",
        "return", "as", "i64", "f64", "str", "self",
    ];
    let mut out = Vec::new();
    let mut word = String::new();
    let mut last_lower = false;
    let flush = |word: &mut String, out: &mut Vec<String>| {
        if word.len() > 1 && !COMMON.contains(&word.as_str()) {
            out.push(std::mem::take(word));
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_alphanumeric() {
            if c.is_uppercase() && last_lower {
                flush(&mut word, &mut out);
            }
            last_lower = c.is_lowercase() || c.is_ascii_digit();
            word.extend(c.to_lowercase());
        } else {
            flush(&mut word, &mut out);
            last_lower = false;
        }
    }
    flush(&mut word, &mut out);
    out
}

/// The `k` installed methods most like `mission`, best first (none that share no word with it).
pub fn recall(image: &Image, mission: &Mission, k: usize) -> Result<Vec<Recalled>, ImageError> {
    if k == 0 {
        return Ok(Vec::new());
    }
    let mut query = words(&mission.selector);
    if let Some(intent) = &mission.intent {
        query.extend(words(intent));
    }
    let receiver = image.describe(mission.receiver, None)?;
    for slot in receiver.slots.keys() {
        query.extend(words(slot));
    }
    let query: BTreeSet<String> = query.into_iter().collect();
    let mut documents = Vec::new();
    for record in image.methods(None)? {
        let (source, _) = image.method_source_and_report(record.method)?;
        let label = format!(
            "{}.{}",
            record
                .object
                .clone()
                .unwrap_or_else(|| record.oid.to_string()),
            record.selector
        );
        let mut terms = words(&label);
        terms.extend(words(&source));
        documents.push((label, source, terms));
    }
    Ok(rank(&query, documents, k))
}

/// BM25 of each document against `query`; the best `k` with a positive score.
fn rank(
    query: &BTreeSet<String>,
    documents: Vec<(String, String, Vec<String>)>,
    k: usize,
) -> Vec<Recalled> {
    let n = documents.len() as f64;
    if documents.is_empty() {
        return Vec::new();
    }
    let average = documents.iter().map(|d| d.2.len()).sum::<usize>() as f64 / n;
    let mut containing: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, _, terms) in &documents {
        let unique: BTreeSet<&str> = terms.iter().map(String::as_str).collect();
        for term in unique {
            *containing.entry(term).or_default() += 1;
        }
    }
    let (k1, b) = (1.2, 0.75);
    let mut scored: Vec<Recalled> = documents
        .iter()
        .map(|(label, source, terms)| {
            let length = terms.len() as f64;
            let score = query
                .iter()
                .map(|q| {
                    let tf = terms.iter().filter(|t| *t == q).count() as f64;
                    if tf == 0.0 {
                        return 0.0;
                    }
                    let df = *containing.get(q.as_str()).unwrap_or(&0) as f64;
                    let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
                    idf * tf * (k1 + 1.0) / (tf + k1 * (1.0 - b + b * length / average.max(1.0)))
                })
                .sum::<f64>();
            Recalled {
                label: label.clone(),
                source: super::brief::clip(source.trim(), MAX_SOURCE),
                score,
            }
        })
        .filter(|r| r.score > 0.0)
        .collect();
    scored.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.label.cmp(&b.label))
    });
    scored.truncate(k);
    scored
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_identifiers_and_drop_what_every_method_has() {
        assert_eq!(
            words("doubleCount double_count"),
            ["double", "count", "double", "count"]
        );
        assert_eq!(
            words("pub fn run(me: Obj) { me.get(\"items\") } // push an item"),
            ["items", "push", "item"]
        );
    }

    #[test]
    fn the_most_similar_methods_rank_first_and_unrelated_ones_not_at_all() {
        let doc = |label: &str, source: &str| {
            let mut terms = words(label);
            terms.extend(words(source));
            (label.to_owned(), source.to_owned(), terms)
        };
        let documents = vec![
            doc(
                "counter.increment",
                "// add one to count\nlet n = me.int(\"count\") + 1;",
            ),
            doc(
                "stack.push",
                "// append to items\nlet mut items = me.list(\"items\");",
            ),
            doc(
                "person.greet",
                "// answer greeting and name\nme.text(\"name\")",
            ),
        ];
        let query: BTreeSet<String> = words("pop the last of items").into_iter().collect();
        let found = rank(&query, documents.clone(), 2);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].label, "stack.push");
        let query: BTreeSet<String> = words("decrement count by one").into_iter().collect();
        assert_eq!(
            rank(&query, documents.clone(), 2)[0].label,
            "counter.increment"
        );
        let query: BTreeSet<String> = words("weather").into_iter().collect();
        assert!(rank(&query, documents, 2).is_empty());
    }
}
