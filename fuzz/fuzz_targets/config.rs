//! `config::parse` on arbitrary text (seeded with the bundled `gateway.yaml` and the benchmark
//! configs): no panic, every error is a value that renders and names the file; a config that
//! loads builds its route rules.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use wardgate::config;
use wardgate::sanitize::request::RouteRules;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match config::parse(Path::new("fuzz/gateway.yaml"), &text) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                let _ = format!("{warning:?}");
            }
            let sanitize = &loaded.config.sanitize.value;
            for route in &loaded.config.routes.value {
                let _ = RouteRules::new(sanitize, &route.sanitize);
            }
        }
        Err(error) => {
            let shown = error.to_string();
            assert!(
                shown.contains("fuzz/gateway.yaml"),
                "error without the file: {shown}"
            );
            let _ = format!("{error:?}");
        }
    }
});
