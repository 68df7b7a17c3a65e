//! Detection: the rule condition language, the fields rules read, rule files and their
//! catalog, and the engine that turns events into alerts.

pub mod catalog;
pub mod condition;
pub mod docs;
pub mod engine;
pub mod fields;
pub mod rule;
