//! The rule catalog: the rules embedded in the binary (from `rules/` at build time), extended or
//! overridden (by id) by a directory given with `--rules`.

use std::{collections::BTreeMap, fs, path::Path};

use anyhow::{Context, Result};

use super::{
    fields,
    rule::{CompiledRule, RuleError, SharedDefs, compile_rule, parse_shared},
};

/// `(file name, contents)` of every file in `rules/`, embedded by the build script.
mod embedded {
    include!(concat!(env!("OUT_DIR"), "/rules.rs"));
}

/// The shared definitions file of a rule directory.
pub const SHARED_FILE: &str = "macros.yaml";

/// Compiles a set of rule files; every error is collected, not just the first.
pub fn compile_all(files: &[(String, String)]) -> Result<Vec<CompiledRule>, Vec<RuleError>> {
    let mut errors = Vec::new();
    let mut shared = SharedDefs::default();
    for (name, raw) in files.iter().filter(|(n, _)| file_name(n) == SHARED_FILE) {
        match parse_shared(name, raw) {
            Ok(s) => {
                shared.lists.extend(s.lists);
                shared.macros.extend(s.macros);
            }
            Err(e) => errors.push(e),
        }
    }
    let mut rules: BTreeMap<String, CompiledRule> = BTreeMap::new();
    for (name, raw) in files.iter().filter(|(n, _)| file_name(n) != SHARED_FILE) {
        match compile_rule(name, raw, &shared, &fields::EventSchema) {
            // A later file with the same id overrides an earlier one (the directory the embedded).
            Ok(rule) => {
                rules.insert(rule.doc.id.clone(), rule);
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(rules.into_values().collect())
    } else {
        Err(errors)
    }
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The embedded rule files.
pub fn embedded_files() -> Vec<(String, String)> {
    embedded::FILES
        .iter()
        .map(|(n, c)| (format!("rules/{n}"), c.to_string()))
        .collect()
}

/// The `*.yaml` files of `dir`, sorted by name.
pub fn dir_files(dir: &Path) -> Result<Vec<(String, String)>> {
    let mut files = Vec::new();
    for entry in
        fs::read_dir(dir).with_context(|| format!("reading rule directory {}", dir.display()))?
    {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let raw =
                fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            files.push((path.display().to_string(), raw));
        }
    }
    files.sort();
    Ok(files)
}

/// The embedded rules plus those of `dir`, compiled; errors listed one per line.
pub fn load(dir: Option<&Path>) -> Result<Vec<CompiledRule>> {
    let mut files = embedded_files();
    if let Some(dir) = dir {
        files.extend(dir_files(dir)?);
    }
    compile_all(&files).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        anyhow::anyhow!("{} rule file error(s):\n{}", errors.len(), lines.join("\n"))
    })
}

/// The newest modification time of the rule files in `dir` and how many there are: a change
/// in either means the directory should be reloaded.
pub fn dir_stamp(dir: &Path) -> Option<(std::time::SystemTime, usize)> {
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    let mut count = 0;
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            count += 1;
            if let Ok(modified) = entry.metadata().and_then(|m| m.modified()) {
                newest = newest.max(modified);
            }
        }
    }
    Some((newest, count))
}

/// A version for a rule set: a hash of the rule files, so two agents can tell they differ.
pub fn version(rules: &[CompiledRule]) -> String {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    for r in rules {
        r.doc.id.hash(&mut h);
        format!("{:?}", r.doc).hash(&mut h);
    }
    format!("{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_catalog_compiles() {
        let rules = load(None).expect("embedded rules compile");
        assert!(!rules.is_empty());
        let mut ids: Vec<&str> = rules.iter().map(|r| r.doc.id.as_str()).collect();
        ids.dedup();
        assert_eq!(ids.len(), rules.len(), "duplicate rule id");
    }

    #[test]
    fn all_errors_are_reported_with_positions() {
        let mut files = embedded_files();
        let (name, raw) = files
            .iter()
            .find(|(n, _)| !n.ends_with(SHARED_FILE))
            .cloned()
            .unwrap();
        files.push((
            "extra/broken.yaml".into(),
            raw.replace("logic:", "logic:\n  bogus: 1\n"),
        ));
        files.push(("extra/bad.yaml".into(), "id: [unclosed".into()));
        let errors = compile_all(&files).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?} (from {name})");
        assert!(
            errors
                .iter()
                .any(|e| e.file == "extra/bad.yaml" && e.line == 1 && e.column == 5),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.file == "extra/broken.yaml" && e.message.contains("bogus")),
            "{errors:?}"
        );
    }
}
