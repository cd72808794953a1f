//! Static bearer tokens from upstream's `--token-auth-file` CSV format.
//!
//! Each record is `token,user,uid[,"group1,group2,..."]`; fields may be double-quoted (with `""`
//! for a literal quote), leading spaces before a field are ignored, and blank lines and lines
//! starting with `#` are skipped. As upstream does, a record with an empty token is skipped and a
//! repeated token overrides the earlier record (both with a warning). Every error names its
//! 1-based line number.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::UserInfo;

/// Errors reading or parsing a token file.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// The file could not be read.
    #[error("reading token file {}: {source}", path.display())]
    Io {
        /// The token file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A record is malformed.
    #[error("token file line {line}: {reason}")]
    Parse {
        /// 1-based line number of the record.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// Reads and parses the token file at `path` (see [`parse_token_file`]).
pub fn load_token_file(path: &Path) -> Result<HashMap<String, UserInfo>, TokenFileError> {
    let contents = std::fs::read_to_string(path).map_err(|source| TokenFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_token_file(&contents)
}

/// Parses token file contents into a map from token to the user it authenticates.
pub fn parse_token_file(contents: &str) -> Result<HashMap<String, UserInfo>, TokenFileError> {
    let mut tokens = HashMap::new();
    for (index, raw) in contents.lines().enumerate() {
        let line = index + 1;
        if raw.trim().is_empty() || raw.trim_start().starts_with('#') {
            continue;
        }
        let fields =
            split_csv_line(raw).map_err(|reason| TokenFileError::Parse { line, reason })?;
        if fields.len() < 3 {
            return Err(TokenFileError::Parse {
                line,
                reason: format!(
                    "want at least 3 columns (token, user name, user uid), found {}",
                    fields.len()
                ),
            });
        }
        let token = fields[0].trim();
        if token.is_empty() {
            tracing::warn!(line, "skipping token file record with an empty token");
            continue;
        }
        let groups = fields
            .get(3)
            .map(|g| {
                g.split(',')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let user = UserInfo {
            name: fields[1].clone(),
            uid: fields[2].clone(),
            groups,
        };
        if tokens.insert(token.to_string(), user).is_some() {
            tracing::warn!(line, "duplicate token in token file; the later record wins");
        }
    }
    Ok(tokens)
}

/// Splits one CSV record into fields (RFC 4180 quoting, leading spaces trimmed as Go's
/// `csv.Reader{TrimLeadingSpace: true}` does).
fn split_csv_line(line: &str) -> Result<Vec<String>, String> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
        let mut field = String::new();
        if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next() {
                    Some('"') if chars.next_if_eq(&'"').is_some() => field.push('"'),
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err(format!("unterminated quoted field {}", fields.len() + 1)),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(c) => {
                    return Err(format!(
                        "unexpected {c:?} after closing quote in field {}",
                        fields.len() + 1
                    ))
                }
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => {
                        return Err(format!("bare quote in unquoted field {}", fields.len() + 1))
                    }
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_csv_records() {
        let cases: &[(&str, &[&str])] = &[
            ("a,b,c", &["a", "b", "c"]),
            ("a, b,  c", &["a", "b", "c"]),
            (r#"a,"b,c",d"#, &["a", "b,c", "d"]),
            (r#""say ""hi""",x"#, &["say \"hi\"", "x"]),
            ("a,,c,", &["a", "", "c", ""]),
            ("a,b\r", &["a", "b"]),
            (r#"a,"""#, &["a", ""]),
        ];
        for (input, want) in cases {
            assert_eq!(split_csv_line(input).unwrap(), *want, "input {input:?}");
        }
    }

    #[test]
    fn rejects_malformed_quoting() {
        for input in [r#"a,"b"#, r#"a,"b"c"#, r#"a,b"c"#] {
            assert!(split_csv_line(input).is_err(), "input {input:?}");
        }
    }
}
