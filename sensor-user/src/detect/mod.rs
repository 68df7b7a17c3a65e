//! Detection: the rule logic that turns enriched events into alerts.
//!
//! `condition` owns the Falco-like condition language rules are written in: fields, operators,
//! `and`/`or`/`not`, lists and macros, compiled once and evaluated per event.

pub mod condition;
