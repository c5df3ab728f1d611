//! Tokens of the schema language, each with the line and column it starts at.

use super::SchemaError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// A name or keyword (keywords are told apart by the parser, case-insensitively).
    Word(String),
    Symbol(char),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spanned {
    pub token: Token,
    pub line: usize,
    pub column: usize,
}

/// Splits `text` into tokens. Comments run from `--` or `//` to the end of the line.
pub fn tokenize(text: &str) -> Result<Vec<Spanned>, SchemaError> {
    let mut tokens = Vec::new();
    let (mut line, mut column) = (1, 1);
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        let (start_line, start_column) = (line, column);
        let mut advance = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
            let c = chars.next();
            if c == Some('\n') {
                line += 1;
                column = 1;
            } else {
                column += 1;
            }
            c
        };
        if c.is_whitespace() {
            advance(&mut chars);
        } else if c == '-' || c == '/' {
            advance(&mut chars);
            if chars.peek() != Some(&c) {
                return Err(SchemaError::at(
                    start_line,
                    start_column,
                    format!("unexpected {c:?}"),
                ));
            }
            while chars.peek().is_some_and(|&n| n != '\n') {
                advance(&mut chars);
            }
        } else if c.is_ascii_alphabetic() || c == '_' {
            let mut word = String::new();
            while chars
                .peek()
                .is_some_and(|&n| n.is_ascii_alphanumeric() || n == '_')
            {
                word.extend(advance(&mut chars));
            }
            tokens.push(Spanned {
                token: Token::Word(word),
                line: start_line,
                column: start_column,
            });
        } else if "{}();,".contains(c) {
            advance(&mut chars);
            tokens.push(Spanned {
                token: Token::Symbol(c),
                line: start_line,
                column: start_column,
            });
        } else {
            return Err(SchemaError::at(
                start_line,
                start_column,
                format!("unexpected {c:?}"),
            ));
        }
    }
    Ok(tokens)
}
