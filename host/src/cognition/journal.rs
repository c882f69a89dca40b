//! The journal: the transcript's second home, one JSON line per event beside the image.

use super::*;

/// The transcript's second home: one JSON line per event in `IMAGE.cycles.jsonl`.
#[derive(Debug, Clone)]
pub struct Journal {
    path: Option<PathBuf>,
}

impl Journal {
    /// The journal beside the image at `image` (none for an in-memory image).
    pub fn beside(image: Option<&Path>) -> Journal {
        Journal {
            path: image.map(|p| {
                let mut name = p.as_os_str().to_owned();
                name.push(".cycles.jsonl");
                PathBuf::from(name)
            }),
        }
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub(super) fn append(&self, event: &Value) -> Result<(), CognitionError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let fail = |source| CognitionError::Journal {
            path: path.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(fail)?;
        file.write_all(format!("{event}\n").as_bytes())
            .map_err(fail)
    }
}
