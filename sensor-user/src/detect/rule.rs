//! Rule files: one YAML file per rule carrying its ADS document (goal, ATT&CK, severity,
//! strategy, blind spots, false positives, validation, response) and its logic, so the document
//! and the code cannot drift. `macros.yaml` in the same directory holds shared lists and macros.
//!
//! Loading compiles every condition once; an error names the file, line and column.

use std::collections::BTreeMap;

use sensor_proto as pb;
use serde::{Deserialize, Deserializer};

use super::condition::{self, Cidr, Condition, ConditionError, Definitions, Schema};

/// ATT&CK mapping.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attack {
    pub techniques: Vec<String>,
    pub tactic: String,
}

/// What a rule matches.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Logic {
    /// One event matches `condition`.
    Condition { condition: String },
    /// More than `above` matching events (or distinct values of `distinct`) with the same `key`
    /// fields within `window_seconds`.
    Threshold {
        condition: String,
        #[serde(default)]
        key: Vec<String>,
        #[serde(default)]
        distinct: Option<String>,
        /// Sum this integer field instead of counting matches.
        #[serde(default)]
        sum: Option<String>,
        above: u64,
        window_seconds: u64,
    },
    /// A container that exits less than `max_lifetime_ms` after it started, having done something
    /// that matches `notable`; the alert is raised at its exit and lists what it did.
    Lifetime {
        max_lifetime_ms: u64,
        notable: String,
    },
    /// An event matching `first`, then one matching `then` with the same `key` (default: the
    /// container) within `within_seconds`.
    Sequence {
        first: String,
        then: String,
        within_seconds: u64,
        #[serde(default = "container_key")]
        key: Vec<String>,
    },
    /// Learns the values of `value` that matching events show per `key` during the key's first
    /// `learn_seconds` (from its first container start or matching event, whichever comes
    /// first); afterwards a matching event with a value outside the learned set fires.
    NewValue {
        condition: String,
        key: Vec<String>,
        value: String,
        learn_seconds: u64,
    },
    /// Sums `value` over matching events per `key` and report (events with the same time), and
    /// fires when a report is above `factor` times the key's moving average of earlier reports
    /// (EWMA with weight `alpha`, at least `min_samples` of them) and above `floor`.
    Baseline {
        condition: String,
        key: Vec<String>,
        value: String,
        factor: f64,
        floor: u64,
        #[serde(default = "min_samples")]
        min_samples: u32,
        #[serde(default = "alpha")]
        alpha: f64,
    },
}

fn min_samples() -> u32 {
    3
}

fn alpha() -> f64 {
    0.3
}

fn container_key() -> Vec<String> {
    vec!["container.id".into()]
}

/// Alert at most once per `key` per `seconds`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Throttle {
    pub key: Vec<String>,
    pub seconds: u64,
}

/// A documented allow-list entry: events it matches never fire the rule.
///
/// The criteria given must all hold; each list holds when any of its entries does. Images,
/// names, label values, executables and ancestors are globs (`*`, `?`); addresses are CIDR
/// blocks or single addresses. An image entry matches the image as it was run
/// (`container.image`) or its repository (`container.image.repository`), so `registry/ci` covers
/// every tag of it and `registry/ci:2.*` only some.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exception {
    pub name: String,
    pub reason: String,
    #[serde(default)]
    pub condition: Option<String>,
    #[serde(default)]
    pub images: Vec<String>,
    #[serde(default)]
    pub container_names: Vec<String>,
    /// Label key -> value glob; every one must match.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The process's executable (`proc.exe`).
    #[serde(default)]
    pub executables: Vec<String>,
    /// Any ancestor's executable, up to the container's first process (`proc.ancestors`).
    #[serde(default)]
    pub ancestors: Vec<String>,
    /// The event's remote address (`net.peer.address`): `10.0.5.0/24`, `fd00::/8`, `10.0.5.9`.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// The Kubernetes namespace of the container's pod (`k8s.ns.name`).
    #[serde(default)]
    pub k8s_namespaces: Vec<String>,
}

/// A literal for a generated condition: quoted, with `"` and `\` escaped.
fn quoted(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Exception {
    /// The exception as one condition: its criteria joined with `and`; `None` when it has none.
    pub fn to_condition(&self) -> Option<String> {
        let any = |tests: Vec<String>| format!("({})", tests.join(" or "));
        let mut all = Vec::new();
        if !self.images.is_empty() {
            all.push(any(self
                .images
                .iter()
                .flat_map(|p| {
                    [
                        format!("container.image glob {}", quoted(p)),
                        format!("container.image.repository glob {}", quoted(p)),
                    ]
                })
                .collect()));
        }
        for (field, globs) in [
            ("container.name", &self.container_names),
            ("k8s.ns.name", &self.k8s_namespaces),
            ("proc.exe", &self.executables),
            ("proc.ancestors", &self.ancestors),
        ] {
            if !globs.is_empty() {
                all.push(any(globs
                    .iter()
                    .map(|p| format!("{field} glob {}", quoted(p)))
                    .collect()));
            }
        }
        for (key, value) in &self.labels {
            all.push(format!("container.label[{key}] glob {}", quoted(value)));
        }
        if !self.addresses.is_empty() {
            let blocks: Vec<String> = self.addresses.iter().map(|a| quoted(a)).collect();
            all.push(format!("net.peer.address in_cidr ({})", blocks.join(", ")));
        }
        if let Some(c) = &self.condition {
            all.push(format!("({c})"));
        }
        (!all.is_empty()).then(|| all.join(" and "))
    }
}

/// A rule file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDoc {
    pub id: String,
    pub name: String,
    pub goal: String,
    pub attack: Attack,
    /// `info`, `low`, `medium`, `high` or `critical`, read once at load.
    #[serde(deserialize_with = "rule_severity")]
    pub severity: pb::Severity,
    pub strategy: String,
    pub blind_spots: Vec<String>,
    pub false_positives: Vec<String>,
    pub validation: String,
    pub response: Vec<String>,
    #[serde(default)]
    pub lists: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub macros: BTreeMap<String, String>,
    pub logic: Logic,
    #[serde(default)]
    pub exceptions: Vec<Exception>,
    /// Summary template: `{field}` is replaced by the triggering event's value.
    pub output: String,
    /// At most one alert per value of these fields per period (a host-network container
    /// alerts once, not at every exec).
    #[serde(default)]
    pub throttle: Option<Throttle>,
    #[serde(default = "enabled")]
    pub enabled: bool,
}

fn enabled() -> bool {
    true
}

/// Shared lists and macros (`macros.yaml`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedDefs {
    #[serde(default)]
    pub lists: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub macros: BTreeMap<String, String>,
}

/// A rule ready to evaluate.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    pub doc: RuleDoc,
    pub file: String,
    /// The main condition (threshold/condition logic), or `notable` (lifetime logic).
    pub condition: Condition,
    /// Sequence logic: the second step (`condition` is the first).
    pub then: Option<Condition>,
    pub exceptions: Vec<(String, Condition)>,
}

/// A rule file that does not load: where and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct RuleError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// A rule's `severity` as rule files write it (lower case, no prefix); anything else is a load
/// error at the value's line and column that lists the names.
fn rule_severity<'de, D: Deserializer<'de>>(d: D) -> Result<pb::Severity, D::Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Written {
        Info,
        Low,
        Medium,
        High,
        Critical,
    }
    Ok(match Written::deserialize(d)? {
        Written::Info => pb::Severity::Info,
        Written::Low => pb::Severity::Low,
        Written::Medium => pb::Severity::Medium,
        Written::High => pb::Severity::High,
        Written::Critical => pb::Severity::Critical,
    })
}

/// Where `text` (a condition) starts in the raw file, 1-based; (1, 1) if it can't be found.
fn locate(raw: &str, text: &str) -> (usize, usize) {
    let first = text.trim().lines().next().unwrap_or("").trim();
    if first.is_empty() {
        return (1, 1);
    }
    for (n, line) in raw.lines().enumerate() {
        if let Some(col) = line.find(first) {
            return (n + 1, col + 1);
        }
    }
    (1, 1)
}

/// A condition error at its place in the file.
fn at(file: &str, raw: &str, text: &str, e: ConditionError) -> RuleError {
    let (line, column) = locate(raw, text);
    let (line, column) = if e.line <= 1 {
        (line, column + e.column.saturating_sub(1))
    } else {
        (line + e.line - 1, e.column)
    };
    RuleError {
        file: file.into(),
        line,
        column,
        message: e.message,
    }
}

fn yaml_error(file: &str, e: serde_yaml_ng::Error) -> RuleError {
    let (line, column) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((1, 1));
    RuleError {
        file: file.into(),
        line,
        column,
        message: e.to_string(),
    }
}

/// Fails naming the first of `fields` that `schema` does not have.
fn check_keys<'a>(
    file: &str,
    raw: &str,
    fields: impl Iterator<Item = &'a String>,
    schema: &dyn Schema,
    what: &str,
) -> Result<(), RuleError> {
    for f in fields {
        if schema.resolve(f).is_none() {
            let (line, column) = locate(raw, f);
            return Err(RuleError {
                file: file.into(),
                line,
                column,
                message: format!("unknown field `{f}` in {what}"),
            });
        }
    }
    Ok(())
}

/// One exception as a condition; errors point at the part of the file that is wrong.
fn compile_exception(
    file: &str,
    raw: &str,
    x: &Exception,
    compile: &dyn Fn(&str) -> Result<Condition, RuleError>,
) -> Result<(String, Condition), RuleError> {
    let error = |text: &str, message: String| {
        let (line, column) = locate(raw, text);
        RuleError {
            file: file.into(),
            line,
            column,
            message,
        }
    };
    // The user's own condition first, so its errors point into it.
    if let Some(c) = &x.condition {
        compile(c)?;
    }
    if let Some(key) = x.labels.keys().find(|k| {
        k.is_empty() || k.contains(|c: char| c.is_whitespace() || "[]()\"',=!<>".contains(c))
    }) {
        return Err(error(
            key,
            format!(
                "exception `{}`: label key {key:?} cannot be matched (brackets, quotes, blanks or operators in it)",
                x.name
            ),
        ));
    }
    if let Some((addr, msg)) = x
        .addresses
        .iter()
        .find_map(|a| Cidr::parse(a).err().map(|msg| (a, msg)))
    {
        return Err(error(addr, format!("exception `{}`: {msg}", x.name)));
    }
    let text = x.to_condition().ok_or_else(|| {
        error(
            &x.name,
            format!(
                "exception `{}` matches nothing: give images, container_names, k8s_namespaces, labels, executables, ancestors, addresses or a condition",
                x.name
            ),
        )
    })?;
    Ok((x.name.clone(), compile(&text)?))
}

/// Parses the shared definitions file.
pub fn parse_shared(file: &str, raw: &str) -> Result<SharedDefs, RuleError> {
    serde_yaml_ng::from_str(raw).map_err(|e| yaml_error(file, e))
}

/// Parses and compiles one rule file against the shared definitions, resolving every field it
/// reads against `schema`.
pub fn compile_rule(
    file: &str,
    raw: &str,
    shared: &SharedDefs,
    schema: &dyn Schema,
) -> Result<CompiledRule, RuleError> {
    let doc: RuleDoc = serde_yaml_ng::from_str(raw).map_err(|e| yaml_error(file, e))?;
    let whole = |message: String| {
        let (line, column) = locate(raw, &doc.id);
        RuleError {
            file: file.into(),
            line,
            column,
            message,
        }
    };
    let mut defs = Definitions::new();
    for (name, items) in shared.lists.iter().chain(&doc.lists) {
        defs.add_list(name, items.clone());
    }
    for (name, src) in shared.macros.iter().chain(&doc.macros) {
        defs.add_macro(name, src);
    }
    // Each macro compiles on its own, so its errors point at its own line.
    for (name, src) in &doc.macros {
        condition::compile(src, &defs)
            .and_then(|c| c.resolve(schema))
            .map_err(|e| {
                let mut e = at(file, raw, src, e);
                e.message = format!("macro `{name}`: {}", e.message);
                e
            })?;
    }
    let compile = |src: &str| -> Result<Condition, RuleError> {
        let c = condition::compile(src, &defs).map_err(|e| at(file, raw, src, e))?;
        c.resolve(schema).map_err(|e| at(file, raw, src, e))?;
        Ok(c)
    };
    let condition = match &doc.logic {
        Logic::Condition { condition } => compile(condition)?,
        Logic::Threshold {
            condition,
            key,
            distinct,
            sum,
            window_seconds,
            ..
        } => {
            let fields = key
                .iter()
                .chain(distinct)
                .chain(sum)
                .chain(doc.throttle.iter().flat_map(|t| &t.key));
            check_keys(file, raw, fields, schema, "threshold key")?;
            if *window_seconds == 0 {
                return Err(whole("threshold window_seconds must be at least 1".into()));
            }
            compile(condition)?
        }
        Logic::Lifetime { notable, .. } => compile(notable)?,
        Logic::Sequence { first, key, .. } => {
            check_keys(file, raw, key.iter(), schema, "sequence key")?;
            compile(first)?
        }
        Logic::NewValue {
            condition,
            key,
            value,
            learn_seconds,
        } => {
            let fields = key.iter().chain([value]);
            check_keys(file, raw, fields, schema, "new_value key or value")?;
            if *learn_seconds == 0 {
                return Err(whole("new_value learn_seconds must be at least 1".into()));
            }
            compile(condition)?
        }
        Logic::Baseline {
            condition,
            key,
            value,
            factor,
            alpha,
            ..
        } => {
            check_keys(
                file,
                raw,
                key.iter().chain([value]),
                schema,
                "baseline key or value",
            )?;
            if *factor <= 1.0 {
                return Err(whole(format!("baseline factor {factor} must be above 1")));
            }
            if !(*alpha > 0.0 && *alpha <= 1.0) {
                return Err(whole(format!("baseline alpha {alpha} must be in (0, 1]")));
            }
            compile(condition)?
        }
    };
    let then = match &doc.logic {
        Logic::Sequence { then, .. } => Some(compile(then)?),
        _ => None,
    };
    let exceptions = doc
        .exceptions
        .iter()
        .map(|x| compile_exception(file, raw, x, &compile))
        .collect::<Result<_, RuleError>>()?;
    Ok(CompiledRule {
        doc,
        file: file.into(),
        condition,
        then,
        exceptions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::fields::EventSchema;

    const RULE: &str = r#"id: TEST-1
name: Test rule
goal: Detect things.
attack:
  techniques: [T1095]
  tactic: Command and Control
severity: high
strategy: Watch.
blind_spots: [none]
false_positives: [debugging]
validation: Run it.
response: [Look]
logic:
  kind: condition
  condition: evt.kind = exec and proc.name in (netcat)
lists:
  netcat: [nc, ncat]
output: "{proc.exe} ran"
"#;

    #[test]
    fn compiles_a_rule() {
        let r = compile_rule("t.yaml", RULE, &SharedDefs::default(), &EventSchema).unwrap();
        assert_eq!(r.doc.id, "TEST-1");
        assert_eq!(r.doc.severity, pb::Severity::High);
        assert_eq!(r.condition.kinds(), Some(vec!["exec".to_string()]));
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let bad = RULE.replace("proc.name in (netcat)", "proc.nme in (netcat)");
        let e = compile_rule("t.yaml", &bad, &SharedDefs::default(), &EventSchema).unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("t.yaml", 15), "{e}");
        assert!(e.column > 14 && e.message.contains("proc.nme"), "{e}");

        let bad = RULE.replace("and proc.name", "and and proc.name");
        let e = compile_rule("t.yaml", &bad, &SharedDefs::default(), &EventSchema).unwrap_err();
        assert_eq!(e.line, 15, "{e}");

        let bad = RULE.replace("severity: high", "severity: urgent");
        let e = compile_rule("t.yaml", &bad, &SharedDefs::default(), &EventSchema).unwrap_err();
        assert_eq!((e.line, e.column), (7, 11), "{e}");
        assert!(
            e.message.contains(
                "unknown variant `urgent`, expected one of `info`, `low`, `medium`, `high`, `critical`"
            ),
            "{e}"
        );

        let bad = RULE.replace("  kind: condition", "  kind: conditoin");
        let e = compile_rule("t.yaml", &bad, &SharedDefs::default(), &EventSchema).unwrap_err();
        assert_eq!(e.line, 14, "{e}");

        let bad = RULE.replace("goal:", "gaol:");
        let e = compile_rule("t.yaml", &bad, &SharedDefs::default(), &EventSchema).unwrap_err();
        assert!(e.message.contains("gaol"), "{e}");
    }
}
