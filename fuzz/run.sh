#!/usr/bin/env bash
# Run fuzz targets one after another, SECONDS each, single process (-jobs=1 equivalent):
#   fuzz/run.sh SECONDS CORPUS_ROOT TARGET...
# New inputs go to CORPUS_ROOT/TARGET (seeds are read from $FUZZ_SEEDS/TARGET when present),
# libFuzzer's output to $FUZZ_LOGS/TARGET.log; one summary line per target is printed, and
# the end of the log when a target fails (its crashing input is under fuzz/artifacts/TARGET/).
# Extra libFuzzer flags: $FUZZ_FLAGS. Exits non-zero if any target failed.
set -uo pipefail
secs=$1 corpus=$2
shift 2
cargo_fuzz=${CARGO_FUZZ:?CARGO_FUZZ must name the cargo-fuzz binary}
seeds=${FUZZ_SEEDS:-build/fuzz/seeds}
logs=${FUZZ_LOGS:-build/fuzz/logs}
mkdir -p "$logs"
failed=()
for t in "$@"; do
    mkdir -p "$corpus/$t"
    dirs=("$corpus/$t")
    if [ -d "$seeds/$t" ]; then dirs+=("$seeds/$t"); fi
    log=$logs/$t.log
    # Whole sessions get inputs past the frame reader's 8 KiB read-ahead, so that frames also
    # arrive split across reads.
    per_target=()
    if [ "$t" = session ]; then per_target=(-max_len=20000); fi
    start=$(date +%s)
    # -timeout: one input taking 30 s is a hang (the session target bounds its own waits at
    # a few seconds). -rss_limit_mb: a leak shows as a failure, not a swapping machine.
    # shellcheck disable=SC2086
    "$cargo_fuzz" fuzz run --fuzz-dir fuzz --sanitizer none "$t" "${dirs[@]}" -- \
        -max_total_time="$secs" -timeout=30 -rss_limit_mb=2048 -print_final_stats=1 \
        "${per_target[@]}" ${FUZZ_FLAGS:-} >"$log" 2>&1
    rc=$?
    took=$(($(date +%s) - start))
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1)
    cov=$(sed -n 's/.* cov: \([0-9]*\) ft: \([0-9]*\) corp: \([^ ]*\) .*/cov \1, ft \2, corpus \3/p' <<<"$done_line")
    if [ "$rc" -eq 0 ]; then
        echo "fuzz: $t: ${runs:-?} runs in ${took}s (${rate:-?}/s), ${cov:-no coverage line}"
    else
        echo "fuzz: $t FAILED (exit $rc) after ${took}s, ${runs:-?} runs; end of $log:" >&2
        tail -n 40 "$log" >&2
        failed+=("$t")
    fi
done
echo "fuzz: $(($# - ${#failed[@]})) passed, ${#failed[@]} failed"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: failed: ${failed[*]} (crashing inputs under fuzz/artifacts/)" >&2
    exit 1
fi
