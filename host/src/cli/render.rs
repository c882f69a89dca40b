//! What a command prints: `--json`'s exact `result`, or text for a person.

use super::*;

pub(super) fn render_method(part: Option<&str>, v: &Value) -> String {
    match part {
        Some("source") | Some("wit") => v.as_str().unwrap_or_default().to_owned(),
        Some("report") => pretty(v),
        Some("versions") => v
            .as_array()
            .map(|vs| {
                vs.iter()
                    .map(|x| {
                        format!(
                            "v{}  method {}  {}  tx {}  {} bytes  {}{}",
                            x["version"],
                            x["method"],
                            x["origin"].as_str().unwrap_or(""),
                            x["tx"],
                            x["wasm_bytes"],
                            short_hash(&x["sha256"]),
                            if x["active"] == json!(true) {
                                "  (installed)"
                            } else {
                                ""
                            }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default(),
        _ => {
            let imports: Vec<String> = v["imports"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|i| i["name"].as_str().unwrap_or("").to_owned())
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "{}.{} v{} (method {}, {}, {} bytes, sha256 {})\nimports: {}\nexports: {}\n\n{}",
                v["object"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v["oid"].to_string()),
                v["selector"].as_str().unwrap_or(""),
                v["version"],
                v["method"],
                v["origin"].as_str().unwrap_or(""),
                v["report"]["compile"]["wasm_bytes"],
                v["sha256"].as_str().unwrap_or(""),
                imports.join(", "),
                v["exports"],
                v["source"].as_str().unwrap_or("")
            )
        }
    }
}

/// The first 12 characters of a hash, whatever the host sent.
pub(super) fn short_hash(v: &Value) -> &str {
    let s = v.as_str().unwrap_or("");
    s.get(..12).unwrap_or(s)
}

pub(super) fn print(global: &Global, result: &Value, human: impl FnOnce() -> String) {
    if global.json {
        println!("{result}");
    } else {
        println!("{}", human());
    }
}

pub(super) fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// A person's view of a result.
pub(super) fn render(request: &Request, result: &Value) -> String {
    match request {
        Request::Create { .. } => format!("created object {} (tx {})", result["oid"], result["tx"]),
        Request::Set { .. } | Request::Remove { .. } | Request::Rename { .. } => {
            format!("tx {}", result["tx"])
        }
        Request::Undo { tx } => format!("undid tx {tx} in tx {}", result["tx"]),
        Request::Parents { .. } => {
            let parents: Vec<String> = result["parents"]
                .as_array()
                .map(|a| a.iter().map(Value::to_string).collect())
                .unwrap_or_default();
            format!(
                "parents of {}: {}",
                result["oid"],
                if parents.is_empty() {
                    "(none)".into()
                } else {
                    parents.join(" ")
                }
            )
        }
        Request::Describe { .. } => render_object(result),
        Request::History { .. } => render_history(result),
        Request::Diff { .. } => render_diff(result),
        Request::Replay { .. } => {
            let mut out = format!(
                "replayed to tx {}: state {}",
                result["tx"],
                result["state_hash"].as_str().unwrap_or("")
            );
            if let Some(live) = result["live_hash"].as_str() {
                let verdict = if result["match"] == json!(true) {
                    "match"
                } else {
                    "MISMATCH"
                };
                out.push_str(&format!("\nlive image:        {live} ({verdict})"));
                if let Some(diff) = result["first_difference"].as_str() {
                    out.push_str(&format!("\nfirst difference: {diff}"));
                }
            }
            out
        }
        Request::Ping => format!(
            "batos {} image {} at tx {}",
            result["version"].as_str().unwrap_or("?"),
            result["image"].as_str().unwrap_or("(memory)"),
            result["tx"]
        ),
        Request::Get { .. } | Request::Send { .. } | Request::Method { .. } => pretty(result),
        Request::Generate(_) => result["text"].as_str().unwrap_or_default().to_owned(),
        Request::Cycles { .. } => {
            let rows: Vec<String> = result
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|c| {
                    format!(
                        "{:>5}  {}.{}  {}  attempts {}  {}  {}",
                        c["id"],
                        c["object"],
                        c["selector"].as_str().unwrap_or(""),
                        c["state"].as_str().unwrap_or(""),
                        c["attempts"],
                        c["started"].as_str().unwrap_or(""),
                        match c["state"].as_str() {
                            Some("complete") => format!("method {}", c["outcome"]["method"]),
                            Some("failed") =>
                                c["outcome"]["reason"].as_str().unwrap_or("").to_owned(),
                            _ => String::new(),
                        }
                    )
                })
                .collect();
            if rows.is_empty() {
                "(no cycles)".into()
            } else {
                rows.join("\n")
            }
        }
        Request::Cycle { .. } => {
            let mut out = format!(
                "cycle {}: {}.{} — {} after {} attempt(s)\n",
                result["id"],
                result["object"],
                result["selector"].as_str().unwrap_or(""),
                result["state"].as_str().unwrap_or(""),
                result["attempts"]
            );
            for e in result["events"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let data = &e["data"];
                let line = match e["kind"].as_str().unwrap_or("") {
                    "transition" => format!("→ {}", data["to"].as_str().unwrap_or("")),
                    "prompt" => format!(
                        "prompt to {}:\n{}",
                        data["persona"].as_str().unwrap_or(""),
                        data["prompt"].as_str().unwrap_or("")
                    ),
                    "completion" => format!(
                        "completion by {} ({} tokens, {:.0} ms):\n{}",
                        data["persona"].as_str().unwrap_or(""),
                        data["tokens"],
                        data["millis"].as_f64().unwrap_or(0.0),
                        data["completion"].as_str().unwrap_or("")
                    ),
                    "diagnostic" => format!(
                        "diagnostic ({}): {}",
                        data["stage"].as_str().unwrap_or(""),
                        data["error"].as_str().unwrap_or("")
                    ),
                    kind => format!("{kind}: {data}"),
                };
                out.push_str(&format!("[{}] {line}\n", e["at"].as_str().unwrap_or("")));
            }
            out
        }
        Request::Mind => {
            let field = |k: &str| match &result[k] {
                Value::String(s) => s.clone(),
                Value::Null => "-".into(),
                other => other.to_string(),
            };
            let mut out = String::new();
            for key in [
                "name",
                "architecture",
                "parameters",
                "quantization",
                "file_type",
                "requantized_from",
                "context_length",
                "vocab_size",
                "tokenizer",
                "size",
                "sha256",
                "blob",
                "chunk_size",
                "source",
                "source_sha256",
            ] {
                out.push_str(&format!("{key:<18}{}\n", field(key)));
            }
            let template = result["chat_template"].as_str().map_or("-", |t| {
                if t.contains("<|im_start|>") {
                    "ChatML"
                } else {
                    "present"
                }
            });
            out.push_str(&format!("{:<18}{template}", "chat_template"));
            out
        }
        Request::Install { to, selector, .. } => format!(
            "installed {to}.{selector} version {} (method {}, tx {}): source gate passed, compiled in {:.0} ms, component gate passed",
            result["version"],
            result["method"],
            result["tx"],
            result["report"]["compile"]["millis"]
                .as_f64()
                .unwrap_or(0.0)
        ),
        Request::Revert {
            to,
            selector,
            version,
        } => format!(
            "{to}.{selector} is version {version} again (tx {})",
            result["tx"]
        ),
        Request::Methods { .. } => {
            let rows: Vec<String> = result
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|m| {
                    format!(
                        "{:>5}  {}.{}  v{}  {}  {} bytes  {}",
                        m["method"],
                        m["object"]
                            .as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| m["oid"].to_string()),
                        m["selector"].as_str().unwrap_or(""),
                        m["version"],
                        m["origin"].as_str().unwrap_or(""),
                        m["wasm_bytes"],
                        m["sha256"]
                            .as_str()
                            .map(|s| s.get(..12).unwrap_or(s))
                            .unwrap_or("")
                    )
                })
                .collect();
            if rows.is_empty() {
                "(no methods)".into()
            } else {
                rows.join("\n")
            }
        }
    }
}

pub(super) fn render_object(o: &Value) -> String {
    let mut out = format!("object {}", o["oid"]);
    if let Some(name) = o["name"].as_str() {
        out.push_str(&format!(" `{name}`"));
    }
    let parents: Vec<String> = o["parents"]
        .as_array()
        .map(|a| a.iter().map(Value::to_string).collect())
        .unwrap_or_default();
    out.push_str(&format!(
        "\n  parents: {}",
        if parents.is_empty() {
            "(none)".into()
        } else {
            parents.join(" ")
        }
    ));
    match o["slots"].as_object() {
        Some(slots) if !slots.is_empty() => {
            for (name, value) in slots {
                out.push_str(&format!("\n  {name} = {value}"));
            }
        }
        _ => out.push_str("\n  (no slots)"),
    }
    if let Some(methods) = o["methods"].as_array().filter(|m| !m.is_empty()) {
        let names: Vec<&str> = methods.iter().filter_map(Value::as_str).collect();
        out.push_str(&format!("\n  methods: {}", names.join(" ")));
    }
    out
}

pub(super) fn render_diff(d: &Value) -> String {
    let mut lines = vec![format!("from tx {} until tx {}", d["from"], d["until"])];
    for o in d["objects"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let oid = &o["oid"];
        if o["created"] == true {
            lines.push(format!("  object {oid}: created"));
        } else if o["destroyed"] == true {
            lines.push(format!("  object {oid}: destroyed"));
        }
        for part in ["name", "parents"] {
            if o[part].is_object() {
                lines.push(format!(
                    "  {oid} {part}: {} -> {}",
                    o[part]["from"], o[part]["until"]
                ));
            }
        }
        for (slot, span) in o["slots"].as_object().into_iter().flatten() {
            lines.push(format!(
                "  {oid}.{slot}: {} -> {}",
                slot_text(&span["from"]),
                slot_text(&span["until"])
            ));
        }
    }
    if lines.len() == 1 {
        lines.push("  nothing differs".into());
    }
    lines.join("\n")
}

pub(super) fn render_history(h: &Value) -> String {
    let mut lines = Vec::new();
    for t in h.as_array().map(Vec::as_slice).unwrap_or_default() {
        lines.push(format!(
            "tx {}  {}  {}  {}",
            t["tx"],
            t["at"].as_str().unwrap_or(""),
            t["actor"].as_str().unwrap_or(""),
            t["note"].as_str().unwrap_or("")
        ));
        for c in t["changes"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let oid = &c["oid"];
            let line = match c["what"].as_str().unwrap_or("") {
                "create" => format!("create object {oid}"),
                "destroy" => format!("destroy object {oid}"),
                "slot" => format!(
                    "{oid}.{}: {} -> {}",
                    c["slot"].as_str().unwrap_or(""),
                    slot_text(&c["before"]),
                    slot_text(&c["after"])
                ),
                other => format!("{oid} {other}: {} -> {}", c["before"], c["after"]),
            };
            lines.push(format!("    {line}"));
        }
    }
    if lines.is_empty() {
        "(no transactions)".into()
    } else {
        lines.join("\n")
    }
}

pub(super) fn slot_text(slot: &Value) -> String {
    match slot.get("value") {
        Some(v) => v.to_string(),
        None if slot.is_null() => "(absent)".into(),
        None => slot.to_string(),
    }
}
