//! Mechanical fixes: the mistakes models make that a rule repairs without a model turn. Each
//! answers the fixed source and a line for the transcript; the gates still check the result.
//!
//! - A function with `run`'s signature under another name (`pub fn gcd(me: Obj, args: Vec<Value>)
//!   -> ...`, the model naming it after the selector) becomes `run`.
//! - A covenant refusal that names a write gets `OBJ.notify_changed();` inserted after that
//!   write's statement: the installed source then states the call itself.
//! - `Err("text")` (a `&str` where `run` answers `Result<Value, String>`) becomes
//!   `Err("text".to_string())`.
//! - `me.int("x")?` (a `?` after a helper that answers a plain value: `int`, `float`, `text`,
//!   `list`) loses the `?`.
//! - rustc's machine-applicable suggestions (the `rustfix` crate: what `cargo fix` applies), on
//!   the method's own text only.

/// `run`'s parameters, spaces removed.
const RUN_PARAMETERS: &str = "(me:Obj,args:Vec<Value>)";

/// Renames the one function with `run`'s parameters to `run`, when the source has no `fn run`.
pub fn rename_entry(source: &str) -> Option<(String, String)> {
    if source.contains("fn run") {
        return None;
    }
    let mut found = None;
    let mut at = 0;
    while let Some(offset) = source[at..].find("fn ") {
        let start = at + offset + 3;
        at = start;
        let name_end = start
            + source[start..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(source.len() - start);
        let name = &source[start..name_end];
        let Some(params_end) = source[name_end..].find(')') else {
            continue;
        };
        let params: String = source[name_end..=name_end + params_end]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        if !name.is_empty() && params == RUN_PARAMETERS {
            if found.is_some() {
                // Two candidates: which one is meant is not mechanical.
                return None;
            }
            found = Some((start, name_end, name.to_owned()));
        }
    }
    let (start, end, name) = found?;
    let fixed = format!("{}run{}", &source[..start], &source[end..]);
    Some((
        fixed,
        format!("renamed `fn {name}` (it has `run`'s parameters) to `fn run`"),
    ))
}

/// `Err("literal")` with a string literal becomes `Err("literal".to_string())` (what rustc's
/// E0308 suggests, and always right in `run`).
pub fn owned_errors(source: &str) -> Option<(String, String)> {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    let mut fixed = 0;
    while let Some(at) = rest.find("Err(\"") {
        let literal = at + 5;
        // The literal's end: the next quote not escaped.
        let mut end = None;
        let mut escaped = false;
        for (i, c) in rest[literal..].char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => {
                    end = Some(literal + i);
                    break;
                }
                _ => escaped = false,
            }
        }
        let Some(end) = end else {
            break;
        };
        out.push_str(&rest[..=end]);
        if rest[end + 1..].starts_with(')') {
            out.push_str(".to_string()");
            fixed += 1;
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    (fixed > 0).then(|| (out, format!("made {fixed} `Err(\"...\")` an owned String")))
}

/// Drops the `?` after the SDK's slot helpers, which answer plain values (`me.int("x")?` is
/// rustc's E0277 "the `?` operator can only be applied to values that implement `Try`").
pub fn plain_helpers(source: &str) -> Option<(String, String)> {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    let mut fixed = 0;
    while let Some(at) = ["int(\"", "float(\"", "bool(\"", "text(\"", "list(\""]
        .iter()
        .filter_map(|h| rest.find(&format!(".{h}")).map(|i| (i, h.len() + 1)))
        .min()
    {
        let (start, len) = at;
        let literal = start + len;
        let Some(close) = rest[literal..].find("\")") else {
            break;
        };
        let end = literal + close + 2;
        out.push_str(&rest[..end]);
        rest = &rest[end..];
        if let Some(after) = rest.strip_prefix('?') {
            rest = after;
            fixed += 1;
        } else if let Some(after) = [".unwrap_or_default()", ".unwrap()"]
            .iter()
            .find_map(|u| rest.strip_prefix(u))
        {
            rest = after;
            fixed += 1;
        } else if let Some(after) = rest.strip_prefix(".unwrap_or(")
            && let Some(close) = after.find(')')
            // Only the helper's own default: another would change what the line computes.
            && matches!(after[..close].trim(), "0" | "0.0" | "false" | "\"\"" | "String::new()" | "vec![]" | "Vec::new()")
        {
            rest = &after[close + 1..];
            fixed += 1;
        }
    }
    out.push_str(rest);
    (fixed > 0).then(|| {
        (
            out,
            format!(
                "dropped {fixed} `?` or `unwrap` after a slot helper (it answers a plain value)"
            ),
        )
    })
}

/// Inserts `OBJ.notify_changed();` after each write a covenant refusal names (`... a write to
/// `OBJ` (line N) ...`), where that line ends its statement (`;`). Lines count from 1 in
/// `source` as compiled.
pub fn notify_after_writes(source: &str, refusals: &[String]) -> Option<(String, String)> {
    let mut writes: Vec<(usize, String)> = refusals
        .iter()
        .filter_map(|r| {
            let rest = r.split("a write to `").nth(1)?;
            let (object, rest) = rest.split_once('`')?;
            let line = rest.split("(line ").nth(1)?.split(')').next()?;
            Some((line.trim().parse::<usize>().ok()?, object.to_owned()))
        })
        .collect();
    writes.sort();
    writes.dedup();
    if writes.is_empty() {
        return None;
    }
    let mut lines: Vec<String> = source.lines().map(str::to_owned).collect();
    let mut done = Vec::new();
    // From the last line up, so earlier line numbers stay right.
    for (line, object) in writes.iter().rev() {
        let Some(text) = lines.get(line.wrapping_sub(1)) else {
            continue;
        };
        if !text.trim_end().ends_with(';')
            || !object.chars().all(|c| c.is_alphanumeric() || c == '_')
        {
            continue;
        }
        let indent: String = text.chars().take_while(|c| c.is_whitespace()).collect();
        lines.insert(*line, format!("{indent}{object}.notify_changed();"));
        done.push(format!("line {line}"));
    }
    if done.is_empty() {
        return None;
    }
    done.reverse();
    let mut fixed = lines.join("\n");
    fixed.push('\n');
    Some((
        fixed,
        format!(
            "inserted notify_changed() after the write(s) the covenant named ({})",
            done.join(", ")
        ),
    ))
}

/// Applies rustc's machine-applicable suggestions (`suggestions`: its JSON diagnostics, one per
/// line, as the forge keeps them) to the method's own text: a suggestion that reaches into the
/// SDK's glue after it, or into another file, is left out. Answers nothing when none applies.
pub fn apply_rustc_suggestions(source: &str, suggestions: &str) -> Option<(String, String)> {
    if suggestions.trim().is_empty() {
        return None;
    }
    let found = rustfix::get_suggestions_from_json(
        suggestions,
        &std::collections::HashSet::new(),
        rustfix::Filter::MachineApplicableOnly,
    )
    .ok()?;
    let own: Vec<rustfix::Suggestion> = found
        .into_iter()
        .filter(|s| {
            s.solutions.iter().all(|solution| {
                solution.replacements.iter().all(|r| {
                    r.snippet.file_name == "method.rs" && r.snippet.range.end <= source.len()
                })
            })
        })
        .collect();
    if own.is_empty() {
        return None;
    }
    let fixed = rustfix::apply_suggestions(source, &own).ok()?;
    if fixed == source {
        return None;
    }
    let what: Vec<&str> = own.iter().map(|s| s.message.as_str()).collect();
    Some((
        fixed,
        format!("applied rustc's suggestions: {}", what.join("; ")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_function_with_runs_parameters_becomes_run() {
        let src = "use batos_sdk::prelude::*; pub fn gcd(me: Obj,\n  args: Vec<Value>) -> Result<Value, String> {\n    Ok(json!(1))\n}\n";
        let (fixed, note) = rename_entry(src).expect("renamed");
        assert!(fixed.contains("pub fn run(me: Obj,\n  args"), "{fixed}");
        assert!(note.contains("`fn gcd`"));
        assert_eq!(rename_entry(&fixed), None);
        // A helper with other parameters is left alone; two candidates are not guessed.
        assert_eq!(rename_entry("fn helper(x: i64) -> i64 { x }"), None);
        let two = "fn a(me: Obj, args: Vec<Value>) {}\nfn b(me: Obj, args: Vec<Value>) {}";
        assert_eq!(rename_entry(two), None);
    }

    #[test]
    fn helpers_lose_the_question_mark_they_do_not_need() {
        let src = "let a = me.int(\"a\")?;\nlet b = me.list(\"b\");\nlet c = other.text(\"c\")?.len();\nlet d = arg_int(&args, 0)?;\nlet e = me.text(\"e\").unwrap_or(\"\");\nlet f = me.int(\"f\").unwrap_or(5);\nlet g = me.bool(\"g\").unwrap();";
        let (fixed, note) = plain_helpers(src).expect("fixed");
        assert_eq!(
            fixed,
            "let a = me.int(\"a\");\nlet b = me.list(\"b\");\nlet c = other.text(\"c\").len();\nlet d = arg_int(&args, 0)?;\nlet e = me.text(\"e\");\nlet f = me.int(\"f\").unwrap_or(5);\nlet g = me.bool(\"g\");"
        );
        assert!(note.contains('4'));
        assert_eq!(plain_helpers("let d = arg_int(&args, 0)?;"), None);
    }

    #[test]
    fn literal_errors_become_owned_strings() {
        let src = "if x { return Err(\"no \\\"x\\\"\"); }\nlet y = v.ok_or(\"none\")?;\nErr(\"é\".to_string())\nErr(\"b\")";
        let (fixed, note) = owned_errors(src).expect("fixed");
        assert_eq!(
            fixed,
            "if x { return Err(\"no \\\"x\\\"\".to_string()); }\nlet y = v.ok_or(\"none\")?;\nErr(\"é\".to_string())\nErr(\"b\".to_string())"
        );
        assert!(note.contains('2'));
        assert_eq!(owned_errors("Ok(json!(1))"), None);
    }

    #[test]
    fn notify_goes_after_the_named_write() {
        let src = "use batos_sdk::prelude::*; pub fn run(me: Obj, args: Vec<Value>) -> Result<Value, String> {\n    let n = 2;\n    me.set(\"n\", json!(n))?;\n    Ok(json!(n))\n}\n";
        let refusal = "line 4: [covenant] this exit follows a write to `me` (line 3) with no `me.notify_changed()` before it: notify every object you change".to_owned();
        let (fixed, note) = notify_after_writes(src, &[refusal.clone(), refusal]).expect("fixed");
        assert!(
            fixed.contains("    me.set(\"n\", json!(n))?;\n    me.notify_changed();\n    Ok"),
            "{fixed}"
        );
        assert_eq!(fixed.matches("notify_changed").count(), 1);
        assert!(note.contains("line 3"));
        // A write whose statement does not end on its line is left to the model.
        let open = "fn run(me: Obj, args: Vec<Value>) {\n    me.set(\"n\",\n        json!(1))?;\n    Ok(json!(1))\n}";
        let refusal = "a write to `me` (line 2)".to_owned();
        assert_eq!(notify_after_writes(open, &[refusal]), None);
        assert_eq!(
            notify_after_writes(src, &["line 2: [syntax] oops".into()]),
            None
        );
    }
}
