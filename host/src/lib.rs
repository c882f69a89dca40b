//! batos: a living image of prototype objects.
//!
//! ```text
//! cli ──▶ protocol ──▶ image ──▶ SQLite (one file: objects, slots, parents, the change log)
//!                        │
//!                        ├── object    (ids, slots, delegation lookup; no SQL)
//!                        └── guardian  (the Data Guardian: slot schemas)
//! ```
//!
//! - [`object`]: the object model: [`object::Oid`], [`object::Slot`], [`object::lookup`].
//! - [`image`]: the SQLite image: transactions, the change log, replay, undo, the writer lock.
//! - [`guardian`]: checks that guard writes (JSON Schema on slots).
//! - [`protocol`]: requests as a closed enum, executed against the image.
//! - [`cli`]: the `batos` command line over the protocol.

pub mod cli;
pub mod forge;
pub mod guardian;
pub mod image;
pub mod method;
pub mod object;
pub mod protocol;
pub mod sandbox;
pub mod server;
