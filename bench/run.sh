#!/usr/bin/env bash
# Gateway overhead benchmark: the same wrk load against the mock upstream directly and through
# the gateway, in one run, so the figures are ratios on this machine rather than absolute
# times. Prints a table of requests/s and p50/p99 latency, and the latency the gateway adds.
#   BENCH_SECONDS (default 10), BENCH_CONNS (default 50), BENCH_TOKENS (default 16)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
SECS=${BENCH_SECONDS:-10}
CONNS=${BENCH_CONNS:-50}
TOKENS=${BENCH_TOKENS:-16}
MOCK_PORT=${BENCH_MOCK_PORT:-19100}
GW_PORT=${BENCH_GW_PORT:-19180}
ulimit -n 65536 2>/dev/null || true

cleanup() { kill "$gw_pid" "$mock_pid" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT
"$BUILD"/mockllm --listen 127.0.0.1:$MOCK_PORT --tokens "$TOKENS" --quiet >/dev/null &
mock_pid=$!
LAMBDA_BASE_URL=http://127.0.0.1:$MOCK_PORT/v1 LAMBDA_API_KEY=bench-upstream-key \
    SOPHIA_LOG_LEVEL=warn "$BUILD"/sophia-gateway --listen 127.0.0.1:$GW_PORT 2>/tmp/sg-bench-gw.log &
gw_pid=$!
for port in $MOCK_PORT $GW_PORT; do
    for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 0.1; done
done

# wrk runs 1 thread: on 2 cores the load generator, the gateway and the mock share the CPU.
run_wrk() { # url stream
    BENCH_STREAM=$2 wrk -t1 -c"$CONNS" -d"${SECS}s" --timeout 10s -s bench/chat.lua "$1" |
        grep '^RESULT' | sed 's/^RESULT //'
}
field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }

printf '\nSophia Gateway overhead: wrk -t1 -c%s -d%ss, %s tokens per answer, %s cores\n\n' \
    "$CONNS" "$SECS" "$TOKENS" "$(nproc)"
printf '%-28s %10s %10s %10s %10s %8s\n' target req/s p50_us p90_us p99_us errors
for mode in 0 1; do
    name=$([ $mode = 1 ] && echo stream || echo non-stream)
    direct=$(run_wrk "http://127.0.0.1:$MOCK_PORT/v1/chat/completions" $mode)
    via=$(run_wrk "http://127.0.0.1:$GW_PORT/v1/chat/completions" $mode)
    for row in "direct-to-mock ($name)|$direct" "via gateway ($name)|$via"; do
        r=${row#*|}
        printf '%-28s %10s %10s %10s %10s %8s\n' "${row%%|*}" "$(field "$r" rps)" \
            "$(field "$r" p50_us)" "$(field "$r" p90_us)" "$(field "$r" p99_us)" "$(field "$r" errors)"
    done
    printf '%-28s %10s %10s %10s %10s\n' "  added by gateway" \
        "$(awk -v a="$(field "$via" rps)" -v b="$(field "$direct" rps)" 'BEGIN{printf "%.0f%%", 100*a/b}')" \
        "$(( $(field "$via" p50_us) - $(field "$direct" p50_us) ))" \
        "$(( $(field "$via" p90_us) - $(field "$direct" p90_us) ))" \
        "$(( $(field "$via" p99_us) - $(field "$direct" p99_us) ))"
done
echo
