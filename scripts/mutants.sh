#!/usr/bin/env bash
# Mutation testing of the modules that carry Wardgate's security rules, with cargo-mutants: each
# mutant (a one-token change such as `==` to `!=`, or a function body replaced by a constant) is
# built and tested; a mutant that every test still passes is MISSED, a hole in the tests. Not part
# of the test run (scripts/test.sh, .ci/run): about 15 s a mutant on two cores, hours in all.
#
#   scripts/mutants.sh [FILE...]        default: every file in SECURITY_FILES below
#
# Per file, two passes, in one output folder $MUTANTS_OUT/<file> (default
# $HOME/.cache/wardgate/mutants):
#   1. every unit test (`cargo test --lib`, seconds a mutant);
#   2. the mutants pass 1 missed or timed out (`--iterate`), against the unit tests and the
#      integration tests but the browser and binary ones (minutes a mutant).
# Then a table of caught, missed, unviable and timeouts per file (pass 1 + pass 2), and every missed
# mutant that scripts/mutants-explained.txt does not explain; exits 1 when there is one.
#
# A file's results are kept: rerun with MUTANTS_FRESH=1 to test it again from the start.
# Needs cargo-mutants (`cargo install cargo-mutants --locked`). Builds in
# $HOME/.cache/wardgate/target-mutants (CARGO_TARGET_DIR), without debug info for the crate.
set -euo pipefail
cd "$(dirname "$0")/.."

SECURITY_FILES=(
    src/proxy.rs                 # identity-header stripping, forwarding rules
    src/auth/login.rs            # login, second factor, re-hash
    src/auth/lockout.rs          # per-account, per-address and second-factor locks
    src/auth/totp.rs             # TOTP codes, replay
    src/auth/webauthn.rs         # WebAuthn checks, sign counter
    src/session/mod.rs           # sessions: idle, absolute, revocation
    src/auth/csrf.rs             # CSRF tokens
    src/auth/return_to.rs        # return targets after login
    src/sanitize/request.rs      # header, path, method and body rules
    src/sanitize/injection.rs    # injection detection
    src/sanitize/framing.rs      # HTTP/1 framing guard
    src/ratelimit.rs             # rate limiter
    src/assertion.rs             # assertion signing and verification
    src/identity/seal.rs         # sealing secrets at rest
)
files=("$@")
[[ ${#files[@]} -gt 0 ]] || files=("${SECURITY_FILES[@]}")

out_root="${MUTANTS_OUT:-$HOME/.cache/wardgate/mutants}"
explained="$PWD/scripts/mutants-explained.txt"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR_MUTANTS:-$HOME/.cache/wardgate/target-mutants}"
common=(
    --baseline skip # the test run is green on main; a baseline would cost a full build per pass
    --build-timeout 900
    --cargo-arg=--config=profile.dev.package.wardgate.debug=0
)

slug() { echo "${1//\//_}"; }
count() { if [[ -f $1 ]]; then grep -c . "$1" || true; else echo 0; fi; }
# A mutant without its line and column, so that explanations survive edits elsewhere in a file.
unplaced() { sed -E 's/^([^:]+):[0-9]+:[0-9]+: /\1: /'; }

for file in "${files[@]}"; do
    out="$out_root/$(slug "$file")"
    [[ ${MUTANTS_FRESH:-0} == 1 ]] && rm -rf "$out"
    if [[ -f $out/done ]]; then
        echo "== $file: kept from an earlier run"
        continue
    fi
    mkdir -p "$out"
    echo "== $file: pass 1, unit tests"
    nice cargo mutants "${common[@]}" -f "$file" -o "$out" --timeout 120 \
        --cargo-test-arg=--lib || true
    rm -rf "$out/pass1" && cp -r "$out/mutants.out" "$out/pass1"
    rm -rf "$out/pass2"
    if [[ $(count "$out/pass1/missed.txt") -gt 0 || $(count "$out/pass1/timeout.txt") -gt 0 ]]; then
        echo "== $file: pass 2, the $(count "$out/pass1/missed.txt") missed against the integration tests too"
        nice cargo mutants "${common[@]}" -f "$file" -o "$out" --iterate --timeout 600 \
            --cargo-test-arg=--lib --cargo-test-arg=--test --cargo-test-arg=integration \
            --cargo-test-arg=-- --cargo-test-arg=--skip --cargo-test-arg=browser:: \
            --cargo-test-arg=--skip --cargo-test-arg=binary:: || true
        cp -r "$out/mutants.out" "$out/pass2"
    fi
    touch "$out/done"
done

printf '\n%-28s %7s %7s %9s %9s\n' file caught missed unviable timeouts
unexplained=()
for file in "${files[@]}"; do
    out="$out_root/$(slug "$file")"
    pass1="$out/pass1" pass2="$out/pass2" final="$out/pass1"
    if [[ ! -f $out/done ]]; then
        printf '%-28s not run\n' "$file"
        continue
    fi
    caught=$(count "$pass1/caught.txt")
    if [[ -d $pass2 ]]; then
        final="$pass2"
        caught=$((caught + $(count "$pass2/caught.txt")))
    fi
    missed=$(count "$final/missed.txt")
    printf '%-28s %7s %7s %9s %9s\n' "$file" "$caught" "$missed" \
        "$(count "$pass1/unviable.txt")" "$(count "$final/timeout.txt")"
    [[ -f $final/missed.txt ]] || continue
    while IFS= read -r mutant; do
        grep -qxF "$mutant" <(grep -v '^#' "$explained" | sed -E 's/ +# .*$//') ||
            unexplained+=("$mutant")
    done < <(unplaced <"$final/missed.txt")
done
if [[ ${#unexplained[@]} -gt 0 ]]; then
    printf '\nmissed and not explained in %s:\n' "${explained#"$PWD"/}"
    printf '  %s\n' "${unexplained[@]}"
    exit 1
fi
