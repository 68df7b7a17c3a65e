//! Compile errors and the positions they point at.
//!
//! Positions are 1-based and relative to the condition string: the rule loader knows where the
//! string sits in its YAML file and adds that offset, so this module never needs to know files.

use std::fmt;

/// Where a token starts in a condition string (1-based line and column, columns in characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Why a condition was rejected, and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct ConditionError {
    /// 1-based line within the condition string.
    pub line: usize,
    /// 1-based column (in characters) within that line.
    pub column: usize,
    /// What is wrong and, where it helps, what was expected instead.
    pub message: String,
}

impl ConditionError {
    pub(crate) fn at(pos: Pos, message: impl Into<String>) -> Self {
        Self {
            line: pos.line,
            column: pos.column,
            message: message.into(),
        }
    }
}

/// `" (did you mean "x"?)"` when one candidate is a plausible typo of `word`, else `""`.
///
/// Plausible means at most two edits away and fewer edits than the word has characters, so a
/// short word is not "corrected" into an unrelated one. Ties go to the alphabetically first
/// candidate so the message is stable across runs (the candidates often come from a HashMap).
pub(crate) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> String {
    candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= 2 && *d < word.chars().count())
        .min()
        .map(|(_, c)| format!(" (did you mean \"{c}\"?)"))
        .unwrap_or_default()
}

/// Levenshtein distance over characters; inputs are short names, so the O(n*m) row is fine.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distances() {
        for (a, b, d) in [
            ("", "", 0),
            ("abc", "abc", 0),
            ("shel_procs", "shell_procs", 1),
            ("startwith", "startswith", 1),
            ("kitten", "sitting", 3),
            ("", "abc", 3),
        ] {
            assert_eq!(edit_distance(a, b), d, "{a} vs {b}");
        }
    }

    #[test]
    fn suggestions_are_close_and_stable() {
        let names = ["shell_procs", "shell_binaries", "net_tools"];
        assert_eq!(
            did_you_mean("shel_procs", names),
            " (did you mean \"shell_procs\"?)"
        );
        assert_eq!(did_you_mean("completely_else", names), "");
        // Two candidates one edit away: the alphabetically first wins.
        assert_eq!(did_you_mean("ab", ["ac", "aa"]), " (did you mean \"aa\"?)");
        // A two-letter word is not "corrected" two edits away.
        assert_eq!(did_you_mean("xy", ["ab"]), "");
    }
}
