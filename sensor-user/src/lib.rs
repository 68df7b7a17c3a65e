//! The sensor agent, by pipeline stage: `loader` (kernel side in), `decode`, `enrich`, `output`,
//! `deliver` (gRPC, spool, OTLP, metrics),
//! with `agent` wiring them into `sensor run`.

pub mod agent;
pub mod caps;
pub mod cgroupfs;
pub mod clock;
pub mod decode;
pub mod deliver;
pub mod detect;
pub mod drops;
pub mod enrich;
pub mod health;
pub mod loader;
pub mod logging;
pub mod privileges;
pub mod trust;
pub mod types;
