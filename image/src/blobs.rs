//! Blobs: large immutable values (a mind's weights) kept in the image as numbered chunks, each
//! with its own sha256, so that neither writing nor reading ever holds more than one chunk.
//!
//! A single SQLite value is capped near 1 GB and real models are larger, hence chunks. Writing
//! streams through [`BlobWriter`] inside a transaction; reading goes through [`BlobReader`], a
//! `Read + Seek` that loads one chunk at a time and refuses a chunk whose hash does not match.

use std::io::{self, Read, Seek, SeekFrom, Write};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ImageError;
use crate::object::TxId;

/// The default chunk size: a few MiB keeps the row count small and the memory bounded.
pub const DEFAULT_CHUNK_SIZE: usize = 4 << 20;

/// A blob's identity in the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BlobId(pub i64);

impl std::fmt::Display for BlobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A sealed blob's row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlobRecord {
    pub id: BlobId,
    /// Hex sha256 of the whole content.
    pub sha256: String,
    pub size: u64,
    pub chunk_size: u64,
    pub chunks: u64,
    pub tx: TxId,
}

pub(super) fn record(conn: &Connection, id: BlobId) -> Result<BlobRecord, ImageError> {
    conn.prepare_cached(
        "SELECT sha256, size, chunk_size, chunks, tx FROM blobs WHERE id = ?1 AND complete = 1",
    )?
    .query_row([id.0], |r| {
        Ok(BlobRecord {
            id,
            sha256: r.get(0)?,
            size: r.get::<_, i64>(1)? as u64,
            chunk_size: r.get::<_, i64>(2)? as u64,
            chunks: r.get::<_, i64>(3)? as u64,
            tx: TxId(r.get(4)?),
        })
    })
    .optional()?
    .ok_or(ImageError::NoSuchBlob(id))
}

/// Streams a new blob into the image, one chunk at a time, inside the caller's transaction.
/// Nothing is visible until [`BlobWriter::finish`] seals it and the transaction commits.
#[derive(Debug)]
pub struct BlobWriter<'c> {
    conn: &'c Connection,
    id: BlobId,
    chunk_size: usize,
    buf: Vec<u8>,
    seq: i64,
    written: u64,
    whole: Sha256,
}

impl<'c> BlobWriter<'c> {
    pub(super) fn begin(
        conn: &'c Connection,
        tx: TxId,
        chunk_size: usize,
    ) -> Result<Self, ImageError> {
        if chunk_size == 0 {
            return Err(ImageError::Corrupt(
                "a blob's chunk size must be positive".into(),
            ));
        }
        conn.prepare_cached(
            "INSERT INTO blobs (sha256, size, chunk_size, chunks, complete, tx)
             VALUES ('', 0, ?1, 0, 0, ?2)",
        )?
        .execute(params![chunk_size as i64, tx.0])?;
        Ok(BlobWriter {
            conn,
            id: BlobId(conn.last_insert_rowid()),
            chunk_size,
            buf: Vec::with_capacity(chunk_size),
            seq: 0,
            written: 0,
            whole: Sha256::new(),
        })
    }

    /// Bytes taken so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    fn flush_chunk(&mut self) -> Result<(), ImageError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let digest = Sha256::digest(&self.buf);
        self.conn
            .prepare_cached(
                "INSERT INTO blob_chunks (blob, seq, sha256, data) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![self.id.0, self.seq, digest.as_slice(), self.buf])?;
        self.seq += 1;
        self.buf.clear();
        Ok(())
    }

    /// Writes the last chunk and seals the blob with its size and sha256.
    pub fn finish(mut self) -> Result<BlobRecord, ImageError> {
        self.flush_chunk()?;
        let sha256 = hex::encode(self.whole.clone().finalize());
        self.conn
            .prepare_cached(
                "UPDATE blobs SET sha256 = ?2, size = ?3, chunks = ?4, complete = 1 WHERE id = ?1",
            )?
            .execute(params![self.id.0, sha256, self.written as i64, self.seq])?;
        record(self.conn, self.id)
    }
}

impl Write for BlobWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.chunk_size - self.buf.len();
        let take = room.min(data.len());
        self.buf.extend_from_slice(&data[..take]);
        self.whole.update(&data[..take]);
        self.written += take as u64;
        if self.buf.len() == self.chunk_size {
            self.flush_chunk().map_err(io::Error::other)?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writers of formats that note where they are (GGUF's writer) ask for the position; a blob is
/// written front to back, so that is the only seek it answers.
impl Seek for BlobWriter<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        match pos {
            SeekFrom::Current(0) => Ok(self.written),
            SeekFrom::Start(p) if p == self.written => Ok(self.written),
            _ => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a blob is written front to back and cannot seek",
            )),
        }
    }
}

/// Reads a sealed blob as one stream. Holds one chunk in memory; each chunk's sha256 is checked
/// when it is loaded, so a damaged image gives an error, never wrong bytes.
#[derive(Debug)]
pub struct BlobReader<'c> {
    conn: &'c Connection,
    record: BlobRecord,
    pos: u64,
    chunk: Option<u64>,
    buf: Vec<u8>,
}

impl<'c> BlobReader<'c> {
    pub(super) fn open(conn: &'c Connection, id: BlobId) -> Result<Self, ImageError> {
        let record = record(conn, id)?;
        Ok(BlobReader {
            conn,
            record,
            pos: 0,
            chunk: None,
            buf: Vec::new(),
        })
    }

    pub fn record(&self) -> &BlobRecord {
        &self.record
    }

    fn load(&mut self, seq: u64) -> io::Result<()> {
        let corrupt = |why: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("blob {} is damaged: {why}", self.record.id),
            )
        };
        let mut stmt = self
            .conn
            .prepare_cached("SELECT sha256, data FROM blob_chunks WHERE blob = ?1 AND seq = ?2")
            .map_err(io::Error::other)?;
        let mut rows = stmt
            .query(params![self.record.id.0, seq as i64])
            .map_err(io::Error::other)?;
        let row = rows
            .next()
            .map_err(io::Error::other)?
            .ok_or_else(|| corrupt(format!("chunk {seq} is missing")))?;
        let want: Vec<u8> = row.get(0).map_err(io::Error::other)?;
        let data = match row.get_ref(1).map_err(io::Error::other)? {
            rusqlite::types::ValueRef::Blob(data) => data,
            _ => return Err(corrupt(format!("chunk {seq} is not a blob"))),
        };
        let expected_len =
            (self.record.size - seq * self.record.chunk_size).min(self.record.chunk_size);
        if data.len() as u64 != expected_len {
            return Err(corrupt(format!(
                "chunk {seq} holds {} bytes where {expected_len} were written",
                data.len()
            )));
        }
        if Sha256::digest(data).as_slice() != want.as_slice() {
            return Err(corrupt(format!("chunk {seq} fails its sha256 check")));
        }
        self.buf.clear();
        self.buf.extend_from_slice(data);
        self.chunk = Some(seq);
        Ok(())
    }
}

impl Read for BlobReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.record.size || out.is_empty() {
            return Ok(0);
        }
        let seq = self.pos / self.record.chunk_size;
        if self.chunk != Some(seq) {
            self.load(seq)?;
        }
        let within = (self.pos - seq * self.record.chunk_size) as usize;
        let n = out.len().min(self.buf.len() - within);
        out[..n].copy_from_slice(&self.buf[within..within + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for BlobReader<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let target = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.record.size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let target = target.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of a blob",
            )
        })?;
        self.pos = target;
        Ok(target)
    }
}
