//! Named lists and macros that conditions refer to, as the rule files declare them.
//!
//! Only the raw text is stored here; a macro is parsed when a condition first uses it (see
//! `parser`), so one broken macro is reported against the rule that uses it, at the reference.

use std::collections::HashMap;

/// Lists (`shell_binaries: [sh, bash]`) and macros (`spawned_process: evt.kind = exec`).
#[derive(Clone, Debug, Default)]
pub struct Definitions {
    lists: HashMap<String, Vec<String>>,
    macros: HashMap<String, String>,
}

impl Definitions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Defines (or replaces) a list. An item that is itself a list's name is expanded in its
    /// place when the list is used, as in Falco.
    pub fn add_list<I, S>(&mut self, name: impl Into<String>, items: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.lists
            .insert(name.into(), items.into_iter().map(Into::into).collect());
        self
    }

    /// Defines (or replaces) a macro: a condition that other conditions use by its name.
    pub fn add_macro(
        &mut self,
        name: impl Into<String>,
        condition: impl Into<String>,
    ) -> &mut Self {
        self.macros.insert(name.into(), condition.into());
        self
    }

    pub fn has_list(&self, name: &str) -> bool {
        self.lists.contains_key(name)
    }

    pub fn macro_source(&self, name: &str) -> Option<&str> {
        self.macros.get(name).map(String::as_str)
    }

    pub fn list_names(&self) -> impl Iterator<Item = &str> {
        self.lists.keys().map(String::as_str)
    }

    pub fn macro_names(&self) -> impl Iterator<Item = &str> {
        self.macros.keys().map(String::as_str)
    }

    /// The items of list `name` with nested lists expanded, or an error message naming a
    /// list that contains itself.
    pub(crate) fn expand_list(&self, name: &str) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        self.expand_into(name, &mut vec![name], &mut out)?;
        Ok(out)
    }

    fn expand_into<'a>(
        &'a self,
        name: &str,
        path: &mut Vec<&'a str>,
        out: &mut Vec<String>,
    ) -> Result<(), String> {
        for item in self.lists.get(name).into_iter().flatten() {
            if !self.lists.contains_key(item) {
                out.push(item.clone());
                continue;
            }
            if path.contains(&item.as_str()) {
                return Err(format!("list cycle: {} -> {item}", path.join(" -> ")));
            }
            path.push(item);
            self.expand_into(item, path, out)?;
            path.pop();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_lists_expand_in_place() {
        let mut defs = Definitions::new();
        defs.add_list("shells", ["sh", "bash"])
            .add_list("tools", ["nc", "shells", "socat"]);
        assert_eq!(
            defs.expand_list("tools").unwrap(),
            ["nc", "sh", "bash", "socat"]
        );
    }

    #[test]
    fn list_cycles_are_named() {
        let mut defs = Definitions::new();
        defs.add_list("a", ["x", "b"]).add_list("b", ["a"]);
        assert_eq!(
            defs.expand_list("a").unwrap_err(),
            "list cycle: a -> b -> a"
        );
    }
}
