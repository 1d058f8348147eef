//! The HTTP interface of orderlog: commands, read models, the event feed, and auth.
//!
//! Nothing is here yet, on purpose: `orderlog serve` is its own issue. It will be the only
//! crate that knows HTTP.
