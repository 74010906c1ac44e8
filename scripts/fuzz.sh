#!/usr/bin/env bash
# Builds the cargo-fuzz targets under fuzz/ and runs each for a bounded time, one at a time, on
# one core at the lowest priority. Not part of the test run (scripts/test.sh, .ci/run).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     default: 60 s, every target
#
# Seeds come from fuzz/seeds/TARGET (and, for `config`, every YAML config in the repo); new
# inputs go to fuzz/corpus/TARGET, crashes to fuzz/artifacts/TARGET, the log of each run to
# fuzz/artifacts/TARGET.log (all three ignored by git). Prints, per target, the runs executed,
# the final coverage (`cov`, edges) and features (`ft`), and the artifacts written by this run;
# exits 1 when any target wrote a crash, timeout, leak or out-of-memory artifact.
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). It asks for nightly-only flags;
# RUSTC_BOOTSTRAP=1 lets the stable toolchain take them. FUZZ_SANITIZER (default `none`):
# Wardgate forbids `unsafe`, and its parsing dependencies (serde-saphyr, libinjectionrs,
# serde_json, httparse's safe paths) are checked by panics and debug assertions, which stay on
# (`-a`); `address` finds memory errors in any unsafe code at about half the speed.
#
# Reproduce or shrink a crash:
#   cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -s none -a TARGET artifacts/TARGET/crash-…
#   cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz tmin -s none -a TARGET artifacts/TARGET/crash-…
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${1:-60}"
shift || true
all_targets=(framing framing_httparse path body headers config)
if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    targets=("${all_targets[@]}")
fi

# Its own build directory: fuzz builds use other flags, and must not churn the test build.
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/wardgate/target-fuzz}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export RUSTC_BOOTSTRAP=1
sanitizer="${FUZZ_SANITIZER:-none}"
build_flags=(--sanitizer "$sanitizer" --debug-assertions)

if ! command -v cargo-fuzz >/dev/null; then
    echo "cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2
    exit 2
fi

echo "== building ${targets[*]} (sanitizer $sanitizer, debug assertions on)"
for target in "${targets[@]}"; do
    nice -n 19 cargo fuzz build "${build_flags[@]}" "$target"
done

# The bundled configs are the config target's seeds: copied fresh, so edits to them count.
mkdir -p corpus/config
git ls-files -z -- '../*.yaml' '../*.yml' | while IFS= read -r -d '' config; do
    cp "$config" "corpus/config/seed-$(basename "$config")"
done

artifact_count() {
    find "artifacts/$1" -type f 2>/dev/null | wc -l
}

summary=()
failed=0
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "artifacts/$target"
    log="artifacts/$target.log"
    before=$(artifact_count "$target")
    seeds=()
    [[ -d "seeds/$target" ]] && seeds=("seeds/$target")
    options=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
    [[ -f "dicts/$target.dict" ]] && options+=(-dict="dicts/$target.dict")
    echo "== $target: $seconds s"
    status=0
    nice -n 19 cargo fuzz run "${build_flags[@]}" "$target" "corpus/$target" "${seeds[@]}" \
        -- "${options[@]}" >"$log" 2>&1 || status=$?
    # The last status line (`#N ... cov: C ft: F corp: ...`) and the final stats.
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
    runs=$(grep -oE 'stat::number_of_executed_units: [0-9]+' "$log" | grep -oE '[0-9]+$' || true)
    [[ -z "$runs" ]] && runs=$(grep -oE '^#[0-9]+' <<<"$last" | tr -d '#' || true)
    cov=$(grep -oE 'cov: [0-9]+' <<<"$last" | grep -oE '[0-9]+' || true)
    ft=$(grep -oE 'ft: [0-9]+' <<<"$last" | grep -oE '[0-9]+' || true)
    new=$(($(artifact_count "$target") - before))
    if ((new > 0 || status != 0)); then
        failed=1
        grep -E 'panicked at|Test unit written to|ERROR: libFuzzer|SUMMARY' "$log" | head -n 8 || true
    fi
    summary+=("$(printf '%-18s %6ss %12s %8s %8s %10s' "$target" "$seconds" "${runs:-?}" \
        "${cov:-?}" "${ft:-?}" "$new")")
done

echo
printf '%-18s %7s %12s %8s %8s %10s\n' target time runs cov ft artifacts
printf '%s\n' "${summary[@]}"
if ((failed)); then
    echo "fuzzing found problems: see fuzz/artifacts/" >&2
    exit 1
fi
