//! Recursive-descent parser from tokens to `Expr`, expanding lists and macros as it goes.
//!
//! Grammar (precedence `not` > `and` > `or`):
//!
//! ```text
//! or    := and ("or" and)*
//! and   := unary ("and" unary)*
//! unary := "not" unary | "(" or ")" | MACRO | FIELD predicate
//! predicate := CMP value | STROP value | ("in" | "in_cidr") "(" [item ("," item)*] ")"
//!            | "exists"
//! ```
//!
//! A word with a dot is a field, a plain identifier is a macro. Each macro is parsed once per
//! `compile` call and shared (`Arc`) by every reference to it.

use std::collections::HashMap;
use std::sync::Arc;

use super::ast::{CmpOp, Expr, LitSet, Literal, Predicate, StrOp, Test};
use super::cidr::Cidr;
use super::defs::Definitions;
use super::error::{ConditionError, Pos, did_you_mean};
use super::lexer::{Tok, Token, lex};

/// Deeper nesting than this is certainly a mistake (or hostile) and would risk the stack.
const MAX_DEPTH: usize = 100;

/// Words with a meaning of their own; never read as a value where one is expected.
const CONNECTIVES: [&str; 3] = ["and", "or", "not"];

/// State shared by the condition and every macro it pulls in.
pub(crate) struct Compiler<'d> {
    defs: &'d Definitions,
    /// Macros being parsed right now, outermost first: a name already here is a cycle.
    expanding: Vec<String>,
    parsed: HashMap<String, Arc<Expr>>,
    /// Set once a cycle is found, so enclosing macros relocate the error instead of wrapping
    /// it again ("in macro a: in macro b: ..." says nothing the cycle path does not).
    cycle: bool,
}

impl<'d> Compiler<'d> {
    pub fn new(defs: &'d Definitions) -> Self {
        Self {
            defs,
            expanding: Vec::new(),
            parsed: HashMap::new(),
            cycle: false,
        }
    }

    pub fn compile(&mut self, src: &str) -> Result<Expr, ConditionError> {
        let toks = lex(src)?;
        if toks[0].tok == Tok::Eof {
            return Err(ConditionError::at(
                toks[0].pos,
                "empty condition: expected a field, a macro, \"not\" or \"(\"",
            ));
        }
        let mut p = Parser {
            toks,
            i: 0,
            c: self,
            depth: 0,
        };
        let e = p.or()?;
        let end = p.next();
        match end.tok {
            Tok::Eof => Ok(e),
            Tok::RParen => Err(ConditionError::at(
                end.pos,
                "unbalanced parenthesis: this \")\" has no matching \"(\"",
            )),
            tok => Err(ConditionError::at(
                end.pos,
                format!(
                    "expected \"and\", \"or\" or the end of the condition, found {}{}",
                    tok.describe(),
                    suggest(&tok, ["and", "or"]),
                ),
            )),
        }
    }

    /// The parsed body of macro `name`, referenced at `pos`.
    fn macro_body(&mut self, name: &str, pos: Pos) -> Result<Arc<Expr>, ConditionError> {
        if let Some(start) = self.expanding.iter().position(|m| m == name) {
            self.cycle = true;
            let path = self.expanding[start..].join(" -> ");
            return Err(ConditionError::at(
                pos,
                format!("macro cycle: {path} -> {name}"),
            ));
        }
        if let Some(body) = self.parsed.get(name) {
            return Ok(Arc::clone(body));
        }
        let Some(src) = self.defs.macro_source(name) else {
            return Err(ConditionError::at(
                pos,
                format!(
                    "unknown macro \"{name}\"{}",
                    did_you_mean(name, self.defs.macro_names())
                ),
            ));
        };
        self.expanding.push(name.to_string());
        let parsed = self.compile(src);
        self.expanding.pop();
        match parsed {
            Ok(body) => {
                let body = Arc::new(body);
                self.parsed.insert(name.to_string(), Arc::clone(&body));
                Ok(body)
            }
            Err(e) if self.cycle => Err(ConditionError::at(pos, e.message)),
            Err(e) => Err(ConditionError::at(
                pos,
                format!(
                    "in macro \"{name}\" at line {}, column {} of its condition: {}",
                    e.line, e.column, e.message
                ),
            )),
        }
    }
}

struct Parser<'c, 'd> {
    toks: Vec<Token>,
    i: usize,
    c: &'c mut Compiler<'d>,
    depth: usize,
}

impl Parser<'_, '_> {
    fn peek(&self) -> &Token {
        &self.toks[self.i]
    }

    /// The current token, moving past it (the trailing `Eof` is never passed).
    fn next(&mut self) -> Token {
        let t = self.toks[self.i].clone();
        if t.tok != Tok::Eof {
            self.i += 1;
        }
        t
    }

    fn at_word(&self, word: &str) -> bool {
        matches!(&self.peek().tok, Tok::Word(w) if w == word)
    }

    fn nest(&mut self, pos: Pos) -> Result<(), ConditionError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ConditionError::at(
                pos,
                format!("condition nested more than {MAX_DEPTH} levels deep"),
            ));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, ConditionError> {
        let mut items = vec![self.and()?];
        while self.at_word("or") {
            self.next();
            items.push(self.and()?);
        }
        Ok(join(items, Expr::Or))
    }

    fn and(&mut self) -> Result<Expr, ConditionError> {
        let mut items = vec![self.unary()?];
        while self.at_word("and") {
            self.next();
            items.push(self.unary()?);
        }
        Ok(join(items, Expr::And))
    }

    fn unary(&mut self) -> Result<Expr, ConditionError> {
        let t = self.next();
        match t.tok {
            Tok::Word(w) if w == "not" => {
                self.nest(t.pos)?;
                let e = self.unary()?;
                self.depth -= 1;
                Ok(Expr::Not(Box::new(e)))
            }
            Tok::LParen => {
                self.nest(t.pos)?;
                let e = self.or()?;
                self.close(t.pos, "\"and\", \"or\" or \")\"")?;
                self.depth -= 1;
                Ok(e)
            }
            Tok::Word(w) if is_field(&w) => {
                let pred = self.predicate(&w)?;
                Ok(Expr::Test(Test {
                    field: w,
                    slot: Default::default(),
                    pos: t.pos,
                    pred,
                }))
            }
            Tok::Word(w) if is_identifier(&w) && !is_keyword(&w) => {
                let body = self.c.macro_body(&w, t.pos)?;
                Ok(Expr::Macro {
                    name: w,
                    pos: t.pos,
                    body,
                })
            }
            Tok::RParen => Err(ConditionError::at(
                t.pos,
                "unbalanced parenthesis: this \")\" has no matching \"(\"",
            )),
            tok => Err(ConditionError::at(
                t.pos,
                format!(
                    "expected a field, a macro, \"not\" or \"(\", found {}",
                    tok.describe()
                ),
            )),
        }
    }

    /// Consumes the `)` matching the `(` at `open`; `expected` names what else could have come.
    fn close(&mut self, open: Pos, expected: &str) -> Result<(), ConditionError> {
        let t = self.next();
        match t.tok {
            Tok::RParen => Ok(()),
            Tok::Eof => Err(ConditionError::at(
                open,
                "unbalanced parenthesis: this \"(\" is never closed",
            )),
            tok => Err(ConditionError::at(
                t.pos,
                format!("expected {expected}, found {}", tok.describe()),
            )),
        }
    }

    fn predicate(&mut self, field: &str) -> Result<Predicate, ConditionError> {
        let t = self.next();
        match t.tok {
            Tok::Cmp(op) => {
                let (lit, pos) = self.value(&format!("\"{op}\""))?;
                let ordered = !matches!(op, CmpOp::Eq | CmpOp::Ne);
                if ordered && lit.int.is_none() {
                    return Err(ConditionError::at(
                        pos,
                        format!("expected an integer after \"{op}\", found {lit}"),
                    ));
                }
                Ok(Predicate::Cmp(op, lit))
            }
            Tok::Word(w) if w == "exists" => Ok(Predicate::Exists),
            Tok::Word(w) if w == "in" => {
                let items = self.items("in")?;
                Ok(Predicate::In(LitSet::new(
                    items.into_iter().map(|(lit, _)| lit).collect(),
                )))
            }
            Tok::Word(w) if w == "in_cidr" => {
                let nets = self.items("in_cidr")?.into_iter().map(|(lit, pos)| {
                    Cidr::parse(&lit.text).map_err(|msg| ConditionError::at(pos, msg))
                });
                Ok(Predicate::InCidr(nets.collect::<Result<_, _>>()?))
            }
            Tok::Word(w) => match StrOp::ALL.iter().find(|(name, _)| *name == w) {
                Some((name, op)) => Ok(Predicate::Str(*op, self.value(&format!("\"{name}\""))?.0)),
                None => Err(expected_operator(field, &Tok::Word(w), t.pos)),
            },
            tok => Err(expected_operator(field, &tok, t.pos)),
        }
    }

    /// A single value after an operator (named by `after` in the error).
    fn value(&mut self, after: &str) -> Result<(Literal, Pos), ConditionError> {
        let t = self.next();
        match t.tok {
            Tok::Str(s) => Ok((Literal::new(s), t.pos)),
            Tok::Word(w) if !CONNECTIVES.contains(&w.as_str()) => Ok((Literal::new(w), t.pos)),
            Tok::Word(w) => Err(ConditionError::at(
                t.pos,
                format!(
                    "expected a value after {after}, found \"{w}\" (quote it to mean the word itself)"
                ),
            )),
            tok => Err(ConditionError::at(
                t.pos,
                format!("expected a value after {after}, found {}", tok.describe()),
            )),
        }
    }

    /// `( item, ... )` after `keyword`: values and list names, lists expanded in place, each
    /// with where it was written (a list's items, where the list's name was).
    fn items(&mut self, keyword: &str) -> Result<Vec<(Literal, Pos)>, ConditionError> {
        let open = self.next();
        if open.tok != Tok::LParen {
            return Err(ConditionError::at(
                open.pos,
                format!(
                    "expected \"(\" after \"{keyword}\", found {}",
                    open.tok.describe()
                ),
            ));
        }
        let mut items = Vec::new();
        if self.peek().tok == Tok::RParen {
            self.next();
            return Ok(items);
        }
        loop {
            let t = self.next();
            match t.tok {
                Tok::Str(s) => items.push((Literal::new(s), t.pos)),
                Tok::Word(w) if self.c.defs.has_list(&w) => {
                    let expanded = self
                        .c
                        .defs
                        .expand_list(&w)
                        .map_err(|msg| ConditionError::at(t.pos, msg))?;
                    items.extend(expanded.into_iter().map(|v| (Literal::new(v), t.pos)));
                }
                Tok::Word(w) => {
                    self.check_not_a_list_typo(&w, t.pos)?;
                    items.push((Literal::new(w), t.pos));
                }
                Tok::Eof => {
                    return Err(ConditionError::at(
                        open.pos,
                        "unbalanced parenthesis: this \"(\" is never closed",
                    ));
                }
                tok => {
                    return Err(ConditionError::at(
                        t.pos,
                        format!("expected a value or a list name, found {}", tok.describe()),
                    ));
                }
            }
            if self.peek().tok == Tok::Comma {
                self.next();
                continue;
            }
            self.close(open.pos, "\",\" or \")\"")?;
            return Ok(items);
        }
    }

    /// A bare word is a value unless a list has its name; but a snake_case word one or two
    /// edits from a list name is almost surely a misspelt list, and taking it as a value would
    /// give a rule that silently never fires. Quoting the word says "I mean the value".
    fn check_not_a_list_typo(&self, word: &str, pos: Pos) -> Result<(), ConditionError> {
        if !word.contains('_') {
            return Ok(());
        }
        let hint = did_you_mean(word, self.c.defs.list_names());
        if hint.is_empty() {
            return Ok(());
        }
        Err(ConditionError::at(
            pos,
            format!("unknown list \"{word}\"{hint}; quote it if you meant the value itself"),
        ))
    }
}

fn join(mut items: Vec<Expr>, make: fn(Vec<Expr>) -> Expr) -> Expr {
    if items.len() == 1 {
        items.remove(0)
    } else {
        make(items)
    }
}

fn expected_operator(field: &str, found: &Tok, pos: Pos) -> ConditionError {
    let names = ["in", "in_cidr", "exists"]
        .into_iter()
        .chain(StrOp::ALL.iter().map(|(name, _)| *name));
    ConditionError::at(
        pos,
        format!(
            "expected an operator after field {field}, found {}{}",
            found.describe(),
            suggest(found, names)
        ),
    )
}

/// A "did you mean" for a misspelt keyword, when the token is a word.
fn suggest<'a>(found: &Tok, candidates: impl IntoIterator<Item = &'a str>) -> String {
    match found {
        Tok::Word(w) => did_you_mean(w, candidates),
        _ => String::new(),
    }
}

/// `evt.kind`, `container.label[app.kubernetes.io/name]`: a letter first, then at least one
/// dot, and optionally a key in brackets at the end (any characters but brackets).
fn is_field(word: &str) -> bool {
    let (base, key) = match word.split_once('[') {
        Some((base, rest)) => (base, Some(rest)),
        None => (word, None),
    };
    base.starts_with(|c: char| c.is_ascii_alphabetic())
        && base.contains('.')
        && base
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.'))
        && key.is_none_or(|k| {
            k.len() > 1 && k.ends_with(']') && !k[..k.len() - 1].contains(['[', ']'])
        })
}

fn is_keyword(word: &str) -> bool {
    CONNECTIVES.contains(&word)
        || ["in", "in_cidr", "exists"].contains(&word)
        || StrOp::ALL.iter().any(|(name, _)| *name == word)
}

/// A macro name: `spawned_process`, `container`.
fn is_identifier(word: &str) -> bool {
    word.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && word.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}
