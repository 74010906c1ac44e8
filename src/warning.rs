//! A weak-but-allowed setting, worth an operator's attention: `check-config` prints each one,
//! `run` logs each at start. The modules that own a setting say what is weak about it.

/// One warning, a sentence an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning(pub String);

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
