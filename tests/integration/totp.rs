//! TOTP against an independent generator: codes from `oathtool` (OATH Toolkit) are accepted at
//! their time and refused two steps later. `oathtool` is required, not optional: `scripts/test.sh`
//! installs it, and a missing tool fails the test rather than skipping it.

use std::process::Command;
use std::time::Duration;

use wardgate::auth::totp::{Digits, PendingTotp, TotpAlgorithm, TotpConfig, TotpError};
use wardgate::config::HumanDuration;

/// Times from the first minutes of the epoch (the activation code) to the RFC 6238 vectors' far
/// future; increasing, so that each accepted code raises `last_used_step`.
const TIMES: [u64; 6] = [
    89,
    1_111_111_109,
    1_234_567_890,
    1_700_000_000,
    2_000_000_000,
    20_000_000_000,
];

fn oathtool(mode: &str, digits: u8, period: u64, secret: &str, time: u64) -> String {
    let output = Command::new("oathtool")
        .arg(format!("--totp={mode}"))
        .arg(format!("--digits={digits}"))
        .arg(format!("--time-step-size={period}s"))
        .arg("--base32")
        .arg(format!("--now=@{time}"))
        .arg(secret)
        .output()
        .expect("oathtool is required (apt-get install -y oathtool; scripts/test.sh does it)");
    assert!(
        output.status.success(),
        "oathtool failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn check_against_oathtool(algorithm: TotpAlgorithm, mode: &str, digits: Digits, period: u64) {
    let config = TotpConfig {
        algorithm,
        digits,
        period: HumanDuration(Duration::from_secs(period)),
        ..TotpConfig::default()
    };
    let pending = PendingTotp::new(&config, "alice@clinic.example", &mut rand::rng()).unwrap();
    let secret = pending.secret_base32();
    let code = |time| oathtool(mode, digits.into(), period, &secret, time);

    let (active, mut last_used_step) = pending.activate(&code(TIMES[0]), TIMES[0]).unwrap();
    assert_eq!(last_used_step, TIMES[0] / period);
    for time in TIMES.into_iter().skip(1) {
        let code = code(time);
        let context = format!("{mode} {digits:?} {period}s at {time}: {code}");
        // One step of drift either way.
        assert!(active.verify(&code, 0, time - period).is_ok(), "{context}");
        assert!(active.verify(&code, 0, time + period).is_ok(), "{context}");
        // Two steps off: refused.
        for off in [time - 2 * period, time + 2 * period] {
            assert_eq!(
                active.verify(&code, 0, off),
                Err(TotpError::WrongCode),
                "{context}, checked at {off}"
            );
        }
        // At its time: accepted once.
        let step = active.verify(&code, last_used_step, time).unwrap();
        assert_eq!(step, time / period, "{context}");
        assert_eq!(
            active.verify(&code, step, time),
            Err(TotpError::Replayed),
            "{context}"
        );
        last_used_step = step;
    }
}

#[test]
fn sha1_six_digits_thirty_seconds_matches_oathtool() {
    check_against_oathtool(TotpAlgorithm::Sha1, "SHA1", Digits::Six, 30);
}

#[test]
fn sha256_eight_digits_matches_oathtool() {
    check_against_oathtool(TotpAlgorithm::Sha256, "SHA256", Digits::Eight, 30);
}

#[test]
fn sha512_sixty_seconds_matches_oathtool() {
    check_against_oathtool(TotpAlgorithm::Sha512, "SHA512", Digits::Six, 60);
}
