//! Integration tests: one binary, a module per topic, driving the real image file and the real
//! `batos` binary. See `tests/README.md` at the repository root for the tiers.

mod cli;
mod cognition;
mod examples;
mod external;
mod host;
mod image;
mod lifecycle;
mod limits;
mod methods;
mod mind;
mod repairs;
mod replay_property;
mod support;
