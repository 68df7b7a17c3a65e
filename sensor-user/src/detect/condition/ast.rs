//! The compiled form of a condition: a tree of tests joined by `and`/`or`/`not`.
//!
//! Macros stay visible in the tree (`Expr::Macro`) instead of being flattened away, so errors
//! and field checks can say "in macro X", and `Display` prints the condition as it was written.
//! Literals are pre-digested at compile time (integer, boolean and lower-case forms) so that
//! evaluation, which runs per event, never parses.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, OnceLock};

use super::cidr::Cidr;
use super::error::Pos;
use super::value::Slot;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StrOp {
    Contains,
    IContains,
    StartsWith,
    EndsWith,
    Glob,
}

impl StrOp {
    pub const ALL: [(&str, StrOp); 5] = [
        ("contains", StrOp::Contains),
        ("icontains", StrOp::IContains),
        ("startswith", StrOp::StartsWith),
        ("endswith", StrOp::EndsWith),
        ("glob", StrOp::Glob),
    ];

    fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, op)| *op == self)
            .map_or("?", |(name, _)| name)
    }
}

/// A value written in the condition (or in a list), with the typed readings it supports.
#[derive(Clone, Debug)]
pub(crate) struct Literal {
    pub text: String,
    /// `text` lower-cased, for `icontains`.
    pub lower: String,
    pub int: Option<i64>,
    pub boolean: Option<bool>,
}

impl Literal {
    pub fn new(text: String) -> Self {
        Self {
            lower: text.to_lowercase(),
            int: text.parse().ok(),
            boolean: match text.as_str() {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            },
            text,
        }
    }
}

/// The right-hand side of `in (...)`, lists expanded; hashed because Falco-style lists of
/// known binaries run to hundreds of entries and are probed on every event. Its `Debug` shows
/// the items sorted (not in the hash sets' order, which changes between compilations), so the
/// same set always prints the same, in whatever order its lists name the items.
#[derive(Clone)]
pub(crate) struct LitSet {
    pub items: Vec<Literal>,
    pub texts: HashSet<String>,
    pub ints: HashSet<i64>,
}

impl std::fmt::Debug for LitSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut texts: Vec<&String> = self.texts.iter().collect();
        texts.sort_unstable();
        f.debug_tuple("LitSet").field(&texts).finish()
    }
}

impl LitSet {
    pub fn new(items: Vec<Literal>) -> Self {
        Self {
            texts: items.iter().map(|l| l.text.clone()).collect(),
            ints: items.iter().filter_map(|l| l.int).collect(),
            items,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Predicate {
    Cmp(CmpOp, Literal),
    Str(StrOp, Literal),
    In(LitSet),
    /// `in_cidr (...)`: the address is in one of the blocks.
    InCidr(Vec<Cidr>),
    Exists,
}

/// One field test, e.g. `proc.name in (nc, ncat)`.
#[derive(Clone, Debug)]
pub(crate) struct Test {
    pub field: String,
    /// The field's definition, set when the condition is resolved against a schema.
    pub slot: OnceLock<Slot>,
    /// Where the field name was written, for `resolve`.
    pub pos: Pos,
    pub pred: Predicate,
}

#[derive(Clone, Debug)]
pub(crate) enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Test(Test),
    /// A macro reference at `pos`; the body is shared by every rule that uses the macro.
    Macro {
        name: String,
        pos: Pos,
        body: Arc<Expr>,
    },
}

impl fmt::Display for CmpOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        })
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Always quoted so the printed form re-parses to the same condition.
        write!(f, "\"")?;
        for c in self.text.chars() {
            if matches!(c, '"' | '\\') {
                write!(f, "\\")?;
            }
            write!(f, "{c}")?;
        }
        write!(f, "\"")
    }
}

/// Fully parenthesised, so the printed form shows how precedence grouped the condition.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |f: &mut fmt::Formatter<'_>, items: &[Expr], sep: &str| {
            write!(f, "(")?;
            for (i, e) in items.iter().enumerate() {
                if i > 0 {
                    write!(f, " {sep} ")?;
                }
                write!(f, "{e}")?;
            }
            write!(f, ")")
        };
        match self {
            Expr::And(items) => join(f, items, "and"),
            Expr::Or(items) => join(f, items, "or"),
            Expr::Not(e) => write!(f, "not {e}"),
            Expr::Macro { name, .. } => f.write_str(name),
            Expr::Test(t) => {
                write!(f, "{} ", t.field)?;
                match &t.pred {
                    Predicate::Cmp(op, lit) => write!(f, "{op} {lit}"),
                    Predicate::Str(op, lit) => write!(f, "{} {lit}", op.name()),
                    Predicate::Exists => write!(f, "exists"),
                    Predicate::In(set) => {
                        write!(f, "in (")?;
                        for (i, lit) in set.items.iter().enumerate() {
                            if i > 0 {
                                write!(f, ", ")?;
                            }
                            write!(f, "{lit}")?;
                        }
                        write!(f, ")")
                    }
                    Predicate::InCidr(nets) => {
                        let nets: Vec<String> = nets.iter().map(|n| format!("\"{n}\"")).collect();
                        write!(f, "in_cidr ({})", nets.join(", "))
                    }
                }
            }
        }
    }
}
