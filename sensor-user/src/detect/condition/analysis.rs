//! Static questions about a compiled condition: which fields it reads, whether they all exist,
//! and which event kinds it can match (so the engine runs a rule only on those kinds).

use std::collections::BTreeSet;

use super::ast::{CmpOp, Expr, Predicate, Test};
use super::error::{ConditionError, Pos, did_you_mean};
use super::value::Schema;

/// The name a field is checked under: `base[key]` as `base[]`, so one entry among the known
/// fields stands for every key (`container.label[]` for `container.label[team]`).
pub fn field_pattern(name: &str) -> std::borrow::Cow<'_, str> {
    match name.split_once('[') {
        Some((base, _)) if name.ends_with(']') => format!("{base}[]").into(),
        _ => name.into(),
    }
}

/// The field whose value is the event kind, used for dispatch.
pub(crate) const KIND_FIELD: &str = "evt.kind";

/// The macros a test sits in, outermost first, each with where it was referenced.
type MacroChain<'a> = [(&'a str, Pos)];

impl Expr {
    /// Calls `visit` on every test in source order, with the chain of macros it sits in.
    fn walk<'a>(
        &'a self,
        chain: &mut Vec<(&'a str, Pos)>,
        visit: &mut dyn FnMut(&'a Test, &MacroChain<'a>),
    ) {
        match self {
            Expr::And(items) | Expr::Or(items) => {
                items.iter().for_each(|e| e.walk(chain, visit));
            }
            Expr::Not(e) => e.walk(chain, visit),
            Expr::Test(t) => visit(t, chain),
            Expr::Macro { name, pos, body } => {
                chain.push((name, *pos));
                body.walk(chain, visit);
                chain.pop();
            }
        }
    }

    pub(crate) fn fields(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        self.walk(&mut Vec::new(), &mut |t, _| {
            out.insert(t.field.clone());
        });
        out
    }

    /// Resolves every field against `schema`; fails on the first it does not have. Inside a
    /// macro the error points at the outermost macro reference (the only place in this
    /// condition's text) and says where in the macro it is.
    pub(crate) fn resolve(&self, schema: &dyn Schema) -> Result<(), ConditionError> {
        let mut first = None;
        self.walk(&mut Vec::new(), &mut |t, chain| {
            if first.is_some() {
                return;
            }
            if let Some(slot) = schema.resolve(&t.field) {
                // A macro used twice is one shared body: resolved once, the same both times.
                let _ = t.slot.set(slot);
                return;
            }
            let mut message = format!(
                "unknown field \"{}\"{}",
                t.field,
                did_you_mean(&t.field, schema.names().into_iter())
            );
            let pos = match chain {
                [] => t.pos,
                [(_, outer_pos), ..] => {
                    let (inner, _) = chain[chain.len() - 1];
                    message += &format!(" in macro \"{inner}\" at {} of its condition", t.pos);
                    if chain.len() > 1 {
                        let path: Vec<&str> = chain.iter().map(|(name, _)| *name).collect();
                        message += &format!(" (reached through {})", path.join(" -> "));
                    }
                    *outer_pos
                }
            };
            first = Some(ConditionError::at(pos, message));
        });
        first.map_or(Ok(()), Err)
    }

    /// The event kinds this condition can match, or `None` for "any kind".
    ///
    /// A conjunct `evt.kind = X` or `evt.kind in (...)` constrains the kind; several such
    /// conjuncts intersect. An `or` constrains it only when every branch does (their union).
    /// Anything else (`not`, `!=`, a test on another field) leaves it unconstrained, which is
    /// always safe: dispatching a rule on more kinds than needed only costs an evaluation.
    pub(crate) fn kinds(&self) -> Option<BTreeSet<String>> {
        match self {
            Expr::Test(t) if t.field == KIND_FIELD => match &t.pred {
                Predicate::Cmp(CmpOp::Eq, lit) => Some(BTreeSet::from([lit.text.clone()])),
                Predicate::In(set) => Some(set.texts.iter().cloned().collect()),
                _ => None,
            },
            Expr::Test(_) | Expr::Not(_) => None,
            Expr::Macro { body, .. } => body.kinds(),
            Expr::And(items) => items
                .iter()
                .filter_map(Expr::kinds)
                .reduce(|a, b| a.intersection(&b).cloned().collect()),
            Expr::Or(items) => {
                items
                    .iter()
                    .map(Expr::kinds)
                    .try_fold(BTreeSet::new(), |mut all, kinds| {
                        all.extend(kinds?);
                        Some(all)
                    })
            }
        }
    }
}
