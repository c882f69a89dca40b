//! The writer lock: one process at a time may open an image for writing.
//!
//! Locking: an exclusive advisory lock (`flock`, through `File::try_lock`) on `IMAGE.lock`. The
//! kernel drops it when the holding process exits for any reason, kill -9 included, so there is no
//! such thing as an orphaned lock: the file may stay behind, but it locks nothing by existing.
//! The holder writes its pid into the file so a second writer can say who holds it. Readers never
//! take the lock; SQLite's WAL lets them read while the writer writes.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::ImageError;

#[derive(Debug)]
pub struct WriterLock {
    /// Held open for the lock's lifetime: closing it releases the lock.
    _file: File,
    path: PathBuf,
}

impl WriterLock {
    pub fn lock_path(image: &Path) -> PathBuf {
        let mut name = image.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    /// Takes the lock for `image` or says who holds it. Never waits.
    pub fn acquire(image: &Path) -> Result<Self, ImageError> {
        let path = Self::lock_path(image);
        let io = |source| ImageError::Io {
            path: path.clone(),
            source,
        };
        // Never truncate on open: the holder's pid is in there.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                // The holder may be between truncating and writing: no pid is then an honest answer.
                let _ = file.read_to_string(&mut text);
                return Err(ImageError::Locked {
                    path: image.to_owned(),
                    pid: text.trim().parse().ok(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(WriterLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
