//! Route patterns and the precompiled route table.
//!
//! A pattern is a sequence of `/`-separated segments:
//!
//! | segment    | matches                                                  |
//! |------------|----------------------------------------------------------|
//! | `labs`     | exactly that text (case-sensitive)                       |
//! | `{patient}`| any one non-empty segment                                 |
//! | `*`        | any one non-empty segment                                 |
//! | `**`       | the rest of the path: zero or more segments (last only)   |
//!
//! Choosing among several matching routes is deterministic: routes that name the request's
//! host come before routes without a host; then patterns compare segment by segment, and at the
//! first difference a literal beats `{param}`/`*`, which beats the end of the pattern, which
//! beats `**`. So `/a/b` beats `/a/{x}` beats `/a` beats `/a/**`. Two routes that would tie are
//! refused when the config is loaded, so the table never depends on the order of the file.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use serde::Deserialize;

use crate::path;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    /// `*`
    One,
    /// `{name}`: one segment, as `*`, whose value a route may use (its patient id).
    Param(Box<str>),
    /// `**`
    Rest,
}

impl Segment {
    /// Higher is more specific; `End` (2) sits between `One` and `Rest`.
    fn rank(&self) -> u8 {
        match self {
            Segment::Literal(_) => 4,
            Segment::One | Segment::Param(_) => 3,
            Segment::Rest => 1,
        }
    }
}

const END_RANK: u8 = 2;

/// A compiled path pattern.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "String")]
pub struct PathPattern {
    text: String,
    segments: Vec<Segment>,
}

impl TryFrom<String> for PathPattern {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        if !text.starts_with('/') {
            return Err(format!("path pattern `{text}` must start with `/`"));
        }
        if path::normalize(&text).map_err(|e| format!("`{text}`: {e}"))? != text.as_str() {
            return Err(format!(
                "path pattern `{text}` is not in normal form (dot segments, `//` or percent-encoding)"
            ));
        }
        let parts: Vec<&str> = text[1..].split('/').collect();
        let last = parts.len() - 1;
        let mut segments = Vec::with_capacity(parts.len());
        for (index, part) in parts.iter().enumerate() {
            let segment = match *part {
                "**" if index == last => Segment::Rest,
                "**" => return Err(format!("`{text}`: `**` may only be the last segment")),
                "*" => Segment::One,
                param if param.starts_with('{') && param.ends_with('}') => {
                    let name = &param[1..param.len() - 1];
                    if name.is_empty()
                        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    {
                        return Err(format!(
                            "`{text}`: parameter `{param}` needs a name of letters, digits and `_`"
                        ));
                    }
                    Segment::Param(name.into())
                }
                literal if literal.contains(['*', '{', '}']) => {
                    return Err(format!(
                        "`{text}`: `{literal}` mixes text with `*` or braces"
                    ));
                }
                literal => Segment::Literal(literal.into()),
            };
            segments.push(segment);
        }
        // "/" is the single empty literal segment: it matches only "/".
        Ok(Self { text, segments })
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PathPattern {
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// What the pattern matches, with parameter names erased: two patterns of the same shape
    /// match exactly the same paths.
    pub fn shape(&self) -> String {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Literal(text) => text.as_ref(),
                Segment::One | Segment::Param(_) => "*",
                Segment::Rest => "**",
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// True when `prefix` ("/api", "/api/v1") is made of whole literal segments at the start.
    pub fn has_literal_prefix(&self, prefix: &str) -> bool {
        let Some(rest) = prefix.strip_prefix('/') else {
            return false;
        };
        let wanted: Vec<&str> = rest.split('/').collect();
        wanted.len() <= self.segments.len()
            && !rest.is_empty()
            && wanted
                .iter()
                .zip(&self.segments)
                .all(|(w, s)| matches!(s, Segment::Literal(l) if l.as_ref() == *w))
    }

    /// The position of a final `**` (0 is the first segment after the leading `/`): how many
    /// segments come before the rest of the path.
    pub fn rest_index(&self) -> Option<usize> {
        match self.segments.last() {
            Some(Segment::Rest) => Some(self.segments.len() - 1),
            _ => None,
        }
    }

    /// The position of the `{name}` segment (0 is the first after the leading `/`).
    pub fn param_index(&self, name: &str) -> Option<usize> {
        self.segments
            .iter()
            .position(|s| matches!(s, Segment::Param(n) if n.as_ref() == name))
    }

    fn matches(&self, segments: &[&str]) -> bool {
        let mut input = segments.iter();
        for pattern in &self.segments {
            match pattern {
                Segment::Rest => return true,
                Segment::One | Segment::Param(_) => match input.next() {
                    Some(s) if !s.is_empty() => {}
                    _ => return false,
                },
                Segment::Literal(literal) => match input.next() {
                    Some(s) if *s == literal.as_ref() => {}
                    _ => return false,
                },
            }
        }
        input.next().is_none()
    }

    fn ranks(&self) -> impl Iterator<Item = u8> + '_ {
        self.segments
            .iter()
            .map(Segment::rank)
            .chain(std::iter::once(END_RANK))
    }

    /// More specific first.
    fn specificity(&self, other: &Self) -> Ordering {
        for (a, b) in self.ranks().zip(other.ranks()) {
            match b.cmp(&a) {
                Ordering::Equal => continue,
                unequal => return unequal,
            }
        }
        Ordering::Equal
    }
}

/// One compiled route with whatever the proxy needs to serve it (`T`).
#[derive(Debug)]
struct Entry<T> {
    host: Option<Box<str>>,
    pattern: PathPattern,
    target: Arc<T>,
}

/// The route table, sorted once so that the first match is the most specific one.
#[derive(Debug)]
pub struct RouteTable<T> {
    entries: Vec<Entry<T>>,
}

impl<T> RouteTable<T> {
    /// `routes` are `(host, pattern, target)`; the config has already refused ties.
    pub fn new(routes: impl IntoIterator<Item = (Option<String>, PathPattern, T)>) -> Self {
        let mut entries: Vec<Entry<T>> = routes
            .into_iter()
            .map(|(host, pattern, target)| Entry {
                host: host.map(|h| h.to_ascii_lowercase().into_boxed_str()),
                pattern,
                target: Arc::new(target),
            })
            .collect();
        entries.sort_by(|a, b| {
            b.host
                .is_some()
                .cmp(&a.host.is_some())
                .then_with(|| a.pattern.specificity(&b.pattern))
        });
        Self { entries }
    }

    /// The most specific route for a host (lower-case, no port) and a normalized path.
    pub fn find(&self, host: Option<&str>, normalized_path: &str) -> Option<&Arc<T>> {
        let segments: Vec<&str> = normalized_path
            .get(1..)
            .unwrap_or_default()
            .split('/')
            .collect();
        self.entries
            .iter()
            .find(|entry| {
                entry.host.as_deref().is_none_or(|h| Some(h) == host)
                    && entry.pattern.matches(&segments)
            })
            .map(|entry| &entry.target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> PathPattern {
        PathPattern::try_from(text.to_owned()).unwrap()
    }

    fn table(routes: &[(Option<&str>, &str)]) -> RouteTable<String> {
        RouteTable::new(routes.iter().map(|(host, path)| {
            let name = format!("{}{}", host.unwrap_or(""), path);
            (host.map(str::to_owned), pattern(path), name)
        }))
    }

    fn found<'a>(table: &'a RouteTable<String>, host: Option<&str>, path: &str) -> Option<&'a str> {
        table.find(host, path).map(|t| t.as_str())
    }

    #[test]
    fn parameters_are_found_by_name() {
        let p = pattern("/api/{site}/patients/{patient}/**");
        assert_eq!(p.param_index("patient"), Some(3));
        assert_eq!(p.param_index("site"), Some(1));
        assert_eq!(p.param_index("api"), None);
        assert_eq!(pattern("/api/*/x").param_index("*"), None);
    }

    #[test]
    fn segments_match_as_documented() {
        let t = table(&[
            (None, "/public/*"),
            (None, "/api/patients/{patient}/labs/**"),
            (None, "/exact"),
        ]);
        assert_eq!(found(&t, None, "/public/a"), Some("/public/*"));
        assert_eq!(found(&t, None, "/public/a/b"), None);
        assert_eq!(found(&t, None, "/public/"), None);
        assert_eq!(found(&t, None, "/public"), None);
        assert_eq!(
            found(&t, None, "/api/patients/7/labs"),
            Some("/api/patients/{patient}/labs/**")
        );
        assert_eq!(
            found(&t, None, "/api/patients/7/labs/2024/x"),
            Some("/api/patients/{patient}/labs/**")
        );
        assert_eq!(found(&t, None, "/api/patients//labs"), None);
        assert_eq!(found(&t, None, "/exact"), Some("/exact"));
        assert_eq!(found(&t, None, "/exact/"), None);
        assert_eq!(found(&t, None, "/Exact"), None);
    }

    #[test]
    fn most_specific_wins_whatever_the_order() {
        let routes = [
            (None, "/a/**"),
            (None, "/a/{x}"),
            (None, "/a/b"),
            (None, "/a"),
            (None, "/**"),
        ];
        for rotation in 0..routes.len() {
            let mut order = routes.to_vec();
            order.rotate_left(rotation);
            let t = table(&order);
            assert_eq!(found(&t, None, "/a/b"), Some("/a/b"));
            assert_eq!(found(&t, None, "/a/c"), Some("/a/{x}"));
            assert_eq!(found(&t, None, "/a"), Some("/a"));
            assert_eq!(found(&t, None, "/a/c/d"), Some("/a/**"));
            assert_eq!(found(&t, None, "/zzz"), Some("/**"));
            assert_eq!(found(&t, None, "/"), Some("/**"));
        }
    }

    #[test]
    fn host_routes_come_first() {
        let t = table(&[(None, "/api/x"), (Some("EHR.example.org"), "/api/**")]);
        assert_eq!(
            found(&t, Some("ehr.example.org"), "/api/x"),
            Some("EHR.example.org/api/**")
        );
        assert_eq!(
            found(&t, Some("other.example.org"), "/api/x"),
            Some("/api/x")
        );
        assert_eq!(found(&t, Some("other.example.org"), "/api/y"), None);
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in [
            "api", "/a/**/b", "/a/{}", "/a/{x-y}", "/a/b*", "/a/../b", "//a", "/a%2",
        ] {
            assert!(
                PathPattern::try_from(bad.to_owned()).is_err(),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn shapes_and_prefixes() {
        assert_eq!(pattern("/a/{x}/**").shape(), pattern("/a/*/**").shape());
        assert!(pattern("/api/v1/**").has_literal_prefix("/api"));
        assert!(pattern("/api/v1/**").has_literal_prefix("/api/v1"));
        assert!(!pattern("/api/v1/**").has_literal_prefix("/ap"));
        assert!(!pattern("/{x}/v1").has_literal_prefix("/api"));
        assert!(!pattern("/api").has_literal_prefix("/"));
    }
}
