//! Splits a condition string into tokens, each with the position it starts at.
//!
//! The lexer knows no keywords: `and`, `in`, `startswith`, field names and bare values are all
//! `Word`s, and the parser decides what a word means from where it stands. That is what lets
//! bare values read naturally (`proc.name in (nc, ncat)`) without a reserved-word list.

use super::ast::CmpOp;
use super::error::{ConditionError, Pos};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Tok {
    LParen,
    RParen,
    Comma,
    Cmp(CmpOp),
    /// A run of characters that are not blanks, quotes, brackets, commas or comparison signs.
    Word(String),
    /// A quoted string, escapes resolved.
    Str(String),
    Eof,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Token {
    pub tok: Tok,
    pub pos: Pos,
}

impl Tok {
    /// How the token is quoted in error messages ("found ...").
    pub fn describe(&self) -> String {
        match self {
            Tok::LParen => "\"(\"".into(),
            Tok::RParen => "\")\"".into(),
            Tok::Comma => "\",\"".into(),
            Tok::Cmp(op) => format!("\"{op}\""),
            Tok::Word(w) => format!("\"{w}\""),
            Tok::Str(s) => format!("the string {s:?}"),
            Tok::Eof => "the end of the condition".into(),
        }
    }
}

/// Characters that end a bare word. `!=<>` are here so `proc.name=nc` lexes like `proc.name = nc`.
fn ends_word(c: char) -> bool {
    c.is_whitespace() || matches!(c, '(' | ')' | ',' | '"' | '\'' | '=' | '!' | '<' | '>')
}

struct Cursor<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    pos: Pos,
}

impl Cursor<'_> {
    fn peek(&mut self) -> Option<char> {
        self.chars.peek().copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c == '\n' {
            self.pos.line += 1;
            self.pos.column = 1;
        } else {
            self.pos.column += 1;
        }
        Some(c)
    }

    /// Consumes the next char if it is `c`.
    fn eat(&mut self, c: char) -> bool {
        let hit = self.peek() == Some(c);
        if hit {
            self.bump();
        }
        hit
    }
}

/// Tokenizes `src`; the last token is always `Eof` (positioned just past the input).
pub(crate) fn lex(src: &str) -> Result<Vec<Token>, ConditionError> {
    let mut cur = Cursor {
        chars: src.chars().peekable(),
        pos: Pos { line: 1, column: 1 },
    };
    let mut out = Vec::new();
    loop {
        while cur.peek().is_some_and(char::is_whitespace) {
            cur.bump();
        }
        let pos = cur.pos;
        let Some(c) = cur.bump() else {
            out.push(Token { tok: Tok::Eof, pos });
            return Ok(out);
        };
        let tok = match c {
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            ',' => Tok::Comma,
            // `==` is accepted as a synonym: people arriving from C or Falco's docs type it.
            '=' => {
                cur.eat('=');
                Tok::Cmp(CmpOp::Eq)
            }
            '<' if cur.eat('=') => Tok::Cmp(CmpOp::Le),
            '<' => Tok::Cmp(CmpOp::Lt),
            '>' if cur.eat('=') => Tok::Cmp(CmpOp::Ge),
            '>' => Tok::Cmp(CmpOp::Gt),
            '!' if cur.eat('=') => Tok::Cmp(CmpOp::Ne),
            '!' => {
                return Err(ConditionError::at(
                    pos,
                    "unexpected \"!\": write \"!=\" to compare or \"not\" to negate",
                ));
            }
            '"' | '\'' => Tok::Str(string(&mut cur, c, pos)?),
            _ => {
                let mut word = String::from(c);
                while let Some(c) = cur.peek().filter(|c| !ends_word(*c)) {
                    word.push(c);
                    cur.bump();
                }
                Tok::Word(word)
            }
        };
        out.push(Token { tok, pos });
    }
}

/// The body of a string opened by `quote` at `start`. A backslash escapes the quote and itself;
/// any other backslash is kept as written, so patterns such as `C:\tmp` survive unchanged.
fn string(cur: &mut Cursor<'_>, quote: char, start: Pos) -> Result<String, ConditionError> {
    let mut s = String::new();
    loop {
        match cur.bump() {
            None => {
                return Err(ConditionError::at(
                    start,
                    format!("unterminated string: no closing {quote} for the one opened here"),
                ));
            }
            Some(c) if c == quote => return Ok(s),
            Some('\\') => match cur.peek() {
                Some(c) if c == quote || c == '\\' => {
                    s.push(c);
                    cur.bump();
                }
                _ => s.push('\\'),
            },
            Some(c) => s.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Tok {
        Tok::Word(s.into())
    }

    fn s(s: &str) -> Tok {
        Tok::Str(s.into())
    }

    #[test]
    fn tokens() {
        use CmpOp::*;
        let cases: &[(&str, Vec<Tok>)] = &[
            ("", vec![]),
            ("proc.name=nc", vec![w("proc.name"), Tok::Cmp(Eq), w("nc")]),
            (
                "a == 1 != <= >= < >",
                vec![
                    w("a"),
                    Tok::Cmp(Eq),
                    w("1"),
                    Tok::Cmp(Ne),
                    Tok::Cmp(Le),
                    Tok::Cmp(Ge),
                    Tok::Cmp(Lt),
                    Tok::Cmp(Gt),
                ],
            ),
            (
                "x in (sh, 'a b',\"c\")",
                vec![
                    w("x"),
                    w("in"),
                    Tok::LParen,
                    w("sh"),
                    Tok::Comma,
                    s("a b"),
                    Tok::Comma,
                    s("c"),
                    Tok::RParen,
                ],
            ),
            (
                r#"p startswith /usr/bin/ and q glob */n?c"#,
                vec![
                    w("p"),
                    w("startswith"),
                    w("/usr/bin/"),
                    w("and"),
                    w("q"),
                    w("glob"),
                    w("*/n?c"),
                ],
            ),
            (r#""say \"hi\"""#, vec![s(r#"say "hi""#)]),
            (r"'it\'s'", vec![s("it's")]),
            (r#""a\\b\n""#, vec![s(r"a\b\n")]),
            ("-1 0x10", vec![w("-1"), w("0x10")]),
        ];
        for (src, want) in cases {
            let got: Vec<Tok> = lex(src)
                .unwrap_or_else(|e| panic!("{src}: {e}"))
                .into_iter()
                .map(|t| t.tok)
                .filter(|t| *t != Tok::Eof)
                .collect();
            assert_eq!(&got, want, "lexing {src}");
        }
    }

    #[test]
    fn positions_span_lines() {
        let toks = lex("a = 1\n  and\tb = 'x'").unwrap();
        let at: Vec<(usize, usize)> = toks.iter().map(|t| (t.pos.line, t.pos.column)).collect();
        assert_eq!(
            at,
            [
                (1, 1),
                (1, 3),
                (1, 5),
                (2, 3),
                (2, 7),
                (2, 9),
                (2, 11),
                (2, 14)
            ]
        );
    }

    #[test]
    fn errors() {
        for (src, line, column, needle) in [
            ("a = \"abc", 1, 5, "unterminated string"),
            ("a = 1 and\n b = 'x", 2, 6, "unterminated string"),
            ("a ! b", 1, 3, "\"!=\""),
        ] {
            let e = lex(src).unwrap_err();
            assert_eq!((e.line, e.column), (line, column), "{src}: {e}");
            assert!(e.message.contains(needle), "{src}: {e}");
        }
    }
}
