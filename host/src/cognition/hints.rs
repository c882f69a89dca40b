//! Repair hints: for the mistakes models repeat when told only rustc's error, the exact corrected
//! line. Measured on the 1.5B (issue 12): most compile failures were a slot or an argument read
//! through a borrowed `Option<&Vec<Value>>` / `Option<&str>` chain, arithmetic on a `Value`, or an
//! argument moved out of `args`; the SDK's owned helpers make each of them one call.
//!
//! | the model writes | the hint says |
//! | --- | --- |
//! | `me.get("items").and_then(\|v\| v.as_array()).unwrap_or(vec![])` | `me.list("items")` |
//! | `me.get("name").and_then(\|v\| v.as_str()).unwrap_or("")` | `me.text("name")` |
//! | `me.get("count").and_then(\|v\| v.as_i64()).unwrap_or(0)` | `me.int("count")` |
//! | `me.get("x").and_then(\|v\| v.as_f64())...` | `me.float("x")` |
//! | `me.get("count") * 2` | `me.int("count") * 2` |
//! | `args[0].as_i64().unwrap()`, `args.get(0).and_then(\|v\| v.as_i64()).ok_or(..)?` | `arg_int(&args, 0)?` |
//! | `args[0].as_str()...` / `as_f64` / `as_array` | `arg_text` / `arg_float` / `arg_list` `(&args, 0)?` |
//! | `Ok(args[0])` | `Ok(args[0].clone())` |
//! | `xs.iter().sum::<i64>()` over `Value`s | `xs.iter().filter_map(\|v\| v.as_i64()).sum::<i64>()` |
//! | `Value::Int(n)` / `Value::Float(x)` (no such variants) | `Value::Number(n)` with `n.as_i64()` |
//! | `for &x in xs.iter()` / `for &x in &xs` over `Value`s (E0507) | `for x in xs.iter()` |

/// Hints at most per failure.
const MAX_HINTS: usize = 6;

/// Methods a read chain may go through before the helper replaces all of it.
const CHAIN: &[&str] = &[
    "and_then",
    "map",
    "unwrap_or",
    "unwrap_or_default",
    "unwrap_or_else",
    "unwrap",
    "expect",
    "cloned",
    "to_owned",
    "to_string",
    "to_vec",
    "as_array",
    "as_str",
    "as_i64",
    "as_u64",
    "as_f64",
    "ok_or",
    "ok_or_else",
];

/// `line N: `old` -> `new`` for each line of `source` with a known mistake.
pub fn corrected_lines(source: &str) -> Vec<String> {
    source
        .lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let fixed = correct(line);
            (fixed != line)
                .then(|| format!("line {}: `{}` -> `{}`", i + 1, line.trim(), fixed.trim()))
        })
        .take(MAX_HINTS)
        .collect()
}

/// The line with every known mistake replaced.
fn correct(line: &str) -> String {
    let mut out = line.to_owned();
    // Bounded: each pass replaces one read; a line has few.
    for _ in 0..8 {
        match replace_one(&out) {
            Some(next) if next != out => out = next,
            _ => break,
        }
    }
    out
}

fn replace_one(line: &str) -> Option<String> {
    for (wrong, right) in [
        (
            ".iter().sum::<i64>()",
            ".iter().filter_map(|v| v.as_i64()).sum::<i64>()",
        ),
        (
            ".iter().sum::<f64>()",
            ".iter().filter_map(|v| v.as_f64()).sum::<f64>()",
        ),
        (".iter().max()", ".iter().filter_map(|v| v.as_i64()).max()"),
        (".iter().min()", ".iter().filter_map(|v| v.as_i64()).min()"),
        ("Value::Int(", "Value::Number("),
        ("for &", "for "),
        ("Value::Float(", "Value::Number("),
    ] {
        if let Some(at) = line.find(wrong)
            && !line[..at].ends_with("filter_map(|v| v.as_i64())")
            && !line[..at].ends_with("filter_map(|v| v.as_f64())")
        {
            let mut before = line[..at].to_owned();
            // `*xs.iter().max().unwrap()` dereferenced a `&Value`; the number it becomes is not
            // a reference: the `*` goes.
            if right.contains("filter_map") {
                let receiver = before
                    .char_indices()
                    .rev()
                    .find(|(_, c)| !(c.is_alphanumeric() || *c == '_' || *c == '.'))
                    .map_or(0, |(i, c)| i + c.len_utf8());
                if receiver > 0 && before[..receiver].ends_with('*') {
                    before.remove(receiver - 1);
                }
            }
            return Some(format!("{before}{right}{}", &line[at + wrong.len()..]));
        }
    }
    if let Some(fixed) = slot_read(line) {
        return Some(fixed);
    }
    if let Some(fixed) = argument_read(line) {
        return Some(fixed);
    }
    for (pattern, clone) in [("Ok(args[", true)] {
        if let Some(at) = line.find(pattern) {
            let start = at + 3;
            let close = line[start..].find(']')? + start;
            if clone && line[close + 1..].starts_with(')') {
                return Some(format!("{}.clone(){}", &line[..=close], &line[close + 1..]));
            }
        }
    }
    None
}

/// `OBJ.get("NAME")` and its read chain, or followed by arithmetic.
fn slot_read(line: &str) -> Option<String> {
    let mut search = 0;
    while let Some(found) = line[search..].find(".get(\"") {
        let at = search + found;
        search = at + 6;
        // After the last character that is not part of an identifier (whatever its width).
        let object_start = line[..at]
            .char_indices()
            .rev()
            .find(|(_, c)| !(c.is_alphanumeric() || *c == '_'))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let object = &line[object_start..at];
        if object.is_empty() || object == "args" {
            continue;
        }
        let name_start = at + 6;
        let name_end = line[name_start..].find('"')? + name_start;
        let name = &line[name_start..name_end];
        if !line[name_end..].starts_with("\")") {
            continue;
        }
        let base_end = name_end + 2;
        let (chain_end, chain) = chain(line, base_end);
        if changes_meaning(chain) {
            continue;
        }
        let helper = helper_for(chain).or_else(|| {
            // `me.get("count") * 2`: arithmetic on a Value.
            let rest = line[base_end..].trim_start();
            (chain.is_empty() && rest.starts_with(['*', '+', '-', '/', '%'])).then_some("int")
        })?;
        return Some(format!(
            "{}{object}.{helper}(\"{name}\"){}",
            &line[..object_start],
            &line[chain_end..]
        ));
    }
    None
}

/// `args[N]` or `args.get(N)` and a read chain naming a type.
fn argument_read(line: &str) -> Option<String> {
    for open in ["args[", "args.get("] {
        let mut search = 0;
        while let Some(found) = line[search..].find(open) {
            let at = search + found;
            search = at + open.len();
            if at > 0
                && line[..at]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '&')
            {
                continue;
            }
            let index_start = at + open.len();
            let close = if open == "args[" { ']' } else { ')' };
            let index_end = line[index_start..].find(close)? + index_start;
            let index = line[index_start..index_end].trim();
            if index.is_empty() || !index.chars().all(|c| c.is_ascii_digit()) {
                continue;
            }
            let (chain_end, chain) = chain(line, index_end + 1);
            // An optional argument with a default is not what `arg_*` reads.
            if changes_meaning(chain) || chain.contains("unwrap_or") {
                continue;
            }
            let Some(helper) = helper_for(chain) else {
                continue;
            };
            let question = if line[chain_end..].starts_with('?') {
                1
            } else {
                0
            };
            return Some(format!(
                "{}arg_{helper}(&args, {index})?{}",
                &line[..at],
                &line[chain_end + question..]
            ));
        }
    }
    None
}

/// The read chain (`.and_then(..)`, `.unwrap_or(..)`, ...) starting at `from`: where it ends,
/// and its text. A trailing `?` after `ok_or` goes with it (the helper needs none or its own).
fn chain(line: &str, from: usize) -> (usize, &str) {
    let bytes = line.as_bytes();
    let mut at = from;
    loop {
        if bytes.get(at) != Some(&b'.') {
            break;
        }
        let name_end = line[at + 1..]
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map_or(line.len(), |i| i + at + 1);
        let name = &line[at + 1..name_end];
        if !CHAIN.contains(&name) || bytes.get(name_end) != Some(&b'(') {
            break;
        }
        // Balanced parentheses of the call.
        let mut depth = 0;
        let mut end = None;
        for (i, c) in line[name_end..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(name_end + i + 1);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(end) = end else {
            break;
        };
        at = end;
        if name.starts_with("ok_or") && bytes.get(at) == Some(&b'?') {
            at += 1;
        }
    }
    (at, &line[from..at])
}

/// Whether replacing `chain` by a helper would change what the line computes: a `map` does more
/// than read, and a default other than the helper's (0, 0.0, "", empty) is a choice.
fn changes_meaning(chain: &str) -> bool {
    if chain.contains(".map(") || chain.contains("as_u64") {
        return true;
    }
    chain.split(".unwrap_or(").skip(1).any(|rest| {
        let default = rest.split(')').next().unwrap_or("").trim();
        !matches!(default, "0" | "0.0" | "0.0f64" | "\"\"" | "vec![]" | "Vec::new()" | "&vec![]" | "&[]" | "String::new()" | "false")
            // `unwrap_or(vec![])` ends at its own `]`: the split above keeps `vec![]` whole.
            && !default.starts_with("vec![]")
    })
}

/// The helper a chain's type asks for: `list`, `text`, `int`, `float`.
fn helper_for(chain: &str) -> Option<&'static str> {
    if chain.contains("as_array") {
        Some("list")
    } else if chain.contains("as_str") {
        Some("text")
    } else if chain.contains("as_i64") || chain.contains("as_u64") {
        Some("int")
    } else if chain.contains("as_f64") {
        Some("float")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_of_repeated_mistakes() {
        for (wrote, hint) in [
            (
                "let items = me.get(\"items\").and_then(|v| v.as_array()).unwrap_or(vec![]);",
                "let items = me.list(\"items\");",
            ),
            (
                "    let mut xs = me.get(\"xs\").and_then(|v| v.as_array().cloned()).unwrap_or_default();",
                "    let mut xs = me.list(\"xs\");",
            ),
            (
                "let name = me.get(\"name\").and_then(|v| v.as_str()).unwrap_or(\"\");",
                "let name = me.text(\"name\");",
            ),
            (
                "let n = me.get(\"count\").and_then(|v| v.as_i64()).unwrap_or(0) * 2;",
                "let n = me.int(\"count\") * 2;",
            ),
            (
                "let n: i64 = me.get(\"count\") * 2;",
                "let n: i64 = me.int(\"count\") * 2;",
            ),
            (
                "let t = other.get(\"t\").and_then(|v| v.as_f64()).unwrap_or(0.0);",
                "let t = other.float(\"t\");",
            ),
            (
                "let x = args[0].as_i64().unwrap();",
                "let x = arg_int(&args, 0)?;",
            ),
            (
                "let s = args.get(1).and_then(|v| v.as_str()).ok_or(\"no\")?;",
                "let s = arg_text(&args, 1)?;",
            ),
            (
                "let xs = args[0].as_array().unwrap();",
                "let xs = arg_list(&args, 0)?;",
            ),
            ("Ok(args[0])", "Ok(args[0].clone())"),
            (
                "let sum = numbers.iter().sum::<i64>();",
                "let sum = numbers.iter().filter_map(|v| v.as_i64()).sum::<i64>();",
            ),
            (
                "let m = xs.iter().max();",
                "let m = xs.iter().filter_map(|v| v.as_i64()).max();",
            ),
            // Not ASCII before the list: no panic, nothing dereferenced to drop.
            (
                "let s = \"«\"; let m = xs.iter().max();",
                "let s = \"«\"; let m = xs.iter().filter_map(|v| v.as_i64()).max();",
            ),
            (
                "// →xs.iter().max()",
                "// →xs.iter().filter_map(|v| v.as_i64()).max()",
            ),
            // Seen from the 1.5B: the `*` stayed in the hint, and the repair kept it (E0614).
            (
                "    let largest = *numbers.iter().max().unwrap();",
                "    let largest = numbers.iter().filter_map(|v| v.as_i64()).max().unwrap();",
            ),
            (
                "Value::Int(n) => sum += n,",
                "Value::Number(n) => sum += n,",
            ),
            (
                "    for &num in numbers.iter() {",
                "    for num in numbers.iter() {",
            ),
            (
                "let a = args[0].as_i64().unwrap() + args[1].as_i64().unwrap();",
                "let a = arg_int(&args, 0)? + arg_int(&args, 1)?;",
            ),
        ] {
            assert_eq!(correct(wrote), hint, "{wrote}");
        }
        // Right already, nothing known, or a change of meaning: no hint.
        for fine in [
            "let n = me.get(\"count\").and_then(|v| v.as_i64()).unwrap_or(5);",
            "let k = me.get(\"xs\").map(|v| v.as_array().unwrap().len());",
            "let a = args.get(0).and_then(|v| v.as_i64()).unwrap_or(1);",
            "let n = me.int(\"count\");",
            "me.set(\"count\", json!(n))?;",
            "let v = me.get(\"x\");",
            "let y = myargs[0].as_i64();",
        ] {
            assert_eq!(correct(fine), fine);
        }
        // Identifiers after wide characters: no panic, the right replacement.
        assert_eq!(
            correct("// “me.get(\"n\").and_then(|v| v.as_f64())” → é"),
            "// “me.float(\"n\")” → é"
        );
        assert_eq!(correct("•x.get(\"n\") * 2"), "•x.int(\"n\") * 2");
        let hints = corrected_lines(
            "fn run() {\n    let n = me.get(\"c\").and_then(|v| v.as_i64()).unwrap_or(0);\n}",
        );
        assert_eq!(
            hints,
            vec![
                "line 2: `let n = me.get(\"c\").and_then(|v| v.as_i64()).unwrap_or(0);` -> `let n = me.int(\"c\");`"
            ]
        );
    }
}
