//! Table names as `pitr undo` takes them (`SCHEMA.NAME`, or `NAME` in `public`), quoted for SQL
//! and for `pg_dump -t`.

use std::fmt;

use serde::{Serialize, Serializer};

/// A schema-qualified table name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QualName {
    /// Schema.
    pub schema: String,
    /// Table.
    pub name: String,
}

impl QualName {
    /// Parses `SCHEMA.NAME` or `NAME` (schema `public`); `"quoted"` parts keep dots and case.
    pub fn parse(s: &str) -> Result<QualName, String> {
        let parts = split_ident(s.trim())?;
        let (schema, name) = match parts.as_slice() {
            [n] => ("public".to_string(), n.clone()),
            [s, n] => (s.clone(), n.clone()),
            _ => return Err(format!("{s:?} is not a table name: expected SCHEMA.NAME")),
        };
        if name.is_empty() || schema.is_empty() || name.len() > 63 || schema.len() > 63 {
            return Err(format!("{s:?} is not a table name: expected SCHEMA.NAME"));
        }
        Ok(QualName { schema, name })
    }

    /// The same schema, another name.
    pub fn with_name(&self, name: &str) -> QualName {
        QualName {
            schema: self.schema.clone(),
            name: name.to_string(),
        }
    }

    /// Another schema, the same name.
    pub fn with_schema(&self, schema: &str) -> QualName {
        QualName {
            schema: schema.to_string(),
            name: self.name.clone(),
        }
    }

    /// `"schema"."name"`.
    pub fn sql(&self) -> String {
        format!("{}.{}", ident(&self.schema), ident(&self.name))
    }
}

impl fmt::Display for QualName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

impl Serialize for QualName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Splits `a.b` at unquoted dots; unquoted parts are folded to lower case, as PostgreSQL does.
fn split_ident(s: &str) -> Result<Vec<String>, String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (false, '"') => quoted = true,
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            (true, '"') => quoted = false,
            (false, '.') => parts.push(std::mem::take(&mut cur)),
            (false, c) => cur.extend(c.to_lowercase()),
            (true, c) => cur.push(c),
        }
    }
    if quoted {
        return Err(format!("{s:?}: unterminated quoted name"));
    }
    parts.push(cur);
    Ok(parts)
}

/// An SQL identifier, always quoted.
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// An SQL string literal.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_like_postgresql() {
        let q = QualName::parse("Sales.Orders").unwrap();
        assert_eq!((q.schema.as_str(), q.name.as_str()), ("sales", "orders"));
        let q = QualName::parse("orders").unwrap();
        assert_eq!(q.to_string(), "public.orders");
        let q = QualName::parse("\"My.Schema\".\"T\"\"x\"").unwrap();
        assert_eq!((q.schema.as_str(), q.name.as_str()), ("My.Schema", "T\"x"));
        assert_eq!(q.sql(), "\"My.Schema\".\"T\"\"x\"");
        assert!(QualName::parse("a.b.c").is_err());
        assert!(QualName::parse("a.").is_err());
        assert!(QualName::parse("\"a").is_err());
        assert_eq!(literal("it's"), "'it''s'");
    }
}
