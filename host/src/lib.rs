//! batos: a living image of prototype objects whose methods are WebAssembly components.
//!
//! ```text
//! clients ─ZeroMQ─▶ server ─▶ protocol ─▶ image ──▶ SQLite (objects, slots, parents, methods, log)
//! cli (--offline) ──────────▶ protocol ─┘   │
//!                                           ├── object    (ids, slots, delegation lookup; no SQL)
//!                                           └── guardian  (Data Guardian; source and component gates)
//!                             protocol ─▶ method ─▶ forge (rustc) │ sandbox (wasmtime, the covenant)
//! ```
//!
//! - [`object`]: the object model: [`object::Oid`], [`object::Slot`], [`object::lookup`].
//! - [`image`]: the SQLite image: transactions, the change log, replay, undo, methods, the lock.
//! - [`guardian`]: the checks that guard writes and methods.
//! - [`forge`]: one method's Rust source to a component, against the prebuilt guest SDK.
//! - [`sandbox`]: running a method in a fresh wasmtime store, bounded, held to the covenant.
//! - [`method`]: install (all the gates), send, revert, the genesis methods.
//! - [`mind`]: the model in the image: GGUF import into chunked blobs, the tokenizer, the
//!   inference thread.
//! - [`cognition`]: doesNotUnderstand as a mandate: the cognitive cycle that writes, checks and
//!   installs a missing method, its personas and its transcripts.
//! - [`protocol`]: requests as a closed enum, executed against the image.
//! - [`server`]: `batos serve` (the ZeroMQ host) and the client the command line uses.
//! - [`cli`]: the `batos` command line.

#![forbid(unsafe_code)]

pub mod access;
pub mod cli;
pub mod cognition;
pub use batos_methods::{contract, forge, guardian, sandbox};
pub mod genesis;
pub use batos_image as image;
pub use batos_image::object;
pub use batos_methods as method;
pub use batos_mind as mind;
pub mod progress;
pub mod protocol;
pub mod server;
