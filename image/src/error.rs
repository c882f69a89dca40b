//! The image's errors.

use super::*;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("no image at {}: create one with `batos init`", .0.display())]
    NotFound(PathBuf),
    #[error("an image already exists at {}", .0.display())]
    AlreadyExists(PathBuf),
    #[error(
        "the image {} is open for writing by another process{}; stop it first, or use a read-only command",
        path.display(),
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Locked { path: PathBuf, pid: Option<u32> },
    #[error(
        "this image has schema version {found}, newer than this batos knows ({known}): upgrade batos"
    )]
    NewerSchema { found: i64, known: i64 },
    #[error(
        "this image has schema version {found}, older than {known}: open it once for writing to migrate it"
    )]
    OlderSchema { found: i64, known: i64 },
    #[error(
        "the value for `{slot}` is larger than {limit} bytes as JSON: keep large data in several slots or objects"
    )]
    ValueTooLarge { slot: String, limit: usize },
    #[error("the value for `{slot}` cannot be kept: {reason}")]
    BadValue { slot: String, reason: String },
    #[error("a request with the key `{0}` is being applied right now: retry to get its reply")]
    KeyApplied(String),
    #[error("a transaction is already open on this image connection")]
    InTransaction,
    #[error("this image is open read-only")]
    ReadOnly,
    #[error("no object `{0}` in this image")]
    NoSuchObject(ObjRef),
    #[error("object {oid} has no slot `{slot}`")]
    NoSuchSlot { oid: Oid, slot: String },
    #[error("`{slot}` of object {oid} is a method: send it, or see it with `batos method`")]
    HoldsMethod { oid: Oid, slot: String },
    #[error("no method {0} in this image")]
    NoSuchMethod(String),
    #[error("no blob {0} in this image")]
    NoSuchBlob(BlobId),
    #[error("no transaction {0} in this image")]
    NoSuchTransaction(TxId),
    #[error("the name `{name}` is already taken by object {holder}")]
    NameTaken { name: String, holder: Oid },
    #[error("`{name}` cannot be an object's name: {reason}")]
    BadName { name: String, reason: &'static str },
    #[error(
        "making [{}] the parents of object {child} would close a delegation cycle",
        parents.iter().map(Oid::to_string).collect::<Vec<_>>().join(", ")
    )]
    ParentCycle { child: Oid, parents: Vec<Oid> },
    #[error("object {oid}: {violation}")]
    SchemaViolation {
        oid: Oid,
        violation: SchemaViolation,
    },
    #[error(
        "cannot undo transaction {tx}: transaction {later} later changed the same {what} of object {oid}"
    )]
    Conflict {
        tx: TxId,
        later: TxId,
        oid: Oid,
        what: String,
    },
    #[error("cannot undo transaction {tx}: {reason}")]
    Irreversible { tx: TxId, reason: String },
    #[error(transparent)]
    TooDeep(#[from] LookupError<std::convert::Infallible>),
    #[error("the image file is damaged: {0}")]
    Corrupt(String),
    #[error("cannot use {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("image database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

impl ImageError {
    /// Whether this is the host's own failure (a damaged or newer image, I/O, SQLite) rather than
    /// a request's or a method's misuse of the image.
    pub fn is_host_fault(&self) -> bool {
        matches!(
            self,
            ImageError::NewerSchema { .. }
                | ImageError::OlderSchema { .. }
                | ImageError::Corrupt(_)
                | ImageError::InTransaction
                | ImageError::Io { .. }
                | ImageError::Sqlite(_)
        )
    }
}

/// Lookup errors carry the graph's error type; the image's graph only fails with SQL errors,
/// which are lifted into [`ImageError`] before the walk sees them.
impl From<LookupError<ImageError>> for ImageError {
    fn from(e: LookupError<ImageError>) -> Self {
        match e {
            LookupError::TooDeep { receiver, selector } => {
                ImageError::TooDeep(LookupError::TooDeep { receiver, selector })
            }
            LookupError::Graph(e) => e,
        }
    }
}
