//! Shell-style wildcard matching for the `glob` operator: `*` is any run of characters
//! (including `/`, unlike a path glob, because fields such as `proc.args` are not paths) and
//! `?` is exactly one character; everything else matches itself.

/// Whether `text` matches `pattern` as a whole.
///
/// Greedy with one backtrack point (the last `*`): linear for the patterns rules use and never
/// exponential, however many stars a pattern has.
pub(crate) fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // After the last `*` seen: the pattern index just past it and the text index it resumes at.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi + 1, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                // Let the last star swallow one more character and retry.
                Some((after, from)) => {
                    star = Some((after, from + 1));
                    pi = after;
                    ti = from + 1;
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn table() {
        for (pattern, text, want) in [
            ("", "", true),
            ("", "a", false),
            ("*", "", true),
            ("*", "/usr/bin/nc", true),
            ("*/nc", "/usr/bin/nc", true),
            ("*/nc", "/usr/bin/ncat", false),
            ("/usr/*/n?", "/usr/bin/nc", true),
            ("n?", "n", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("*.sh", "run.sh.bak", false),
            ("**a", "bba", true),
            ("?*", "é", true),
            ("exact", "exact", true),
            ("exact", "exactly", false),
        ] {
            assert_eq!(glob(pattern, text), want, "{pattern:?} vs {text:?}");
        }
    }
}
