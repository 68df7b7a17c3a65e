//! Detection: the rule condition language, the fields rules read, rule files and their
//! catalog, the engine that turns events into alerts, and what rules learn from the node.

pub mod catalog;
pub mod condition;
pub mod docs;
pub mod engine;
pub mod fields;
pub mod learn;
pub mod rule;
