#!/usr/bin/env bash
# Mutation testing of the modules that carry Wardgate's security rules, with cargo-mutants: each
# mutant (a one-token change such as `==` to `!=`, or a function body replaced by a constant) is
# built and tested; a mutant that every test still passes is MISSED, a hole in the tests. Not part
# of the test run (scripts/test.sh, .ci/run): about 15 s a mutant on two cores, hours in all.
#
#   scripts/mutants.sh [FILE...]        default: every file in SECURITY_FILES below
#
# Per file, up to three passes, in one output folder $MUTANTS_OUT/<file> (default
# $HOME/.cache/wardgate/mutants); passes 1 and 2 only for a file with unit tests of its own:
#   1. every mutant against the unit tests (`cargo test --lib`, about 10 s a mutant);
#   2. the mutants pass 1 missed, picked by description, against the unit tests as they are
#      now: the tests written for pass 1's misses meanwhile;
#   3. the mutants still missed (every mutant, for a file without unit tests) against the unit
#      tests, the limiter-memory test and the integration tests but the browser and binary ones
#      (about 30 s a mutant); in a recheck (below), against every integration test, Chromium's
#      included (scripts/browser-deps.sh).
# Then a table per file: every mutant, and how many were caught, missed, unviable (did not build)
# and timed out (a mutant that hangs the unit tests is caught by them: it is not tested again),
# first as the first run found them and now; and every missed mutant that
# scripts/mutants-explained.txt does not explain. Exits 1 when there is one.
#
# A file's results are kept. MUTANTS_RECHECK=1 tests its missed mutants again (pass 3 only),
# after tests were added; MUTANTS_FRESH=1 starts the file over.
# Needs cargo-mutants (`cargo install cargo-mutants --locked`) and python3. Builds in
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
    src/policy/mod.rs            # access policy: roles, categories, decision
    src/policy/grants.rs         # access grants, approvals, break-glass reviews
    src/access.rs                # the request, approval and break-glass workflows
    src/policy/fhir.rs           # FHIR requests and answers: patient, categories, filtering
    src/pipeline/authorize.rs    # the decision per request and per FHIR answer
    src/audit/trail.rs           # the audit trail: chain, tree, checkpoints, verify
    src/audit/merkle.rs          # RFC 6962 hashing and inclusion proofs
    src/audit/sink.rs            # durable before forwarding, no record lost, retention
    src/audit/postgres.rs        # one chain across replicas: the head lock, retention, reads
    src/sanitize/framing.rs      # HTTP/1 framing guard
    src/ratelimit.rs             # rate limiter
    src/assertion.rs             # assertion signing and verification
    src/identity/seal.rs         # sealing secrets at rest
    src/store/redis/limiter.rs   # rate limits shared by the replicas, the public stand-in
    src/store/redis/lockouts.rs  # lockouts shared by the replicas
    src/store/redis/sessions.rs  # sessions in Redis, the revocation feed
    src/store/postgres/keys.rs   # the shared assertion key and admin token
    src/store/reachable.rs       # a shared store that stopped answering
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

# Filters that select the mutants listed in the files given (missed.txt, timeout.txt) by their
# description: a test added to the file since moves them to other lines.
listed() {
    cat "$@" 2>/dev/null | unplaced | python3 -c '
import re, sys
for line in sys.stdin:
    file, description = line.rstrip("\n").split(": ", 1)
    print("--re=^%s:[0-9]+:[0-9]+: %s$" % (re.escape(file), re.escape(description)))
'
}

for file in "${files[@]}"; do
    out="$out_root/$(slug "$file")"
    [[ ${MUTANTS_FRESH:-0} == 1 ]] && rm -rf "$out"
    # Without unit tests of its own, the file's mutants are tested by the integration tests alone.
    unit=()
    # Given to both the build and the test: built is only what runs (not the binary, the benches).
    grep -q '#\[cfg(test)\]' "$file" && unit=(--cargo-arg=--lib)
    tree="$(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ' with changes')"
    skip=(--cargo-test-arg=-- --cargo-test-arg=--skip --cargo-test-arg=browser::
        --cargo-test-arg=--skip --cargo-test-arg=binary::)
    if [[ -f $out/done ]]; then
        if [[ ${MUTANTS_RECHECK:-0} != 1 || $(count "$out/mutants.out/missed.txt") == 0 ]]; then
            echo "== $file: kept from an earlier run"
            continue
        fi
        mapfile -t again < <(listed "$out/mutants.out/missed.txt" "$out/mutants.out/timeout.txt")
        skip=()
    else
        mkdir -p "$out"
        [[ -f $out/all ]] || cargo mutants --list -f "$file" | grep -c . >"$out/all"
        # A pass 1 that was interrupted starts over; one that ended is kept.
        if [[ ${#unit[@]} -gt 0 && ! -d $out/pass1 ]]; then
            echo "== $file: pass 1, unit tests, at $tree"
            status=0
            nice cargo mutants "${common[@]}" -f "$file" -o "$out" --timeout 120 \
                "${unit[@]}" || status=$?
            # 0: all caught, 2: some missed, 3: some timed out; anything else did not finish.
            [[ $status =~ ^[023]$ ]] || exit "$status"
            cp -r "$out/mutants.out" "$out/pass1"
        fi
        again=()
        if [[ ${#unit[@]} -gt 0 ]]; then
            last=pass1
            mapfile -t again < <(listed "$out/pass1/missed.txt")
            if [[ ${#again[@]} -gt 0 && ! -d $out/pass2 ]]; then
                echo "== $file: pass 2, ${#again[@]} mutants, unit tests, at $tree"
                status=0
                nice cargo mutants "${common[@]}" -f "$file" -o "$out" "${again[@]}" \
                    --timeout 120 "${unit[@]}" || status=$?
                [[ $status =~ ^[023]$ ]] || exit "$status"
                cp -r "$out/mutants.out" "$out/pass2"
            fi
            [[ -d $out/pass2 ]] && last=pass2 && mapfile -t again < <(listed "$out/pass2/missed.txt")
            # Nothing for pass 3: the last pass's results are the file's (not a pass 3 cut short).
            [[ ${#again[@]} -gt 0 ]] || { rm -rf "$out/mutants.out" && cp -r "$out/$last" "$out/mutants.out"; }
        fi
    fi
    if [[ ${#unit[@]} -eq 0 || ${#again[@]} -gt 0 ]]; then
        echo "== $file: pass 3, ${#again[@]} mutants (0: all), against the integration tests too, at $tree"
        nice cargo mutants "${common[@]}" -f "$file" -o "$out" "${again[@]}" --timeout 600 \
            "${unit[@]}" --cargo-arg=--test=integration --cargo-arg=--test=limiter_memory \
            "${skip[@]}" || true
    fi
    [[ -d $out/first ]] || cp -r "$out/mutants.out" "$out/first"
    touch "$out/done"
done

# Counts in a results folder, out of every mutant of the file (`$out/all`): caught missed
# unviable timeouts. Unviable mutants are found once, by the first pass that met them.
counts() {
    local all missed unviable timeouts
    all=$(cat "$out/all")
    missed=$(count "$1/missed.txt") timeouts=$(count "$1/timeout.txt")
    # A later pass's folder lists none of an earlier pass's timeouts: they were not tested again.
    local pass
    for pass in pass1 pass2; do
        if [[ -d $out/$pass ]] && ! cmp -s "$1/outcomes.json" "$out/$pass/outcomes.json"; then
            timeouts=$((timeouts + $(count "$out/$pass/timeout.txt")))
        fi
    done
    unviable=$(count "$out/pass1/unviable.txt")
    [[ -d $out/pass1 ]] || unviable=$(count "$out/first/unviable.txt")
    echo "$((all - missed - unviable - timeouts)) $missed $unviable $timeouts"
}
printf '\n%-28s %5s | %-25s | %-25s\n' "" "" "first run" "now"
printf '%-28s %5s | %6s %6s %6s %5s | %6s %6s %6s %5s\n' file all \
    caught missed unviab. t/out caught missed unviab. t/out
unexplained=()
for file in "${files[@]}"; do
    out="$out_root/$(slug "$file")"
    if [[ ! -f $out/done ]]; then
        printf '%-28s not run\n' "$file"
        continue
    fi
    # shellcheck disable=SC2046
    printf '%-28s %5s | %6s %6s %6s %5s | %6s %6s %6s %5s\n' "$file" \
        "$(cat "$out/all")" $(counts "$out/first") $(counts "$out/mutants.out")
    while IFS= read -r mutant; do
        grep -qxF "$mutant" <(grep -v '^#' "$explained" | sed -E 's/ +# .*$//') ||
            unexplained+=("$mutant")
    done < <(unplaced <"$out/mutants.out/missed.txt" 2>/dev/null || true)
done
if [[ ${#unexplained[@]} -gt 0 ]]; then
    printf '\nmissed and not explained in %s:\n' "${explained#"$PWD"/}"
    printf '  %s\n' "${unexplained[@]}"
    exit 1
fi
