//! Injection detection measured against corpora nobody on this project wrote: the OWASP CRS
//! regression tests (attacks and near misses; half of the rules' tests, from the CRS
//! repository's `tests/regression/tests`) and the HL7 FHIR R4 examples (benign clinical data),
//! as laid out in `../shared/corpora` (its README says where each came from).
//!
//! ```sh
//! cargo bench --bench corpora                 # reads ../shared/corpora
//! cargo bench --bench corpora -- /path/to/corpora
//! WG_INJ_SHOW=1 cargo bench --bench corpora   # also lists every stage judged wrongly
//! ```
//!
//! It prints a table per CRS family and exits non-zero when a family falls under its floor or a
//! FHIR example is flagged. Under `cargo test` it only says how to run it: the test suite never
//! reads outside the repository.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::Value;
use wardgate::sanitize::injection::{FieldAllowList, scan_form, scan_json, scan_query, scan_value};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this without it.
    if !args.iter().any(|a| a == "--bench") {
        println!("corpora: a measurement, not a test; run `cargo bench --bench corpora`");
        return ExitCode::SUCCESS;
    }
    let corpora = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpora"));
    println!("corpora: {}", corpora.display());
    let crs = crs_regression_corpus_detection_and_pass_rates(&corpora);
    let fhir = fhir_examples_pass_with_the_default_allow_list(&corpora);
    if crs && fhir {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// OWASP CRS regression tests

#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The injection scanner found an attack.
    Detected,
    /// The form body does not decode; the gateway refuses it before any scanning.
    Malformed,
    Passed,
}

/// Judges a stage as the gateway would: the query string, then the body by its content type.
fn judge(uri: &str, content_type: &str, body: &str) -> Verdict {
    let allow = FieldAllowList::default();
    let query = uri.split_once('?').map_or("", |(_, query)| query);
    if scan_query(query, &allow).is_some() {
        return Verdict::Detected;
    }
    if body.is_empty() {
        return Verdict::Passed;
    }
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let found = if media.is_empty() || media == "application/x-www-form-urlencoded" {
        match scan_form(body.as_bytes(), &allow) {
            Ok(found) => found.is_some(),
            Err(_) => return Verdict::Malformed,
        }
    } else if media.ends_with("json") {
        match serde_json::from_str::<Value>(body) {
            Ok(doc) => scan_json(&doc, &allow).is_some(),
            // Not JSON after all: judged as an opaque body.
            Err(_) => scan_value(body).is_some(),
        }
    } else {
        scan_value(body).is_some()
    };
    if found {
        Verdict::Detected
    } else {
        Verdict::Passed
    }
}

#[derive(Default)]
struct Tally {
    attacks: usize,
    caught: usize,
    attacks_malformed: usize,
    attacks_out_of_scope: usize,
    benign: usize,
    passed: usize,
    benign_malformed: usize,
    benign_out_of_scope: usize,
    skipped: usize,
}

impl Tally {
    fn detection(&self) -> f64 {
        percent(self.caught, self.attacks)
    }
    fn pass_rate(&self) -> f64 {
        percent(self.passed, self.benign)
    }
}

fn percent(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        100.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

fn header<'a>(input: &'a Value, name: &str) -> &'a str {
    input["headers"]
        .as_object()
        .and_then(|headers| {
            headers
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
        })
        .and_then(|(_, value)| value.as_str())
        .unwrap_or("")
}

fn tally_family(dir: &Path, tally: &mut Tally, unreadable: &mut Vec<String>) {
    let mut files = Vec::new();
    files_under(dir, &mut files);
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "yaml"))
    {
        let text = std::fs::read_to_string(file).unwrap();
        let Ok(doc) = serde_saphyr::from_str::<Value>(&text) else {
            unreadable.push(file.display().to_string());
            continue;
        };
        let stages = doc["tests"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|test| test["stages"].as_array().into_iter().flatten());
        for stage in stages {
            let input = &stage["input"];
            let log = &stage["output"]["log"];
            let is_attack = log["expect_ids"]
                .as_array()
                .is_some_and(|ids| !ids.is_empty());
            let is_benign = !is_attack && log.get("no_expect_ids").is_some();
            if !is_attack && !is_benign {
                continue;
            }
            if input.get("encoded_request").is_some() {
                tally.skipped += 1;
                continue;
            }
            let uri = input["uri"].as_str().unwrap_or("");
            let body = input["data"].as_str().unwrap_or("");
            // The payload is in the path or a header: not what value scanning is for.
            let in_scope = uri.contains('?') || !body.is_empty();
            let verdict = in_scope.then(|| judge(uri, header(input, "content-type"), body));
            match (is_attack, verdict) {
                (true, None) => tally.attacks_out_of_scope += 1,
                (false, None) => tally.benign_out_of_scope += 1,
                (true, Some(verdict)) => {
                    tally.attacks += 1;
                    match verdict {
                        Verdict::Detected => tally.caught += 1,
                        Verdict::Malformed => tally.attacks_malformed += 1,
                        Verdict::Passed => show("missed", file, uri, body),
                    }
                }
                (false, Some(verdict)) => {
                    tally.benign += 1;
                    match verdict {
                        Verdict::Passed => tally.passed += 1,
                        Verdict::Malformed => tally.benign_malformed += 1,
                        Verdict::Detected => show("refused", file, uri, body),
                    }
                }
            }
        }
    }
}

/// `WG_INJ_SHOW=1` lists the stages judged wrongly, to study misses without tuning to them.
fn show(what: &str, file: &Path, uri: &str, body: &str) {
    if std::env::var_os("WG_INJ_SHOW").is_some() {
        let name = file.file_stem().unwrap_or_default().to_string_lossy();
        println!("{what} {name}: {uri:.160} {body:.160}");
    }
}

/// Detection floors, a few points under what was measured, so a regression fails the bench.
/// (family prefix, minimum detection %, minimum benign pass %)
const FLOORS: &[(&str, f64, f64)] = &[
    ("930", 75.0, 0.0),
    ("932", 15.0, 80.0),
    ("933", 10.0, 80.0),
    ("934", 4.0, 90.0),
    ("941", 40.0, 95.0),
    ("942", 20.0, 85.0),
    ("944", 18.0, 0.0),
];

/// Returns false when a family is under its floor.
fn crs_regression_corpus_detection_and_pass_rates(corpora: &Path) -> bool {
    let root = corpora.join("crs-dev");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_dir())
        .collect();
    dirs.sort();
    let mut tallies = BTreeMap::new();
    let mut unreadable = Vec::new();
    for (family, _, _) in FLOORS {
        let dir = dirs
            .iter()
            .find(|dir| {
                dir.file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(|name| name.starts_with(&format!("REQUEST-{family}-")))
            })
            .unwrap_or_else(|| panic!("no CRS directory for family {family}"));
        let mut tally = Tally::default();
        tally_family(dir, &mut tally, &mut unreadable);
        tallies.insert(*family, (dir.file_name().unwrap().to_owned(), tally));
    }

    println!(
        "\n{:<42} {:>15} {:>10} {:>15} {:>10} {:>9}",
        "CRS family", "attacks caught", "malformed", "benign passed", "malformed", "skipped"
    );
    for (name, tally) in tallies.values() {
        println!(
            "{:<42} {:>4}/{:<4} {:>4.0}% {:>10} {:>4}/{:<4} {:>4.0}% {:>10} {:>9}",
            name.to_string_lossy(),
            tally.caught,
            tally.attacks,
            tally.detection(),
            tally.attacks_malformed,
            tally.passed,
            tally.benign,
            tally.pass_rate(),
            tally.benign_malformed,
            format!(
                "{}+{}+{}",
                tally.attacks_out_of_scope, tally.benign_out_of_scope, tally.skipped
            ),
        );
    }
    println!(
        "skipped = attack + benign stages whose payload is only in the path or headers \
         + stages given as a raw encoded request; unreadable files: {unreadable:?}"
    );

    let mut within = true;
    for (family, min_detection, min_pass) in FLOORS {
        let (_, tally) = &tallies[family];
        if tally.detection() < *min_detection {
            println!(
                "{family}: detection {:.1}% under the floor {min_detection}%",
                tally.detection()
            );
            within = false;
        }
        if tally.pass_rate() < *min_pass {
            println!(
                "{family}: benign pass rate {:.1}% under the floor {min_pass}%",
                tally.pass_rate()
            );
            within = false;
        }
    }
    within
}

// ---------------------------------------------------------------------------------------------
// FHIR R4 examples

/// Returns false when a benign FHIR example was flagged.
fn fhir_examples_pass_with_the_default_allow_list(corpora: &Path) -> bool {
    let mut files = Vec::new();
    files_under(&corpora.join("fhir-r4"), &mut files);
    let allow = FieldAllowList::default();
    let (mut json_files, mut json_findings) = (0, Vec::new());
    let (mut xml_files, mut xml_tripped) = (0, 0);
    for file in &files {
        match file.extension().and_then(|e| e.to_str()) {
            Some("json") => {
                json_files += 1;
                let doc: Value = serde_json::from_slice(&std::fs::read(file).unwrap())
                    .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                if let Some(finding) = scan_json(&doc, &allow) {
                    json_findings.push(format!("{}: {finding:?}", file.display()));
                }
            }
            Some("xml") => {
                xml_files += 1;
                // Raw XML is markup by nature; this only says how many a content-type rule
                // must route around the value scanner.
                let text = std::fs::read_to_string(file).unwrap();
                xml_tripped += usize::from(scan_value(&text).is_some());
            }
            _ => {}
        }
    }
    println!(
        "\nFHIR R4 JSON: {} findings in {json_files} files (scan_json, allow list text.div)",
        json_findings.len()
    );
    println!(
        "FHIR R4 XML: {xml_tripped} of {xml_files} raw documents trip scan_value (not a gateway path)"
    );
    assert!(json_files >= 100, "FHIR corpus not found or too small");
    if !json_findings.is_empty() {
        println!("false positives: {json_findings:#?}");
    }
    json_findings.is_empty()
}
