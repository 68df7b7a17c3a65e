//! Rule files: any YAML next to the shipped `macros.yaml` loads or fails with a positioned
//! error, never a panic; a rule set that loads runs against events without one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor::detect::{catalog, engine::Engine};
use sensor_proto as pb;

fuzz_target!(|raw: &str| {
    let mut files: Vec<(String, String)> = catalog::embedded_files()
        .into_iter()
        .filter(|(name, _)| name == "macros.yaml")
        .collect();
    files.push(("fuzz.yaml".into(), raw.to_string()));
    let Ok(rules) = catalog::compile_all(&files) else {
        return;
    };
    let mut engine = Engine::new(rules, "fuzz".into());
    for kind in [
        "exec",
        "socket",
        "container_started",
        "container_exited",
        "traffic",
    ] {
        let event = pb::Event {
            kind: kind.into(),
            container: Some(pb::Container {
                id: "b".repeat(64),
                ..Default::default()
            }),
            ..Default::default()
        };
        let _ = engine.on_event(&event);
    }
    let _ = engine.tick(1e9);
});
