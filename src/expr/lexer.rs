//! The lexer for the CEL syntax of `assert` and `{{…}}` templates: tokens with their spans.

use super::ast::{ParseError, Span};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Ident(String),
    Int(i64),
    /// 2^63, which is only valid right after a unary minus.
    IntMinMagnitude,
    UInt(u64),
    Double(f64),
    Str(String),
    Bytes(Vec<u8>),
    Punct(&'static str),
    Eof,
}

const PUNCTS: [&str; 24] = [
    "||", "&&", "==", "!=", "<=", ">=", "<", ">", "!", "+", "-", "*", "/", "%", "?", ":", ".", ",",
    "(", ")", "[", "]", "{", "}",
];

/// Reserved words of CEL that may not name anything.
pub(super) const RESERVED: [&str; 18] = [
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
    "in",
];

pub(super) struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    pub(super) fn new(src: &'a str) -> Lexer<'a> {
        Lexer { src, pos: 0 }
    }
}

impl<'a> Lexer<'a> {
    fn err<T>(&self, message: impl Into<String>, start: usize) -> Result<T, ParseError> {
        Err(ParseError {
            message: message.into(),
            span: Span {
                start,
                end: self.pos.max(start + 1),
            },
        })
    }

    fn skip_space(&mut self) {
        let bytes = self.src.as_bytes();
        while self.pos < bytes.len() {
            match bytes[self.pos] {
                b' ' | b'\t' | b'\n' | b'\r' => self.pos += 1,
                b'/' if bytes.get(self.pos + 1) == Some(&b'/') => {
                    while self.pos < bytes.len() && bytes[self.pos] != b'\n' {
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
    }

    pub(super) fn next(&mut self) -> Result<(Tok, Span), ParseError> {
        self.skip_space();
        let start = self.pos;
        let rest = &self.src[self.pos..];
        let Some(c) = rest.chars().next() else {
            return Ok((Tok::Eof, Span { start, end: start }));
        };
        let tok = if c.is_ascii_digit()
            || (c == '.' && rest[1..].starts_with(|c: char| c.is_ascii_digit()))
        {
            self.number()?
        } else if c == '"' || c == '\'' {
            Tok::Str(self.string(false)?)
        } else if (c == 'r' || c == 'R') && rest[1..].starts_with(['"', '\'']) {
            self.pos += 1;
            Tok::Str(self.string(true)?)
        } else if (c == 'b' || c == 'B') && rest[1..].starts_with(['"', '\'']) {
            self.pos += 1;
            Tok::Bytes(self.string(false)?.into_bytes())
        } else if c == '_' || c.is_ascii_alphabetic() {
            let len = rest
                .find(|c: char| !(c == '_' || c.is_ascii_alphanumeric()))
                .unwrap_or(rest.len());
            self.pos += len;
            Tok::Ident(rest[..len].to_string())
        } else if let Some(p) = PUNCTS.iter().find(|p| rest.starts_with(**p)) {
            self.pos += p.len();
            Tok::Punct(p)
        } else if rest.starts_with('=') {
            return self.err("unexpected `=`: compare with `==`", start);
        } else {
            self.pos += c.len_utf8();
            return self.err(format!("unexpected character `{c}`"), start);
        };
        Ok((
            tok,
            Span {
                start,
                end: self.pos,
            },
        ))
    }

    fn number(&mut self) -> Result<Tok, ParseError> {
        let start = self.pos;
        let rest = &self.src[start..];
        if rest.starts_with("0x") || rest.starts_with("0X") {
            let digits = rest[2..]
                .find(|c: char| !c.is_ascii_hexdigit())
                .unwrap_or(rest.len() - 2);
            self.pos += 2 + digits;
            let text = &rest[2..2 + digits];
            if self.src[self.pos..].starts_with(['u', 'U']) {
                self.pos += 1;
                return u64::from_str_radix(text, 16)
                    .map(Tok::UInt)
                    .or_else(|_| self.err("integer literal out of range", start));
            }
            return i64::from_str_radix(text, 16)
                .map(Tok::Int)
                .or_else(|_| self.err("integer literal out of range", start));
        }
        let bytes = rest.as_bytes();
        let mut i = 0;
        let mut float = false;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i < bytes.len() && bytes[i] == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
            float = true;
            i += 1;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
        }
        if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
            let mut j = i + 1;
            if j < bytes.len() && (bytes[j] == b'+' || bytes[j] == b'-') {
                j += 1;
            }
            if j < bytes.len() && bytes[j].is_ascii_digit() {
                float = true;
                while j < bytes.len() && bytes[j].is_ascii_digit() {
                    j += 1;
                }
                i = j;
            }
        }
        let text = &rest[..i];
        self.pos += i;
        if float {
            return text
                .parse()
                .map(Tok::Double)
                .or_else(|_| self.err("malformed number", start));
        }
        if self.src[self.pos..].starts_with(['u', 'U']) {
            self.pos += 1;
            return text
                .parse()
                .map(Tok::UInt)
                .or_else(|_| self.err("integer literal out of range", start));
        }
        match text.parse() {
            Ok(i) => Ok(Tok::Int(i)),
            Err(_) if text == "9223372036854775808" => Ok(Tok::IntMinMagnitude),
            Err(_) => self.err("integer literal out of range (int is 64-bit)", start),
        }
    }

    fn string(&mut self, raw: bool) -> Result<String, ParseError> {
        let start = self.pos;
        let rest = &self.src[start..];
        let quote = &rest[..1];
        let triple = rest.starts_with(&quote.repeat(3));
        let delim = if triple {
            quote.repeat(3)
        } else {
            quote.to_string()
        };
        self.pos += delim.len();
        let mut out = String::new();
        loop {
            let rest = &self.src[self.pos..];
            if rest.starts_with(delim.as_str()) {
                self.pos += delim.len();
                return Ok(out);
            }
            let Some(c) = rest.chars().next() else {
                return self.err("unterminated string literal", start);
            };
            if c == '\n' && !triple {
                return self.err("unterminated string literal", start);
            }
            self.pos += c.len_utf8();
            if c != '\\' || raw {
                out.push(c);
                continue;
            }
            let esc_start = self.pos - 1;
            let Some(e) = self.src[self.pos..].chars().next() else {
                return self.err("unterminated string literal", start);
            };
            self.pos += e.len_utf8();
            match e {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                '0' => out.push('\0'),
                'a' => out.push('\x07'),
                'b' => out.push('\x08'),
                'f' => out.push('\x0c'),
                'v' => out.push('\x0b'),
                '\\' | '"' | '\'' | '`' | '?' => out.push(e),
                'x' | 'u' | 'U' => {
                    let n = match e {
                        'x' => 2,
                        'u' => 4,
                        _ => 8,
                    };
                    let hex = self.src.get(self.pos..self.pos + n).unwrap_or("");
                    let ch = u32::from_str_radix(hex, 16).ok().and_then(char::from_u32);
                    match ch {
                        Some(ch) if hex.len() == n => {
                            self.pos += n;
                            out.push(ch);
                        }
                        _ => return self.err(format!("invalid escape `\\{e}{hex}`"), esc_start),
                    }
                }
                other => return self.err(format!("invalid escape `\\{other}`"), esc_start),
            }
        }
    }
}
