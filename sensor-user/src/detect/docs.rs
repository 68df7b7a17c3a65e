//! `docs/detections.md`, generated from the rule files in ADS form, so the published document
//! is the rules themselves. A unit test fails when the committed file drifts from the rules.

use std::fmt::Write;

use super::{
    fields::{FIELDS, KEYED_FIELDS},
    rule::{CompiledRule, Exception, Logic},
};

fn bullets(out: &mut String, items: &[String]) {
    for item in items {
        let _ = writeln!(out, "- {}", item.trim());
    }
}

/// `` `a`, `b` `` for key fields.
fn fields_list(key: &[String]) -> String {
    key.iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An exception's criteria, as written: `images: a, b; labels: team=infra; addresses: ...`.
fn criteria(x: &Exception) -> String {
    let code = |items: &mut dyn Iterator<Item = String>| {
        items
            .map(|i| format!("`{i}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut parts = Vec::new();
    if !x.images.is_empty() {
        parts.push(format!("images: {}", code(&mut x.images.iter().cloned())));
    }
    for (what, items) in [
        ("container names", &x.container_names),
        ("Kubernetes namespaces", &x.k8s_namespaces),
        ("executables", &x.executables),
        ("ancestors", &x.ancestors),
        ("addresses", &x.addresses),
    ] {
        if !items.is_empty() {
            parts.push(format!("{what}: {}", code(&mut items.iter().cloned())));
        }
    }
    if !x.labels.is_empty() {
        let mut labels = x.labels.iter().map(|(k, v)| format!("{k}={v}"));
        parts.push(format!("labels: {}", code(&mut labels)));
    }
    if let Some(c) = &x.condition {
        parts.push(format!("condition: `{}`", c.trim()));
    }
    parts.join("; ")
}

/// The whole document.
pub fn markdown(rules: &[CompiledRule]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Detections\n");
    let _ = writeln!(
        out,
        "Generated from `rules/*.yaml` by `cargo xtask docs`; do not edit by hand.\n"
    );
    let _ = writeln!(
        out,
        "Tune a rule without forking it with exceptions (allow-lists by image, container name, \
         label or condition) in an override file given with `--rules DIR`; the format is in \
         `rules/README.md`.\n"
    );
    let _ = writeln!(
        out,
        "| id | name | severity | ATT&CK | tactic |\n|---|---|---|---|---|"
    );
    for r in rules {
        let d = &r.doc;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            d.id,
            d.name,
            d.severity.short_name(),
            d.attack.techniques.join(", "),
            d.attack.tactic
        );
    }
    for r in rules {
        let d = &r.doc;
        let _ = writeln!(out, "\n## {}: {}\n", d.id, d.name);
        let _ = writeln!(out, "### Goal\n{}\n", d.goal.trim());
        let _ = writeln!(
            out,
            "### Categorization\n- ATT&CK: {}\n- Tactic: {}\n- Severity: {}\n",
            d.attack.techniques.join(", "),
            d.attack.tactic,
            d.severity.short_name()
        );
        let _ = writeln!(out, "### Strategy\n{}\n", d.strategy.trim());
        let logic = match &d.logic {
            Logic::Condition { condition } => {
                format!("Condition on one event:\n\n```\n{}\n```", condition.trim())
            }
            Logic::Threshold {
                condition,
                key,
                distinct,
                sum,
                above,
                window_seconds,
            } => {
                let measure = match (distinct, sum) {
                    (Some(f), _) => format!("distinct values of `{f}`"),
                    (None, Some(f)) => format!("the sum of `{f}`"),
                    _ => "matching events".to_string(),
                };
                let key = if key.is_empty() {
                    "the node".to_string()
                } else {
                    fields_list(key)
                };
                format!(
                    "More than {above} ({measure}) per {key} within {window_seconds} s of:\n\n```\n{}\n```",
                    condition.trim()
                )
            }
            Logic::Sequence {
                first,
                then,
                within_seconds,
                key,
            } => {
                let key = fields_list(key);
                format!(
                    "A sequence, per {key}, within {within_seconds} s: first\n\n```\n{}\n```\n\nthen\n\n```\n{}\n```",
                    first.trim(),
                    then.trim()
                )
            }
            Logic::NewValue {
                condition,
                key,
                value,
                learn_seconds,
            } => format!(
                "A new value of `{value}` per {}: learned during the first {learn_seconds} s after \
                 the key is first seen (its first container start or matching event), then \
                 every value outside the learned set fires; of events matching:\n\n```\n{}\n```",
                fields_list(key),
                condition.trim()
            ),
            Logic::Baseline {
                condition,
                key,
                value,
                factor,
                floor,
                min_samples,
                alpha,
            } => format!(
                "The sum of `{value}` per {} and report, above {factor} times its own moving \
                 average (EWMA, weight {alpha}, after at least {min_samples} reports) and above \
                 {floor}; of events matching:\n\n```\n{}\n```",
                fields_list(key),
                condition.trim()
            ),
            Logic::Lifetime {
                max_lifetime_ms,
                notable,
            } => {
                format!(
                    "A container that lived under {max_lifetime_ms} ms and did something notable:\n\n```\n{}\n```",
                    notable.trim()
                )
            }
        };
        let _ = writeln!(out, "### Logic\n{logic}\n");
        if !d.exceptions.is_empty() {
            let _ = writeln!(out, "### Exceptions");
            for x in &d.exceptions {
                let _ = writeln!(out, "- `{}`: {} ({})", x.name, x.reason.trim(), criteria(x));
            }
            let _ = writeln!(out);
        }
        let _ = writeln!(out, "### Blind spots and assumptions");
        bullets(&mut out, &d.blind_spots);
        let _ = writeln!(out, "\n### False positives");
        bullets(&mut out, &d.false_positives);
        let _ = writeln!(out, "\n### Validation\n{}\n", d.validation.trim());
        let _ = writeln!(out, "### Response");
        bullets(&mut out, &d.response);
    }
    let _ = writeln!(out, "\n## Fields\n\n| field | meaning |\n|---|---|");
    for f in FIELDS {
        let _ = writeln!(out, "| `{}` | {} |", f.name, f.doc);
    }
    for f in KEYED_FIELDS {
        let _ = writeln!(out, "| `{}` | {} |", f.name.replace("[]", "[KEY]"), f.doc);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_docs_match_the_rules() {
        let rules = crate::detect::catalog::load(None).unwrap();
        let committed = include_str!("../../../docs/detections.md");
        assert!(
            committed == markdown(&rules),
            "docs/detections.md is out of date with rules/: run `cargo xtask docs` and commit it"
        );
    }
}
