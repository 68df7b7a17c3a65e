//! The condition language of detection rules, modelled on Falco's so a detection engineer reads
//! it on sight:
//!
//! ```text
//! spawned_process and container
//!   and proc.name in (shell_binaries, nc, "ncat")
//!   and not proc.pname startswith runc
//! ```
//!
//! * **Fields** are dotted names (`proc.name`, `container.id`) read through [`Fields`]; some
//!   take a key in brackets (`container.label[team]`). A loaded rule's fields are resolved
//!   against a [`Schema`] ([`Condition::resolve`]): an unknown name fails the load with its
//!   position, and evaluation reads each field through its definition's [`Slot`].
//! * **Operators**: `=` `!=` (any value), `<` `<=` `>` `>=` (integers), `in (a, b, "c")`,
//!   `contains`, `icontains`, `startswith`, `endswith`, `glob` (`*` and `?`), `exists`, and
//!   `in_cidr (10.0.0.0/8, fd00::/8, 192.168.1.7)` for addresses (blocks checked at compile
//!   time).
//!   `==` is accepted for `=`.
//! * **Logic**: `not` binds tighter than `and`, which binds tighter than `or`; parentheses group.
//! * **Values**: integers, `true`/`false`, quoted strings (`"..."` or `'...'`, `\"` and `\\`
//!   escapes), or bare words such as `/usr/bin/nc` or `-e`. A bare word ends at a blank, a
//!   bracket, a comma, a quote or a comparison sign; quote anything else, and quote the words
//!   `and`/`or`/`not` when they are the value.
//! * **Lists** from [`Definitions`] are expanded inside `in (...)`: `in (shell_binaries, zsh)`.
//!   A bare word that is not a list's name is a value, except that a snake_case word one or
//!   two edits from a list name is rejected as a probable typo; quote it to mean the value.
//! * **Macros** from [`Definitions`] stand where a test could, by name: `spawned_process`.
//!   They may use other macros; a cycle, or an unknown macro, is a compile error.
//!
//! Semantics worth knowing:
//!
//! * **Missing fields**: every test on a field the event lacks is false (`exists` included), so
//!   `not <test>` on it is true. `proc.name != sh` is false when there is no `proc.name`.
//! * **List-valued fields** (`proc.cap_effective`): `contains X` / `icontains X` mean "has the
//!   element X"; `in (...)` means "any element is in the set" (Falco's `intersects`);
//!   `startswith`/`endswith`/`glob` hold when any element matches; `=` compares the whole value,
//!   so a list equals `X` only when it is exactly `[X]`; `<` and friends are false.
//! * **Types**: a literal is compared in the field's type: `net.remote.port = 80` and
//!   `net.remote.port = "80"` are the same test on an integer field. String operators read an
//!   integer or boolean field as its text.
//!
//! Errors carry 1-based line and column within the condition string; an error inside a macro
//! points at the macro's use and says where in the macro it is.

mod analysis;
mod ast;
mod cidr;
mod defs;
mod error;
mod eval;
mod glob;
mod lexer;
mod parser;
mod value;

#[cfg(test)]
mod tests;

use std::fmt;

pub use analysis::field_pattern;
pub(crate) use cidr::Cidr;
pub use defs::Definitions;
pub use error::ConditionError;
pub use value::{Fields, Schema, Slot, Value};

/// A compiled condition: parse once, evaluate per event. Cheap to clone (macro bodies shared).
#[derive(Clone, Debug)]
pub struct Condition {
    root: ast::Expr,
}

/// Compiles `src` against the lists and macros in `defs`.
pub fn compile(src: &str, defs: &Definitions) -> Result<Condition, ConditionError> {
    let root = parser::Compiler::new(defs).compile(src)?;
    Ok(Condition { root })
}

impl Condition {
    /// Whether the event matches.
    pub fn eval(&self, ev: &dyn Fields) -> bool {
        self.root.eval(ev)
    }

    /// Every field the condition reads, macros included, sorted and without repeats.
    pub fn fields(&self) -> Vec<String> {
        self.root.fields().into_iter().collect()
    }

    /// The `evt.kind` values the condition can match (sorted), or `None` when it does not
    /// restrict the kind. See the analysis module for what counts as a restriction.
    pub fn kinds(&self) -> Option<Vec<String>> {
        self.root.kinds().map(|k| k.into_iter().collect())
    }

    /// Resolves every field the condition reads to its definition in `schema`, so evaluation
    /// never looks a name up. Fails on the first field (in source order) the schema does not
    /// have, naming it and where it is written, with a suggestion when it looks like a typo of
    /// a known field.
    pub fn resolve(&self, schema: &dyn Schema) -> Result<(), ConditionError> {
        self.root.resolve(schema)
    }
}

/// The condition fully parenthesised, macros by name and values quoted: shows how it parsed.
impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.root.fmt(f)
    }
}
