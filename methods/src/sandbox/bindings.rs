//! The one place that runs `bindgen!` over `wit/`: the host side of the method contract.
//!
//! Every import is `trappable`: a host function can abort the whole call (deadline passed, send
//! too deep, the image failed) with a trap, as well as answer the guest normally.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "method",
    imports: { default: trappable },
});

pub use self::batos::image::{host, persistence};
