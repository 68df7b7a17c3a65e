//! Evaluating a compiled condition against one event.
//!
//! Missing fields make every test on them false, so `not` over such a test is true; that is
//! Falco's rule and the one detection engineers expect (`not proc.pname in (...)` holds for an
//! event with no parent name). See the module docs for list-valued fields.

use std::borrow::Cow;
use std::net::IpAddr;

use super::ast::{CmpOp, Expr, LitSet, Literal, Predicate, StrOp, Test};
use super::cidr::Cidr;
use super::glob::glob;
use super::value::{Fields, Value};

impl Expr {
    pub(crate) fn eval(&self, ev: &dyn Fields) -> bool {
        match self {
            Expr::And(items) => items.iter().all(|e| e.eval(ev)),
            Expr::Or(items) => items.iter().any(|e| e.eval(ev)),
            Expr::Not(e) => !e.eval(ev),
            Expr::Macro { body, .. } => body.eval(ev),
            Expr::Test(t) => t.value(ev).is_some_and(|v| t.pred.matches(&v)),
        }
    }
}

impl Test {
    /// The field's value: through its definition once resolved, by name before.
    fn value(&self, ev: &dyn Fields) -> Option<Value> {
        match self.slot.get() {
            Some(slot) => ev.resolved(slot, &self.field),
            None => ev.field(&self.field),
        }
    }
}

impl Predicate {
    fn matches(&self, v: &Value) -> bool {
        match self {
            Predicate::Exists => true,
            Predicate::Cmp(CmpOp::Eq, lit) => equals(v, lit),
            Predicate::Cmp(CmpOp::Ne, lit) => !equals(v, lit),
            Predicate::Cmp(op, lit) => ordered(*op, v, lit),
            Predicate::In(set) => in_set(v, set),
            Predicate::InCidr(nets) => in_cidr(v, nets),
            Predicate::Str(op, lit) => match v {
                Value::List(items) => items.iter().any(|item| element_matches(*op, item, lit)),
                scalar => text_matches(*op, scalar, lit),
            },
        }
    }
}

/// `=` compares whole values: a list equals a literal only when it holds just that element.
fn equals(v: &Value, lit: &Literal) -> bool {
    match v {
        Value::Str(s) => *s == lit.text,
        Value::Int(n) => lit.int == Some(*n),
        Value::Bool(b) => lit.boolean == Some(*b),
        Value::List(items) => matches!(items.as_slice(), [only] if equals(only, lit)),
    }
}

/// Integers only (the parser rejects a non-integer literal); a string field that holds a
/// number compares as that number, anything else is false.
fn ordered(op: CmpOp, v: &Value, lit: &Literal) -> bool {
    let (Some(want), Some(have)) = (lit.int, as_int(v)) else {
        return false;
    };
    match op {
        CmpOp::Lt => have < want,
        CmpOp::Le => have <= want,
        CmpOp::Gt => have > want,
        CmpOp::Ge => have >= want,
        CmpOp::Eq | CmpOp::Ne => unreachable!("equality is handled by `equals`"),
    }
}

fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        Value::Str(s) => s.parse().ok(),
        Value::Bool(_) | Value::List(_) => None,
    }
}

/// For a list, any element in the set (Falco's `intersects`).
fn in_set(v: &Value, set: &LitSet) -> bool {
    match v {
        Value::Str(s) => set.texts.contains(s),
        Value::Int(n) => set.ints.contains(n),
        Value::Bool(b) => set.texts.contains(if *b { "true" } else { "false" }),
        Value::List(items) => items.iter().any(|item| in_set(item, set)),
    }
}

/// An address (or, for a list, any element) inside one of the blocks; text that is not an
/// address is not in any block.
fn in_cidr(v: &Value, nets: &[Cidr]) -> bool {
    match v {
        Value::Str(s) => s
            .parse::<IpAddr>()
            .is_ok_and(|addr| nets.iter().any(|n| n.contains(addr))),
        Value::List(items) => items.iter().any(|item| in_cidr(item, nets)),
        Value::Int(_) | Value::Bool(_) => false,
    }
}

/// A string operator on one element of a list: `contains`/`icontains` mean "is this element"
/// (membership), the others match the element's text.
fn element_matches(op: StrOp, item: &Value, lit: &Literal) -> bool {
    match op {
        StrOp::Contains => equals(item, lit),
        StrOp::IContains => text(item).is_some_and(|t| t.to_lowercase() == lit.lower),
        StrOp::StartsWith | StrOp::EndsWith | StrOp::Glob => text_matches(op, item, lit),
    }
}

fn text_matches(op: StrOp, v: &Value, lit: &Literal) -> bool {
    let Some(t) = text(v) else {
        return false;
    };
    match op {
        StrOp::Contains => t.contains(&lit.text),
        StrOp::IContains => t.to_lowercase().contains(&lit.lower),
        StrOp::StartsWith => t.starts_with(&lit.text),
        StrOp::EndsWith => t.ends_with(&lit.text),
        StrOp::Glob => glob(&lit.text, &t),
    }
}

/// The text string operators see: integers and booleans as written in a condition.
fn text(v: &Value) -> Option<Cow<'_, str>> {
    match v {
        Value::Str(s) => Some(Cow::Borrowed(s)),
        Value::Int(n) => Some(Cow::Owned(n.to_string())),
        Value::Bool(b) => Some(Cow::Owned(b.to_string())),
        Value::List(_) => None,
    }
}
