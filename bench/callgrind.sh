#!/usr/bin/env bash
# Instructions per request, the figure that does not drift on a noisy machine: the gateway
# runs under callgrind while bench/reqs (one connection) sends requests to one endpoint; the run is
# made twice (CALLGRIND_WARM then CALLGRIND_WARM + CALLGRIND_N requests) and the difference of
# the two totals, divided by CALLGRIND_N, is what one request costs once the process is up.
#   bench/callgrind.sh [BUILD] [chat|stream|responses|messages|embeddings]...
# Needs valgrind and build/bench/reqs (make bench-tools). CALLGRIND_N (default 2000),
# CALLGRIND_WARM (default 200).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
shift || true
KINDS=("$@")
[ ${#KINDS[@]} -gt 0 ] || KINDS=(chat stream responses messages embeddings)
N=${CALLGRIND_N:-2000}
WARM=${CALLGRIND_WARM:-200}
MOCK_PORT=${BENCH_MOCK_PORT:-19200}
GW_PORT=${BENCH_GW_PORT:-19280}
command -v valgrind >/dev/null || { echo "callgrind: valgrind is not installed" >&2; exit 1; }
[ -x "$BUILD"/bench/reqs ] || make --no-print-directory BUILD="$BUILD" bench-tools >/dev/null
tmp=$(mktemp -d)
mock_pid=""
gw_pid=""
cleanup() {
    [ -n "$gw_pid" ] && kill "$gw_pid" 2>/dev/null || true
    [ -n "$mock_pid" ] && kill "$mock_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
"$BUILD"/mockllm --listen 127.0.0.1:$MOCK_PORT --tokens 16 --quiet >/dev/null &
mock_pid=$!

body_for() {
    case $1 in
    chat) echo '{"model":"lambda/llama3.1-8b-instruct","messages":[{"role":"user","content":"Say hello"}]}' ;;
    stream) echo '{"model":"lambda/llama3.1-8b-instruct","stream":true,"messages":[{"role":"user","content":"Say hello"}]}' ;;
    responses) echo '{"model":"lambda/llama3.1-8b-instruct","input":"Say hello","store":false}' ;;
    messages) echo '{"model":"lambda/llama3.1-8b-instruct","max_tokens":64,"messages":[{"role":"user","content":"Say hello"}]}' ;;
    embeddings) echo '{"model":"lambda/bge-m3","input":"Say hello"}' ;;
    *) echo "callgrind: unknown kind $1" >&2; exit 1 ;;
    esac
}
path_for() {
    case $1 in
    chat | stream) echo /v1/chat/completions ;;
    responses) echo /v1/responses ;;
    messages) echo /v1/messages ;;
    embeddings) echo /v1/embeddings ;;
    esac
}

# Total instructions of a gateway run that served $2 requests of kind $1.
run_one() {
    local kind=$1 count=$2 out=$tmp/cg.$1.$2 bin
    bin=$(cd "$BUILD" && pwd)/sophia-gateway
    # In the scratch directory: its ledger (sophia.db, written by its own thread and counted
    # here like everything else the process does) goes away with it.
    (cd "$tmp" && LAMBDA_BASE_URL=http://127.0.0.1:$MOCK_PORT/v1 SOPHIA_LOG_LEVEL=warn \
        exec valgrind --tool=callgrind --callgrind-out-file="$out" \
        "$bin" --listen 127.0.0.1:$GW_PORT 2>"$tmp/gw.log") &
    gw_pid=$!
    for _ in $(seq 1 400); do
        curl -s -o /dev/null "http://127.0.0.1:$GW_PORT/healthz" && break
        sleep 0.05
    done
    "$BUILD"/bench/reqs $GW_PORT "$count" "$(path_for "$kind")" "$(body_for "$kind")" >/dev/null ||
        echo "callgrind: some $kind requests failed" >&2
    kill -TERM "$gw_pid"
    wait "$gw_pid" 2>/dev/null || true
    gw_pid=""
    grep -E '^(summary|totals):' "$out" | head -n 1 | awk '{print $2}'
}

printf '%-12s %14s\n' "endpoint" "instr/request"
for kind in "${KINDS[@]}"; do
    a=$(run_one "$kind" "$WARM")
    b=$(run_one "$kind" $((WARM + N)))
    printf '%-12s %14d\n' "$kind" $(((b - a) / N))
done
