//! Injection detection in request values: query parameters, form fields, JSON strings.
//!
//! Threat: a value that a back end pastes into SQL, HTML, a file path or a shell command
//! changes the meaning of that statement (SQL injection, cross-site scripting, path traversal,
//! OS command injection). Wardgate cannot see how each back end uses a value, so it refuses
//! values whose *grammar* is that of an attack, and lets clinical free text through.
//!
//! Rule: every parameter name and value of the query string and of form bodies, and every JSON
//! string and object key, is decoded once (percent-encoding and `+`) and checked by
//! [`scan_value`]:
//!
//! ```text
//!  value ──► SQL: libinjection tokenizer + fingerprints (a lone quote or keyword never matches)
//!        ──► XSS: libinjection HTML5 tokenizer (dangerous tags, event attributes, js: URLs)
//!        ──► command: a shell operator (; | & newline) then a known command with a shell-like
//!            argument or none, or a substitution $(cmd …) / `cmd …`
//!        ──► traversal: a dot-only path segment next to / or \ (../, ..\, ....//), or an
//!            absolute path into system directories (/etc/, /proc/, c:\windows)
//!  value still holding %XX escapes ──► the same checks once more on its decoding, because
//!            back ends that decode twice are common; no third round.
//! ```
//!
//! Fields named in a [`FieldAllowList`] are not scanned: FHIR narrative (`text.div`) is XHTML
//! by definition, and FHIR requires the receiver to sanitize it.
//!
//! Standard: OWASP ASVS 5.0 V1 (encoding and sanitization) as a defence in depth beside
//! parameterized queries and output encoding at the back end; libinjection (Nick Galbreath)
//! for SQL and HTML through its Rust port `libinjectionrs`.
//!
//! Measured (OWASP CRS regression corpus `crs-dev/`, FHIR R4 examples `fhir-r4/`; stages whose
//! payload lies only in the path or headers are out of scope and not counted):
//!
//! ```text
//! CRS family     attacks caught   benign passed
//! 930 LFI           7/8    88%       0/0
//! 932 RCE          63/348  18%     123/142  87%
//! 933 PHP          25/198  13%      51/58   88%
//! 934 generic      10/162   6%      30/31   97%
//! 941 XSS          44/101  44%      22/22  100%
//! 942 SQLi         77/340  23%      66/71   93%
//! 944 Java         34/161  21%       1/1   100%
//! FHIR R4 JSON (scan_json, allow list `text.div`): 0 findings in 110 files.
//! FHIR R4 XML scanned whole with scan_value: 28 of 30 trip (markup), so XML bodies must be
//! routed by content type, not through this scanner.
//! ```
//!
//! Most CRS misses are regex fragments (`ORder by`, `ABS(`, `alert()`) or commands given
//! without a shell operator; libinjection only flags what parses as a complete injection,
//! which is why clinical prose passes. CRS "benign" stages include attacks aimed at other
//! rules, so their pass rate is a floor; true false positives seen there are XML prologs
//! (`<?xml`, libinjection XSS) and `while (foo) is bar.` (libinjection SQLi).
//! Reproduce with
//! `cargo test --test integration injection -- --nocapture`.

use serde_json::Value;

use crate::path::escape_at;

pub use crate::refusal::Attack;

/// An attack and the field that carries it: `query:name`, `form:name` or `json:a.b.c`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub attack: Attack,
    pub field: String,
}

/// Why a form body cannot be decoded; the gateway refuses it rather than guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MalformedForm {
    #[error("the form body has a `%` that is not followed by two hex digits")]
    BadPercentEncoding,
    #[error("the form body does not decode to UTF-8")]
    NotUtf8,
}

/// Fields exempt from scanning.
///
/// An entry `text.div` exempts the JSON path `text.div` (object keys joined by `.`, array
/// indices skipped) and every path ending in `.text.div`; for query and form parameters the
/// entry is compared with the parameter name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldAllowList {
    entries: Vec<String>,
}

impl Default for FieldAllowList {
    /// FHIR narrative only.
    fn default() -> Self {
        Self::new(["text.div"])
    }
}

impl FieldAllowList {
    pub fn new<I, S>(entries: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            entries: entries.into_iter().map(Into::into).collect(),
        }
    }

    /// True when the parameter `name` is exempt.
    pub fn allows_param(&self, name: &str) -> bool {
        self.entries.iter().any(|entry| entry == name)
    }

    /// True when the JSON `path` is exempt.
    pub fn allows_json_path(&self, path: &str) -> bool {
        self.entries.iter().any(|entry| {
            path.strip_suffix(entry.as_str())
                .is_some_and(|head| head.is_empty() || head.ends_with('.'))
        })
    }
}

/// The attack a single, already decoded value carries, if any.
pub fn scan_value(value: &str) -> Option<Attack> {
    if is_plain_token(value) {
        return None;
    }
    scan_once(value).or_else(|| {
        // A second decoding only where the first left escapes behind (`%2527` -> `%27`).
        if has_percent_escape(value.as_bytes()) {
            let twice = percent_decode_lenient(value.as_bytes(), false);
            scan_once(&String::from_utf8_lossy(&twice))
        } else {
            None
        }
    })
}

/// Scans every name and value of a raw query string (without the `?`).
///
/// Decoding is lenient here: a stray `%` stays literal, invalid UTF-8 becomes U+FFFD.
pub fn scan_query(raw_query: &str, allow: &FieldAllowList) -> Option<Finding> {
    query_pairs(raw_query).find_map(|(name, value)| scan_pair("query", &name, &value, allow))
}

/// The leniently decoded `(name, value)` pairs of a raw query string, in order.
pub fn query_pairs(raw_query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    raw_query.split('&').map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (
            lossy(percent_decode_lenient(name.as_bytes(), true)),
            lossy(percent_decode_lenient(value.as_bytes(), true)),
        )
    })
}

/// Scans every name and value of an `application/x-www-form-urlencoded` body.
///
/// The whole body is decoded even after a finding: a malformed pair is refused whatever comes
/// before it, also where findings are only logged (`log`) or not wanted (`off`).
pub fn scan_form(body: &[u8], allow: &FieldAllowList) -> Result<Option<Finding>, MalformedForm> {
    let mut finding = None;
    for pair in form_pairs(body) {
        let (name, value) = pair?;
        if finding.is_none() {
            finding = scan_pair("form", &name, &value, allow);
        }
    }
    Ok(finding)
}

/// The decoded `(name, value)` pairs of an `application/x-www-form-urlencoded` body, in order;
/// a pair with a stray `%` or bytes that are not UTF-8 is an error, never guessed at.
pub fn form_pairs(
    body: &[u8],
) -> impl Iterator<Item = Result<(String, String), MalformedForm>> + '_ {
    body.split(|&b| b == b'&').map(|pair| {
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &[][..]),
        };
        Ok((decode_strict(name)?, decode_strict(value)?))
    })
}

/// Scans every string value and object key of a JSON document, with its path.
pub fn scan_json(value: &Value, allow: &FieldAllowList) -> Option<Finding> {
    // Explicit stack: a document built in memory may be deeper than the parser's limit.
    let mut stack: Vec<(String, &Value)> = vec![(String::new(), value)];
    while let Some((path, node)) = stack.pop() {
        match node {
            Value::String(text) => {
                let attack = (!allow.allows_json_path(&path))
                    .then(|| scan_value(text))
                    .flatten();
                if let Some(attack) = attack {
                    return Some(json_finding(attack, &path));
                }
            }
            Value::Array(items) => {
                stack.extend(items.iter().rev().map(|item| (path.clone(), item)));
            }
            Value::Object(map) => {
                let mut children = Vec::with_capacity(map.len());
                for (key, child) in map {
                    let child_path = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    let attack = (!allow.allows_json_path(&child_path))
                        .then(|| scan_value(key))
                        .flatten();
                    if let Some(attack) = attack {
                        return Some(json_finding(attack, &child_path));
                    }
                    children.push((child_path, child));
                }
                stack.extend(children.into_iter().rev());
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
    None
}

fn json_finding(attack: Attack, path: &str) -> Finding {
    let path = if path.is_empty() { "$" } else { path };
    Finding {
        attack,
        field: format!("json:{path}"),
    }
}

pub(crate) fn scan_pair(
    kind: &str,
    name: &str,
    value: &str,
    allow: &FieldAllowList,
) -> Option<Finding> {
    if allow.allows_param(name) {
        return None;
    }
    scan_value(name)
        .or_else(|| scan_value(value))
        .map(|attack| Finding {
            attack,
            field: format!("{kind}:{name}"),
        })
}

/// One token of letters, digits, `-`, `_` and `.` (ids, codes, dates, numbers, status words)
/// cannot change the grammar of SQL, HTML, a shell command or a path: no quote, operator,
/// separator, bracket or space to work with. Most values in API traffic are such tokens, and
/// the detectors cost about a microsecond each, so they are spared.
fn is_plain_token(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn scan_once(value: &str) -> Option<Attack> {
    let bytes = value.as_bytes();
    if libinjectionrs::detect_sqli(bytes).is_injection() {
        Some(Attack::SqlInjection)
    } else if libinjectionrs::detect_xss(bytes).is_injection() || is_script_url(value) {
        Some(Attack::CrossSiteScripting)
    } else if is_command_injection(value) {
        Some(Attack::CommandInjection)
    } else if is_path_traversal(value) {
        Some(Attack::PathTraversal)
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding

fn has_percent_escape(bytes: &[u8]) -> bool {
    (0..bytes.len()).any(|at| escape_at(bytes, at).is_some())
}

/// Decodes `%XX` (and `+` as space when `plus_is_space`); a `%` without two hex digits stays.
/// Decodes every valid `%XX`; a stray `%` stays as it is.
pub(crate) fn percent_decode_lenient(bytes: &[u8], plus_is_space: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        if let Some(decoded) = escape_at(bytes, at) {
            out.push(decoded);
            at += 3;
        } else {
            out.push(if plus_is_space && byte == b'+' {
                b' '
            } else {
                byte
            });
            at += 1;
        }
    }
    out
}

/// Whether a `%` in `bytes` is not followed by two hex digits.
pub(crate) fn has_stray_percent(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .enumerate()
        .any(|(at, &b)| b == b'%' && escape_at(bytes, at).is_none())
}

fn decode_strict(bytes: &[u8]) -> Result<String, MalformedForm> {
    if has_stray_percent(bytes) {
        return Err(MalformedForm::BadPercentEncoding);
    }
    String::from_utf8(percent_decode_lenient(bytes, true)).map_err(|_| MalformedForm::NotUtf8)
}

fn lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes)
        .unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into_owned())
}

// ---------------------------------------------------------------------------------------------
// Script URLs

/// A value that is a `javascript:` or `vbscript:` URL runs as code wherever a back end renders
/// it as a link or source. Browsers ignore leading blanks and tabs or newlines inside the
/// scheme, so those are ignored here too.
fn is_script_url(value: &str) -> bool {
    let scheme: String = value
        .trim_start_matches(|c: char| c.is_ascii_whitespace() || c.is_ascii_control())
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .take_while(|&c| c != ':')
        .take(16)
        .collect();
    let scheme = scheme.to_ascii_lowercase();
    (scheme == "javascript" || scheme == "vbscript") && value.contains(':')
}

// ---------------------------------------------------------------------------------------------
// OS command injection

/// Commands an attacker runs to probe, fetch or spawn; shell built-ins that read as prose
/// (`time`, `more`, `type`, `set`) are left out.
const COMMANDS: &[&str] = &[
    "awk",
    "base64",
    "bash",
    "busybox",
    "cat",
    "chmod",
    "chown",
    "cmd",
    "crontab",
    "curl",
    "dash",
    "dig",
    "dir",
    "echo",
    "env",
    "eval",
    "exec",
    "ftp",
    "grep",
    "head",
    "id",
    "ifconfig",
    "ipconfig",
    "kill",
    "ksh",
    "ls",
    "mkfifo",
    "nc",
    "ncat",
    "net",
    "netcat",
    "netstat",
    "nohup",
    "nslookup",
    "perl",
    "php",
    "ping",
    "powershell",
    "printenv",
    "ps",
    "pwd",
    "python",
    "python2",
    "python3",
    "rm",
    "ruby",
    "sed",
    "sh",
    "sleep",
    "socat",
    "ssh",
    "su",
    "sudo",
    "systeminfo",
    "tail",
    "tasklist",
    "telnet",
    "tftp",
    "touch",
    "uname",
    "wget",
    "whoami",
    "xxd",
    "zsh",
];

fn is_command_name(token: &str) -> bool {
    // The shell removes quotes and backslashes inside a word: `c'a't` and `c\at` run `cat`.
    let token: String = token
        .chars()
        .filter(|c| !matches!(c, '\'' | '"' | '\\'))
        .collect();
    // `/bin/cat`, `/usr/bin/id`: the program is the last path segment.
    let program = token.rsplit('/').next().unwrap_or(&token);
    let program = program
        .strip_suffix(".exe")
        .or_else(|| program.strip_suffix(".EXE"))
        .unwrap_or(program);
    COMMANDS
        .iter()
        .any(|command| command.eq_ignore_ascii_case(program))
}

fn is_shell_operator(c: char) -> bool {
    matches!(c, ';' | '|' | '&' | '\n' | '\r')
}

/// An argument shaped like a shell argument rather than a word of prose: an option, a path,
/// a variable, a quoted string, a URL or a drive path.
fn is_shell_argument(token: &str) -> bool {
    let bytes = token.as_bytes();
    token.starts_with(['/', '\\', '~', '$', '.', '"', '\'', '`'])
        || (bytes.first() == Some(&b'-')
            && bytes
                .get(1)
                .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'-'))
        || token.contains("://")
        || bytes.get(1) == Some(&b':')
}

fn is_command_injection(value: &str) -> bool {
    chained_command(value) || substituted_command(value)
}

/// `; cat /etc/passwd`, `| id`, `&& whoami`: an operator, then a command followed by nothing,
/// another operator, a redirection or a shell-like argument.
fn chained_command(value: &str) -> bool {
    value.match_indices(is_shell_operator).any(|(at, _)| {
        let rest = value[at..].trim_start_matches(|c: char| is_shell_operator(c) || c == ' ');
        // Subshells and groups: `;(id)`, `|{ id; }`.
        let rest = rest.trim_start_matches(|c: char| c.is_whitespace() || matches!(c, '(' | '{'));
        let end = rest
            .find(|c: char| {
                c.is_whitespace() || is_shell_operator(c) || matches!(c, '<' | '>' | ')' | '}')
            })
            .unwrap_or(rest.len());
        let (command, after) = rest.split_at(end);
        if !is_command_name(command) {
            return false;
        }
        let after = after.trim_start_matches([' ', '\t']);
        match after.chars().next() {
            None => true,
            Some(c) if is_shell_operator(c) || matches!(c, '<' | '>' | ')' | '}') => true,
            Some(_) => after
                .split_whitespace()
                .next()
                .is_some_and(is_shell_argument),
        }
    })
}

/// `$(whoami)`, `` `id` ``: command substitution whose first word is a command.
fn substituted_command(value: &str) -> bool {
    let mut opened = value
        .match_indices("$(")
        .map(|(at, _)| at + 2)
        .chain(value.match_indices('`').map(|(at, _)| at + 1));
    opened.any(|start| {
        value[start..]
            .trim_start()
            .split(|c: char| c.is_whitespace() || matches!(c, ')' | '`' | ';' | '|'))
            .next()
            .is_some_and(is_command_name)
    })
}

// ---------------------------------------------------------------------------------------------
// Path traversal

/// Directories whose files are worth reading to an attacker and never named in clinical data.
const UNIX_SYSTEM_DIRS: &[&str] = &["/etc/", "/proc/", "/sys/", "/root/", "/boot/", "/var/log/"];
const WINDOWS_SYSTEM_DIRS: &[&str] = &["windows", "winnt", "boot.ini", "inetpub"];

fn is_path_traversal(value: &str) -> bool {
    dot_segment(value) || system_path(value)
}

/// A segment made only of dots (`..`, `...`, `....`) with a `/` or `\` beside it, and not
/// glued to a file name on its left (`v1..2/`, `wait.../` are not segments).
fn dot_segment(value: &str) -> bool {
    let bytes = value.as_bytes();
    let is_sep = |b: u8| b == b'/' || b == b'\\';
    let is_name_char = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~');
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] != b'.' {
            at += 1;
            continue;
        }
        let start = at;
        while bytes.get(at) == Some(&b'.') {
            at += 1;
        }
        let before = start.checked_sub(1).and_then(|i| bytes.get(i)).copied();
        let after = bytes.get(at).copied();
        let bounded_before = before.is_none_or(|b| !is_name_char(b));
        let bounded_after = after.is_none_or(is_sep);
        let touches_sep = before.is_some_and(is_sep) || after.is_some_and(is_sep);
        if at - start >= 2 && bounded_before && bounded_after && touches_sep {
            return true;
        }
    }
    false
}

/// An absolute path into a system directory, not inside a URL (`example.org/etc/` is a URL path).
fn system_path(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    let starts_path = |at: usize| {
        at == 0
            || lower[..at]
                .chars()
                .next_back()
                .is_some_and(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '~')))
    };
    let unix = UNIX_SYSTEM_DIRS
        .iter()
        .any(|dir| lower.match_indices(dir).any(|(at, _)| starts_path(at)));
    let windows = lower
        .match_indices(":\\")
        .chain(lower.match_indices(":/"))
        .any(|(at, sep)| {
            let drive_ok =
                at >= 1 && lower.as_bytes()[at - 1].is_ascii_alphabetic() && starts_path(at - 1);
            let rest = &lower[at + sep.len()..];
            drive_ok && WINDOWS_SYSTEM_DIRS.iter().any(|dir| rest.starts_with(dir))
        });
    unix || windows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_matches_path_suffix_on_key_boundary() {
        let allow = FieldAllowList::default();
        assert!(allow.allows_json_path("text.div"));
        assert!(allow.allows_json_path("contained.text.div"));
        assert!(!allow.allows_json_path("context.div"));
        assert!(!allow.allows_json_path("text.division"));
        assert!(allow.allows_param("text.div"));
        assert!(!allow.allows_param("div"));
    }

    #[test]
    fn form_decoding_is_strict() {
        let allow = FieldAllowList::default();
        assert_eq!(
            scan_form(b"a=100%", &allow),
            Err(MalformedForm::BadPercentEncoding)
        );
        assert_eq!(scan_form(b"a=%ff", &allow), Err(MalformedForm::NotUtf8));
        assert_eq!(scan_form(b"a=1+2&b=c", &allow), Ok(None));
    }

    /// Found by the `body` fuzz target: a finding ended the scan before a malformed pair was
    /// decoded, so in `log` and `off` modes the malformed body was forwarded.
    #[test]
    fn a_malformed_pair_after_a_finding_is_still_refused() {
        let allow = FieldAllowList::default();
        assert_eq!(
            scan_form(b"=%3Cscript&%", &allow),
            Err(MalformedForm::BadPercentEncoding)
        );
        assert_eq!(
            scan_form(b"q=%3Cscript%3Ealert(1)%3C/script%3E&a=%ff", &allow),
            Err(MalformedForm::NotUtf8)
        );
    }

    #[test]
    fn names_values_and_keys_are_reported_with_their_field() {
        let allow = FieldAllowList::default();
        let found = scan_query("ok=1&q=%27%20OR%20%271%27%3D%271", &allow);
        assert_eq!(
            found,
            Some(Finding {
                attack: Attack::SqlInjection,
                field: "query:q".into()
            })
        );
        let found = scan_form(b"%3Cscript%3Ealert(1)%3C/script%3E=x", &allow);
        assert_eq!(
            found.ok().flatten().map(|f| f.attack),
            Some(Attack::CrossSiteScripting)
        );
        let doc = serde_json::json!({"a": [{"b": {"c": "$(whoami)"}}]});
        assert_eq!(
            scan_json(&doc, &allow).map(|f| f.field),
            Some("json:a.b.c".into())
        );
        let doc = serde_json::json!({"a": {"../../etc/passwd": 1}});
        assert_eq!(
            scan_json(&doc, &allow).map(|f| (f.attack, f.field)),
            Some((Attack::PathTraversal, "json:a.../../etc/passwd".into()))
        );
    }

    #[test]
    fn double_encoding_is_decoded_once_more_only() {
        assert_eq!(
            scan_value("..%2f..%2fetc%2fpasswd"),
            Some(Attack::PathTraversal)
        );
        let allow = FieldAllowList::default();
        assert!(scan_query("f=..%252f..%252fetc%252fpasswd", &allow).is_some());
        // A third level is not decoded.
        assert_eq!(scan_value("%25252e%25252e%25252f"), None);
    }

    #[test]
    fn dot_segments() {
        assert!(dot_segment("../x"));
        assert!(dot_segment("a/.."));
        assert!(dot_segment("..\\x"));
        assert!(dot_segment("....//x"));
        assert!(!dot_segment(".."));
        assert!(!dot_segment("wait.../then"));
        assert!(!dot_segment("v1..2/x"));
        assert!(!dot_segment("./x"));
    }

    #[test]
    fn system_paths_but_not_url_paths() {
        assert!(system_path("/etc/passwd"));
        assert!(system_path("file:///etc/shadow"));
        assert!(system_path("C:\\Windows\\win.ini"));
        assert!(system_path("x=c:/boot.ini"));
        assert!(!system_path("https://example.org/etc/passwd"));
        assert!(!system_path("Patient/123/etc/"));
        assert!(!system_path("see c:\\data\\report.pdf"));
    }

    #[test]
    fn plain_tokens_are_spared_and_the_rest_scanned() {
        for plain in ["", "Patient-123_v2.0", "2026-12-01", "final"] {
            assert!(is_plain_token(plain), "{plain}");
            assert_eq!(scan_value(plain), None);
        }
        for not_plain in ["a b", "a'b", "a/b", "a;b", "a<b"] {
            assert!(!is_plain_token(not_plain), "{not_plain}");
        }
        assert_eq!(
            scan_value("<script>alert(1)</script>"),
            Some(Attack::CrossSiteScripting)
        );
    }

    #[test]
    fn decoding_of_escapes_and_pluses() {
        assert_eq!(percent_decode_lenient(b"a%41+b%", true), b"aA b%");
        assert_eq!(percent_decode_lenient(b"a%41+b%4", false), b"aA+b%4");
        assert!(has_percent_escape(b"x%2e"));
        assert!(!has_percent_escape(b"100%"));
        assert!(has_stray_percent(b"%41%"));
        assert!(has_stray_percent(b"%zz"));
        assert!(!has_stray_percent(b"%41%42"));
        assert_eq!(decode_strict(b"a+%C3%A9"), Ok("a \u{e9}".into()));
        assert_eq!(lossy(b"a\xffb".to_vec()), "a\u{fffd}b");
        let pairs: Vec<_> = query_pairs("a&b=c+d&=e&f=%zz").collect();
        let expected = [("a", ""), ("b", "c d"), ("", "e"), ("f", "%zz")];
        assert_eq!(pairs, expected.map(|(n, v)| (n.to_owned(), v.to_owned())));
        let pairs: Vec<_> = form_pairs(b"a&b=c%3D=d").collect();
        assert_eq!(
            pairs,
            [
                Ok(("a".into(), String::new())),
                Ok(("b".into(), "c==d".into()))
            ]
        );
    }

    #[test]
    fn allowed_fields_are_not_scanned_and_names_before_values() {
        let allow = FieldAllowList::new(["note", "a.text.div"]);
        assert_eq!(
            scan_query("note=%3Cscript%3Ealert(1)%3C/script%3E", &allow),
            None
        );
        assert!(scan_query("other=%3Cscript%3Ealert(1)%3C/script%3E", &allow).is_some());
        let both = scan_pair("form", "<script>alert(1)</script>", "1' OR '1'='1", &allow);
        assert_eq!(both.map(|f| f.attack), Some(Attack::CrossSiteScripting));
        let doc = serde_json::json!({"a": {"text": {"div": "<script>alert(1)</script>"}}});
        assert_eq!(scan_json(&doc, &allow), None);
        let doc = serde_json::json!({"b": {"text": {"div": "<script>alert(1)</script>"}}});
        assert_eq!(
            scan_json(&doc, &allow).map(|f| f.field),
            Some("json:b.text.div".into())
        );
        let top = serde_json::json!("<script>alert(1)</script>");
        assert_eq!(
            scan_json(&top, &allow).map(|f| f.field),
            Some("json:$".into())
        );
        let listed = serde_json::json!([1, true, null, ["ok", "$(id)"]]);
        assert_eq!(
            scan_json(&listed, &allow).map(|f| (f.attack, f.field)),
            Some((Attack::CommandInjection, "json:$".into()))
        );
    }

    #[test]
    fn script_urls() {
        for url in [
            "javascript:alert(1)",
            " \t\u{1}JavaScript:alert(1)",
            "java\tscr\nipt:alert(1)",
            "VBScript:MsgBox(1)",
        ] {
            assert!(is_script_url(url), "{url:?}");
        }
        for not in [
            "javascript",
            "javascripts:x",
            "https://example.org/javascript:",
            "x javascript:1",
        ] {
            assert!(!is_script_url(not), "{not:?}");
        }
    }

    #[test]
    fn command_names_and_arguments() {
        for name in [
            "cat", "/bin/cat", "CAT", "cmd.exe", "PING.EXE", "c'a't", "c\\at", "w\"get",
        ] {
            assert!(is_command_name(name), "{name}");
        }
        for name in ["catalog", "bin/", "time", "cat.exe.bak"] {
            assert!(!is_command_name(name), "{name}");
        }
        for argument in [
            "-la", "--help", "-1", "/etc", "\\\\host", "~/x", "$HOME", ".", "\"x", "'x", "`x",
            "http://x", "C:\\x",
        ] {
            assert!(is_shell_argument(argument), "{argument}");
        }
        for word in ["-", "- x", "-.", "word", "12", "ab:c"] {
            assert!(!is_shell_argument(word), "{word}");
        }
        for chained in [
            "a; id > /tmp/o",
            "a; id<x",
            "a|id)",
            "a;{ id; }",
            "a&&ls",
            "a\nid",
            "a\rid",
            "a;\tid\t-a",
        ] {
            assert!(chained_command(chained), "{chained:?}");
        }
        for not in ["a; identity", "a; id card", "a;", "x & y"] {
            assert!(!chained_command(not), "{not:?}");
        }
        for substituted in ["$(id)", "$(  ls)", "`whoami|x`", "x$(cat;", "`id;`"] {
            assert!(substituted_command(substituted), "{substituted}");
        }
        for not in ["$(idx)", "`", "$(", "price $ (id)"] {
            assert!(!substituted_command(not), "{not}");
        }
    }

    #[test]
    fn dot_segments_at_their_edges() {
        for segment in ["../", ".../x", "x/..", "\\..", "a/../b", "(../x"] {
            assert!(dot_segment(segment), "{segment}");
        }
        for not in ["a../x", "_../x", "~../x", "-../x", "x/..b", ". ./", "x/./y"] {
            assert!(!dot_segment(not), "{not}");
        }
    }

    #[test]
    fn system_paths_at_their_edges() {
        for path in [
            "/proc/self/environ",
            "x /root/.ssh/id",
            "(/sys/x",
            "C:/WINNT/x",
            "d:\\inetpub\\x",
            "x=c:/boot.ini",
        ] {
            assert!(system_path(path), "{path}");
        }
        for not in [
            "a.b/etc/x",
            "a-/etc/x",
            "a_/etc/x",
            "~/etc/x",
            ":\\windows",
            "1:/windows",
            "xc:/windows",
            "c:/data/windows",
        ] {
            assert!(!system_path(not), "{not}");
        }
    }

    #[test]
    fn commands_need_operator_and_shell_shape() {
        assert!(is_command_injection("; cat /etc/passwd"));
        assert!(is_command_injection("x && whoami"));
        assert!(is_command_injection("| id"));
        assert!(is_command_injection("a;/bin/ls -la"));
        assert!(is_command_injection("`id`"));
        assert!(is_command_injection("x;(id)"));
        assert!(is_command_injection(";c'a't /etc/hosts"));
        assert!(is_command_injection("$( uname -a)"));
        assert!(!is_command_injection("sleep apnea; sleep study scheduled"));
        assert!(!is_command_injection("hello; time he came"));
        assert!(!is_command_injection("cat /etc/passwd"));
        assert!(!is_command_injection("BP 120/80; HR 72"));
        assert!(!is_command_injection("cost $(estimated)"));
    }
}
