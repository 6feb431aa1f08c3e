#!/usr/bin/env bash
# Gateway overhead benchmark: the same wrk load against the mock upstream directly, through
# nginx as a plain reverse proxy (the C baseline: 1 worker, upstream keep-alive, no
# buffering), and through the gateway, in one run, so the figures are ratios on this machine
# rather than absolute times. Prints requests/s and p50/p90/p99 latency, and the latency each
# proxy adds over direct-to-mock.
#   BENCH_SECONDS (default 10), BENCH_CONNS (default 50), BENCH_TOKENS (default 16)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
SECS=${BENCH_SECONDS:-10}
CONNS=${BENCH_CONNS:-50}
TOKENS=${BENCH_TOKENS:-16}
MOCK_PORT=${BENCH_MOCK_PORT:-19100}
GW_PORT=${BENCH_GW_PORT:-19180}
NGINX_PORT=${BENCH_NGINX_PORT:-19190}
ulimit -n 65536 2>/dev/null || true

for port in $MOCK_PORT $GW_PORT $NGINX_PORT; do
    if curl -s -o /dev/null "http://127.0.0.1:$port/"; then
        echo "bench: port $port is already in use; stop what listens there first" >&2
        exit 1
    fi
done
tmp=$(mktemp -d)
nginx_pid=""
cleanup() {
    kill "$gw_pid" "$mock_pid" $nginx_pid 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
"$BUILD"/mockllm --listen 127.0.0.1:$MOCK_PORT --tokens "$TOKENS" --quiet >/dev/null &
mock_pid=$!
LAMBDA_BASE_URL=http://127.0.0.1:$MOCK_PORT/v1 LAMBDA_API_KEY=bench-upstream-key \
    SOPHIA_LOG_LEVEL=warn "$BUILD"/sophia-gateway --listen 127.0.0.1:$GW_PORT 2>/tmp/sg-bench-gw.log &
gw_pid=$!
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if [ -x "$NGINX" ]; then
    mkdir -p "$tmp/logs"
    cat >"$tmp/nginx.conf" <<CONF
worker_processes 1;
error_log $tmp/logs/error.log warn;
pid $tmp/nginx.pid;
events { worker_connections 16384; }
http {
    access_log off;
    client_body_temp_path $tmp; proxy_temp_path $tmp;
    fastcgi_temp_path $tmp; uwsgi_temp_path $tmp; scgi_temp_path $tmp;
    upstream mock { server 127.0.0.1:$MOCK_PORT; keepalive 256; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
CONF
    "$NGINX" -p "$tmp" -c "$tmp/nginx.conf" -g 'daemon off;' &
    nginx_pid=$!
fi
for port in $MOCK_PORT $GW_PORT ${nginx_pid:+$NGINX_PORT}; do
    for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 0.1; done
done
kill -0 "$gw_pid" 2>/dev/null || { echo "bench: the gateway did not start" >&2; exit 1; }

# wrk runs 1 thread: on 2 cores the load generator, the gateway and the mock share the CPU.
run_wrk() { # url stream
    BENCH_STREAM=$2 wrk -t1 -c"$CONNS" -d"${SECS}s" --timeout 10s -s bench/chat.lua "$1" |
        grep '^RESULT' | sed 's/^RESULT //'
}
field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }

printf '\nSophia Gateway overhead: wrk -t1 -c%s -d%ss, %s tokens per answer, %s cores\n\n' \
    "$CONNS" "$SECS" "$TOKENS" "$(nproc)"
printf '%-30s %10s %10s %10s %10s %8s\n' target req/s p50_us p90_us p99_us errors
added() { # via direct
    printf '%-30s %10s %10s %10s %10s\n' "  added by ${3}" \
        "$(awk -v a="$(field "$1" rps)" -v b="$(field "$2" rps)" 'BEGIN{printf "%.0f%%", 100*a/b}')" \
        "$(( $(field "$1" p50_us) - $(field "$2" p50_us) ))" \
        "$(( $(field "$1" p90_us) - $(field "$2" p90_us) ))" \
        "$(( $(field "$1" p99_us) - $(field "$2" p99_us) ))"
}
row() { printf '%-30s %10s %10s %10s %10s %8s\n' "$1" "$(field "$2" rps)" "$(field "$2" p50_us)" \
    "$(field "$2" p90_us)" "$(field "$2" p99_us)" "$(field "$2" errors)"; }
for mode in 0 1; do
    name=$([ $mode = 1 ] && echo stream || echo non-stream)
    direct=$(run_wrk "http://127.0.0.1:$MOCK_PORT/v1/chat/completions" $mode)
    row "direct-to-mock ($name)" "$direct"
    if [ -n "$nginx_pid" ]; then
        ngx=$(run_wrk "http://127.0.0.1:$NGINX_PORT/v1/chat/completions" $mode)
        row "nginx proxy ($name)" "$ngx"
    fi
    via=$(run_wrk "http://127.0.0.1:$GW_PORT/v1/chat/completions" $mode)
    row "sophia-gateway ($name)" "$via"
    [ -n "$nginx_pid" ] && added "$ngx" "$direct" nginx
    added "$via" "$direct" gateway
done
echo "(added: req/s as a share of direct-to-mock; latency in microseconds over direct-to-mock)"
echo
