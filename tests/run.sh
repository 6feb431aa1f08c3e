#!/usr/bin/env bash
# Runs every test: the cmocka unit tests, then the integration tests (node's test runner
# driving the real binaries with curl and the official openai SDK). Ends with one summary line
# "N passed, N failed". Exit status is 0 only when nothing failed.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
BUILD_ABS=$(cd "$BUILD" && pwd)
passed=0
failed=0
failures=()

# Sockets: the integration tests hold thousands of connections at once.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

echo "== unit tests ($BUILD)"
for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    out=$(CMOCKA_MESSAGE_OUTPUT=TAP "$t" 2>&1)
    rc=$?
    echo "$out"
    p=$(grep -cE '^ok [0-9]+' <<<"$out")
    f=$(grep -cE '^not ok [0-9]+' <<<"$out")
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    passed=$((passed + p))
    failed=$((failed + f))
    [ "$f" -eq 0 ] || failures+=("$(basename "$t")")
done

echo "== integration tests ($BUILD)"
shopt -s nullglob
files=(tests/integration/*.test.mjs)
if [ ${#files[@]} -gt 0 ]; then
    out_file=$(mktemp)
    SOPHIA_BUILD="$BUILD_ABS" node --test --test-reporter=tap --test-concurrency=1 \
        "${files[@]}" 2>&1 | tee "$out_file"
    p=$(grep -E '^# pass [0-9]+' "$out_file" | tail -1 | awk '{print $3}')
    f=$(grep -E '^# fail [0-9]+' "$out_file" | tail -1 | awk '{print $3}')
    if [ -z "$p" ]; then p=0; f=$((${f:-0} + 1)); fi
    passed=$((passed + p))
    failed=$((failed + ${f:-0}))
    [ "${f:-0}" -eq 0 ] || failures+=("integration")
    rm -f "$out_file"
fi

[ ${#failures[@]} -eq 0 ] || echo "failing: ${failures[*]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
