//! The process side of orderlog: what happens when time passes or events arrive, without a
//! caller asking. [`timer::Timer`] fires due deadlines (an unpaid order expires, an idle cart
//! expires, a return window closes) through the command service, once each.

pub mod db;
pub mod lease;
pub mod low_stock;
pub mod reactor;
pub mod timer;
pub mod webhooks;
