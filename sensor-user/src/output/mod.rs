//! Sinks: where enriched events go.

pub mod json;
