#!/usr/bin/env bash
# `make run`: starts the gateway. With no provider configured (no LAMBDA_BASE_URL and no
# SOPHIA_CONFIG file), it also starts the local simulated upstream (build/mockllm) and points
# the lambda provider at it, so the gateway can be tried with no keys at all.
set -euo pipefail
BUILD=${1:-build}
LISTEN=${SOPHIA_LISTEN:-127.0.0.1:8080}
args=(--listen "$LISTEN")
[ -n "${SOPHIA_CONFIG:-}" ] && args+=(--config "$SOPHIA_CONFIG")

mock_pid=""
cleanup() { [ -n "$mock_pid" ] && kill "$mock_pid" 2>/dev/null || true; }
trap cleanup EXIT

if [ -z "${LAMBDA_BASE_URL:-}" ] && [ -z "${SOPHIA_CONFIG:-}" ]; then
    MOCK_LISTEN=${MOCK_LISTEN:-127.0.0.1:9000}
    "$BUILD"/mockllm --listen "$MOCK_LISTEN" --ttft-ms 150 --itl-ms 20 --tokens 32 \
        --api-key local-mock-key --quiet &
    mock_pid=$!
    export LAMBDA_BASE_URL="http://$MOCK_LISTEN/v1"
    export LAMBDA_API_KEY=local-mock-key
    echo "run: no provider keys set; using the simulated upstream at $LAMBDA_BASE_URL" >&2
fi
echo "run: gateway on http://$LISTEN (Ctrl-C to stop)" >&2
"$BUILD"/sophia-gateway "${args[@]}" &
gw_pid=$!
trap 'kill -TERM $gw_pid 2>/dev/null' INT TERM
wait $gw_pid || true
wait $gw_pid 2>/dev/null || true
