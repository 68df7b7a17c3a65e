//! `cargo xtask image`: the agent's container image, built offline (no registry, no base
//! image): the release agent and the shared libraries it links, the directories it writes, and
//! nothing else (no shell). Entry point `sensor`, default command `run --json-out -`. How to run
//! it on a node (host PID and network, the capabilities, the mounts) is in `deploy/`.

use std::{fs, os::unix::fs::PermissionsExt, path::Path, process::Command};

use anyhow::{Context, Result};

use crate::{
    build_agent, build_ebpf, docker,
    setup::{self, Purpose},
    util::{self, step},
};

/// The image's name; the tag is the workspace version, and `latest`.
pub const NAME: &str = "sensor/agent";

/// Builds the agent and its image; returns `NAME:VERSION`.
pub fn image(root: &Path) -> Result<String> {
    setup::setup(Purpose::Run)?;
    let obj = build_ebpf::build_ebpf(root)?;
    let sensor = build_agent::build_agent(root, &obj, true)?;
    let tag = format!("{NAME}:{}", env!("CARGO_PKG_VERSION"));
    let rootfs = util::target_dir(root).join("agent-image-rootfs");
    let _ = fs::remove_dir_all(&rootfs);
    let binary = sensor.display().to_string();
    fs::create_dir_all(rootfs.join("usr/local/bin"))?;
    docker::add_host_programs(&rootfs, &[(&binary, "usr/local/bin/sensor")])?;
    for (dir, mode) in [
        ("etc", 0o755),
        ("tmp", 0o1777),
        ("proc", 0o555),
        ("sys", 0o555),
        ("dev", 0o755),
        ("run/sensor", 0o700),
        ("var/lib/sensor", 0o700),
    ] {
        let path = rootfs.join(dir);
        fs::create_dir_all(&path)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
    }
    fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/:/nonexistent\n",
    )?;
    let hash = docker::sha256_file(&sensor)?;
    step(format!("building the image {tag} offline from {binary}..."));
    let changes = [
        r#"ENTRYPOINT ["/usr/local/bin/sensor"]"#.to_string(),
        r#"CMD ["run", "--json-out", "-"]"#.to_string(),
    ];
    let imported = docker::import(&rootfs, &tag, &hash, &changes);
    let _ = fs::remove_dir_all(&rootfs);
    imported?;
    util::run(Command::new("docker").args(["tag", &tag, &format!("{NAME}:latest")]))?;
    let version = util::output(Command::new("docker").args(["run", "--rm", &tag, "--version"]))
        .with_context(|| format!("the new image {tag} does not run"))?;
    step(format!("{tag} works: {}", version.trim()));
    Ok(tag)
}
