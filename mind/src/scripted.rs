//! The scripted mind: a TEST FACILITY, not a model. `batos serve --mind scripted:FILE` answers
//! every prompt from FILE, JSON lines of `{"when": "<text>", "completion": "<text>"}`: the first
//! line whose `when` occurs in the prompt (system text and user text together), or that has no
//! `when`, gives the completion; a line with `"sampled": true` (or `false`) answers only sampled
//! (or only greedy) asks. Lines may answer many prompts. It exists so that cycles can be
//! tested and demonstrated deterministically; its completions go through exactly the extraction,
//! forge and guardian a model's do. A completion is the whole answer: prefills are not added.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Deserialize;

use super::{Ask, Completer, Completion, MindError};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    #[serde(default)]
    when: Option<String>,
    /// `true`: only for sampled asks (a temperature above 0); `false`: only for greedy ones;
    /// absent: both. Lets a script give a cycle's sampled candidates other completions.
    #[serde(default)]
    sampled: Option<bool>,
    completion: String,
}

#[derive(Debug, Clone)]
pub struct ScriptedMind {
    path: PathBuf,
    rules: Vec<Rule>,
}

impl ScriptedMind {
    pub fn load(path: &Path) -> Result<ScriptedMind, MindError> {
        let text = std::fs::read_to_string(path).map_err(|source| MindError::Io {
            path: path.to_owned(),
            source,
        })?;
        let mut rules = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let rule: Rule = serde_json::from_str(line).map_err(|e| {
                MindError::BadRequest(format!(
                    "{} line {}: not a {{\"when\", \"completion\"}} object: {e}",
                    path.display(),
                    n + 1
                ))
            })?;
            rules.push(rule);
        }
        if rules.is_empty() {
            return Err(MindError::BadRequest(format!(
                "{} holds no rules",
                path.display()
            )));
        }
        Ok(ScriptedMind {
            path: path.to_owned(),
            rules,
        })
    }
}

impl Completer for ScriptedMind {
    fn complete(&self, ask: &Ask<'_>) -> Result<Completion, MindError> {
        let started = Instant::now();
        let rule = self
            .rules
            .iter()
            .find(|r| {
                r.when
                    .as_deref()
                    .is_none_or(|w| ask.prompt.contains(w) || ask.system.contains(w))
                    && r.sampled.is_none_or(|s| s == (ask.temperature > 0.0))
            })
            .ok_or_else(|| {
                MindError::Inference(format!(
                    "the script {} has no line for this prompt",
                    self.path.display()
                ))
            })?;
        Ok(Completion {
            text: rule.completion.clone(),
            tokens: 0,
            millis: started.elapsed().as_secs_f64() * 1000.0,
        })
    }

    fn label(&self) -> String {
        format!(
            "scripted:{} (a test facility, not a model)",
            self.path.display()
        )
    }
}
