#!/usr/bin/env bash
# `make test`: builds and runs the whole suite on the normal build and on the ASan+UBSan build,
# then prints one summary line "N passed, N failed" over both.
set -uo pipefail
cd "$(dirname "$0")/.."
total_p=0
total_f=0
status=0
for variant in "build 0" "build-asan 1"; do
    set -- $variant
    echo "=== suite on $1 (sanitizers: $2)"
    if ! make --no-print-directory BUILD="$1" SAN="$2" all unit-bins; then
        echo "build of $1 failed"
        total_f=$((total_f + 1))
        status=1
        continue
    fi
    out=$(mktemp)
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0} \
    UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
        SOPHIA_SANITIZED="$2" tests/run.sh "$1" | tee "$out"
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out" | tail -1)
    rm -f "$out"
    p=${line%% passed*}
    f=${line#*, }
    f=${f%% failed*}
    total_p=$((total_p + ${p:-0}))
    total_f=$((total_f + ${f:-1}))
done
echo "$total_p passed, $total_f failed"
exit $status
