//! Guardians: the checks that stand between a request and the image.
//!
//! - [`data`]: the Data Guardian: slot values against the JSON Schema an object carries.
//! - [`source`]: gate 1 for methods, before compiling: what a method's Rust source may contain,
//!   and the persistence covenant checked statically.
//! - [`component`]: gate 2, after compiling: the component's imports and exports against the WIT
//!   contract. (Gate 3, the covenant at run time, lives in the sandbox's host state.)

pub mod component;
/// The Data Guardian lives with the image it guards (the `batos-image` crate).
pub use batos_image::guardian as data;
pub mod source;

pub use data::{SCHEMA_SLOT, SchemaViolation, check_slots};
