#!/usr/bin/env bash
# `make run`: starts the gateway. With no provider configured (no LAMBDA_BASE_URL, no
# SNOWFLAKE_ACCOUNT and no SOPHIA_CONFIG file), it also starts the local simulated upstream
# (build/mockllm) and points the lambda provider at it, so the gateway can be tried with no keys
# at all. The simulated upstream listens on MOCK_LISTEN when set (and the script stops if that
# address is taken), else on 127.0.0.1:9000, or on a free port when 9000 is taken.
set -euo pipefail
BUILD=${1:-build}
LISTEN=${SOPHIA_LISTEN:-127.0.0.1:8080}
args=(--listen "$LISTEN")
[ -n "${SOPHIA_CONFIG:-}" ] && args+=(--config "$SOPHIA_CONFIG")

mock_pid=""
mock_out=""
cleanup() {
    [ -n "$mock_pid" ] && kill "$mock_pid" 2>/dev/null || true
    [ -n "$mock_out" ] && rm -f "$mock_out"
}
trap cleanup EXIT

# Starts mockllm on $1; sets mock_addr to the address it listens on, or returns 1 (its error
# on stderr). Not run in a subshell: mock_pid must reach cleanup.
mock_addr=""
start_mock() {
    mock_out=$(mktemp)
    "$BUILD"/mockllm --listen "$1" --ttft-ms 150 --itl-ms 20 --tokens 32 \
        --api-key local-mock-key --quiet >"$mock_out" 2>&1 &
    mock_pid=$!
    for _ in $(seq 1 200); do
        local addr
        addr=$(sed -n 's/^mockllm listening on \([^ ]*\).*/\1/p' "$mock_out" | head -n 1)
        if [ -n "$addr" ]; then
            mock_addr=$addr
            return 0
        fi
        if ! kill -0 "$mock_pid" 2>/dev/null; then
            [ "${2:-}" = quiet ] || cat "$mock_out" >&2
            mock_pid=""
            return 1
        fi
        sleep 0.05
    done
    echo "run: the simulated upstream did not start" >&2
    return 1
}

if [ -z "${LAMBDA_BASE_URL:-}" ] && [ -z "${SNOWFLAKE_ACCOUNT:-}" ] && [ -z "${SOPHIA_CONFIG:-}" ]; then
    if [ -n "${MOCK_LISTEN:-}" ]; then
        if ! start_mock "$MOCK_LISTEN"; then
            echo "run: the simulated upstream cannot listen on MOCK_LISTEN=$MOCK_LISTEN (taken?);" \
                "choose another address or unset MOCK_LISTEN" >&2
            exit 1
        fi
    elif ! start_mock 127.0.0.1:9000 quiet; then
        start_mock 127.0.0.1:0 || { echo "run: cannot start the simulated upstream" >&2; exit 1; }
        echo "run: 127.0.0.1:9000 is taken; the simulated upstream uses $mock_addr instead" >&2
    fi
    export LAMBDA_BASE_URL="http://$mock_addr/v1"
    export LAMBDA_API_KEY=local-mock-key
    echo "run: no provider configured; using the simulated upstream at $LAMBDA_BASE_URL" >&2
fi
echo "run: gateway on http://$LISTEN (Ctrl-C to stop)" >&2
"$BUILD"/sophia-gateway "${args[@]}" &
gw_pid=$!
trap 'kill -TERM $gw_pid 2>/dev/null' INT TERM
wait $gw_pid || true
wait $gw_pid 2>/dev/null || true
