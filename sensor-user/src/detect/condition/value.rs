//! What a condition reads from an event: typed field values, through a trait the caller
//! implements so the language does not depend on the sensor's event types.

use std::collections::HashMap;
use std::fmt;

/// A field's value on one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
    /// A multi-valued field such as `proc.cap_effective` or `proc.args`.
    List(Vec<Value>),
}

/// Field lookup on an event. `None` means the event does not have the field (a network field
/// on an exec event, say); see the module docs for how conditions treat that.
pub trait Fields {
    fn field(&self, name: &str) -> Option<Value>;

    /// A field a [`Schema`] resolved when the condition was loaded: what compiled conditions
    /// read, so evaluation finds the field's definition without looking its name up. `name`
    /// is the field as written; the default reads it by name.
    fn resolved(&self, slot: &Slot, name: &str) -> Option<Value> {
        let _ = slot;
        self.field(name)
    }
}

/// Where a schema keeps a field's definition, found once at load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Slot {
    /// The definition at this index of the schema's table of plain fields.
    Field(usize),
    /// A keyed field (`container.label[team]`): its definition's index and the key.
    Keyed(usize, String),
}

/// The fields a kind of event offers, against which a condition's field names are resolved
/// when it is loaded: an unknown name is a load error, never a miss at evaluation.
pub trait Schema {
    /// The definition `name` (`base[key]` for a keyed field) stands for, if any.
    fn resolve(&self, name: &str) -> Option<Slot>;
    /// Every field's name (keyed ones as `base[]`), for suggestions.
    fn names(&self) -> Vec<&str>;
}

/// A list of names is the simplest schema (keyed fields written `base[]`): for tests and tools
/// that only need to know which names exist.
impl Schema for &[&str] {
    fn resolve(&self, name: &str) -> Option<Slot> {
        let pattern = super::field_pattern(name);
        let index = self.iter().position(|n| *n == pattern)?;
        Some(match name.split_once('[') {
            Some((_, rest)) if pattern != name => {
                Slot::Keyed(index, rest.trim_end_matches(']').to_string())
            }
            _ => Slot::Field(index),
        })
    }

    fn names(&self) -> Vec<&str> {
        self.to_vec()
    }
}

/// A map is the simplest event: handy for tests and for replaying recorded events.
impl Fields for HashMap<String, Value> {
    fn field(&self, name: &str) -> Option<Value> {
        self.get(name).cloned()
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::Int(n)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl<T: Into<Value>> From<Vec<T>> for Value {
    fn from(items: Vec<T>) -> Self {
        Value::List(items.into_iter().map(Into::into).collect())
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => f.write_str(s),
            Value::Int(n) => write!(f, "{n}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::List(items) => {
                write!(f, "(")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{v}")?;
                }
                write!(f, ")")
            }
        }
    }
}
