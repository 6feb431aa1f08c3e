#!/usr/bin/env bash
# make bench: every performance figure of the gateway next to nginx, in one run, on this
# machine. The gateway runs its full request path: a client key checked, routing, admission
# (limits and budgets), cost, the usage ledger (SQLite, its own thread), metrics and log lines.
#
#   1. Throughput and latency: wrk against the mock directly, through nginx (proxy_pass, 1
#      worker, upstream keep-alive, no buffering) and through the gateway; non-streamed and
#      16-token streams; 1, 32 and 256 connections. The proxy under test is pinned to one core
#      (PROXY_CPU), the mock and wrk to the other (LOAD_CPU).
#   2. Streaming scale: 1,000 / 5,000 / 9,000 concurrent streams (bench/streams.c) directly and
#      through the gateway: time to first token p50/p99 and what the gateway adds, errors,
#      resident memory per stream, and memory after the load.
#   3. --workers: non-streamed throughput at 32 connections with 1 and 2 workers.
#   4. Fixed request counts (bench/reqs.c), the figures that do not drift: instructions per
#      request under callgrind, heap allocations per request (memcheck) and system calls per
#      request (strace), for the gateway and nginx. Each is (run of WARM+N − run of WARM) / N.
#
# Prints one table per part and writes them, with the machine and the commands, to
# bench/RESULTS.md (BENCH_OUT to write elsewhere).
#   bench/run.sh [BUILD]    BENCH_SECONDS (8), BENCH_N (500), BENCH_WARM (100),
#                           BENCH_STREAMS ("1000 5000 9000"), BENCH_PARTS ("rate scale workers count")
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build-release}
BIN=$(cd "$BUILD" && pwd)
SECS=${BENCH_SECONDS:-8}
N=${BENCH_N:-500}
WARM=${BENCH_WARM:-100}
STREAMS=${BENCH_STREAMS:-"1000 5000 9000"}
PARTS=${BENCH_PARTS:-"rate scale workers count"}
OUT=${BENCH_OUT:-bench/RESULTS.md}
MOCK_PORT=19100 GW_PORT=19180 NGINX_PORT=19190 SMOCK_PORT=19101
LOAD_CPU=0 PROXY_CPU=1
[ "$(nproc)" -ge 2 ] || { LOAD_CPU=0; PROXY_CPU=0; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
for t in wrk nginx valgrind strace taskset; do
    command -v "$t" >/dev/null || [ -x "/usr/sbin/$t" ] ||
        { echo "bench: $t is not installed (scripts/install-deps.sh installs it)" >&2; exit 1; }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
for port in $MOCK_PORT $GW_PORT $NGINX_PORT $SMOCK_PORT; do
    if curl -s -o /dev/null "http://127.0.0.1:$port/"; then
        echo "bench: port $port is already in use; stop what listens there first" >&2
        exit 1
    fi
done

tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
report=$tmp/report.md
say() { printf '%s\n' "$*" | tee -a "$report"; }

KEY=bench-key
KEY_HASH=sha256:$(printf %s "$KEY" | sha256sum | cut -d' ' -f1)
MODEL=lambda/llama3.1-8b-instruct
CHAT="{\"model\":\"$MODEL\",\"messages\":[{\"role\":\"user\",\"content\":\"Say hello to the benchmark\"}]}"
STREAM="{\"model\":\"$MODEL\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"Say hello to the benchmark\"}]}"

wait_port() {
    for _ in $(seq 200); do curl -s -o /dev/null "http://127.0.0.1:$1/healthz" && return 0; sleep 0.05; done
    echo "bench: nothing answers on port $1" >&2
    return 1
}

# The mock for parts 1, 3 and 4 (16 tokens, no delay), started once.
ensure_mock() {
    curl -s -o /dev/null "http://127.0.0.1:$MOCK_PORT/healthz" && return 0
    taskset -c $LOAD_CPU "$BUILD"/mockllm --listen 127.0.0.1:$MOCK_PORT --tokens 16 --quiet >/dev/null &
    pids+=($!)
    wait_port $MOCK_PORT
}

# The gateway's configuration: one client key, the lambda provider on the mock at $1.
gw_config() {
    cat >"$tmp/gw.json" <<JSON
{"keys": [{"name": "bench", "hash": "$KEY_HASH"}],
 "providers": {"lambda": {"base_url": "http://127.0.0.1:$1/v1", "api_key": null}}}
JSON
}

# start_gateway CPUS [ARGS...]: in its own directory (its ledger goes there); sets gw_pid.
start_gateway() {
    local cpus=$1
    shift
    mkdir -p "$tmp/gw"
    rm -f "$tmp"/gw/sophia.db*
    (cd "$tmp/gw" && SOPHIA_LOG_LEVEL=warn LAMBDA_BASE_URL= LAMBDA_API_KEY= SNOWFLAKE_ACCOUNT= \
        exec taskset -c "$cpus" "$BIN/sophia-gateway" --listen 127.0.0.1:$GW_PORT \
        --config "$tmp/gw.json" "$@" 2>>"$tmp/gw.log") &
    gw_pid=$!
    pids+=("$gw_pid")
    wait_port $GW_PORT
}
stop_pid() { kill -TERM "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

nginx_conf() { # extra global directives
    mkdir -p "$tmp/nginx/logs"
    cat >"$tmp/nginx/nginx.conf" <<CONF
worker_processes 1;
error_log $tmp/nginx/logs/error.log warn;
pid $tmp/nginx/nginx.pid;
$1
events { worker_connections 16384; }
http {
    access_log off;
    client_body_temp_path $tmp/nginx; proxy_temp_path $tmp/nginx;
    fastcgi_temp_path $tmp/nginx; uwsgi_temp_path $tmp/nginx; scgi_temp_path $tmp/nginx;
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
}

run_wrk() { # port stream conns
    BENCH_STREAM=$2 BENCH_KEY=$KEY taskset -c $LOAD_CPU wrk -t1 -c"$3" -d"${SECS}s" --timeout 10s \
        -s bench/chat.lua "http://127.0.0.1:$1/v1/chat/completions" | grep '^RESULT' | sed 's/^RESULT //'
}
field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }

{
    echo "# Sophia Gateway benchmark"
    echo
    echo "Run $(date -u '+%Y-%m-%d %H:%M UTC') at commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
        "with \`make bench\` (\`bench/run.sh $BUILD\`; BENCH_SECONDS=$SECS, BENCH_N=$N, BENCH_WARM=$WARM)."
    echo
    echo "Machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)," \
        "$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, $(uname -sr)," \
        "open file limit $(ulimit -n). nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///'), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)," \
        "libcurl $(curl-config --version 2>/dev/null | cut -d' ' -f2)."
    echo
    echo "The gateway runs its whole request path: a client key, routing, admission (limits and"
    echo "budgets), cost, the SQLite usage ledger (its own thread), metrics and log lines (level warn)."
    echo "Proxies are pinned to CPU $PROXY_CPU; the mock upstream and the load generator to CPU $LOAD_CPU."
    echo
} >"$report"
cat "$report"

# ---- 1. throughput and latency --------------------------------------------------------------
if [[ " $PARTS " == *" rate "* ]]; then
    ensure_mock
    gw_config $MOCK_PORT
    start_gateway $PROXY_CPU
    nginx_conf "daemon off;"
    taskset -c $PROXY_CPU "$NGINX" -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" &
    nginx_pid=$!
    pids+=("$nginx_pid")
    wait_port $NGINX_PORT
    say "## 1. Throughput and latency (wrk -t1 -d${SECS}s, 16 tokens per answer)"
    say ""
    say "| answer | conns | target | req/s | p50 µs | p99 µs | errors | vs nginx req/s | added p50 µs |"
    say "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    for mode in 0 1; do
        name=$([ $mode = 1 ] && echo stream || echo non-stream)
        for c in 1 32 256; do
            d=$(run_wrk $MOCK_PORT $mode "$c")
            x=$(run_wrk $NGINX_PORT $mode "$c")
            g=$(run_wrk $GW_PORT $mode "$c")
            for t in direct nginx gateway; do
                case $t in direct) r=$d ;; nginx) r=$x ;; gateway) r=$g ;; esac
                ratio=$(awk -v a="$(field "$r" rps)" -v b="$(field "$x" rps)" 'BEGIN{printf "%.2f×", a/b}')
                added=$(($(field "$r" p50_us) - $(field "$d" p50_us)))
                [ $t = direct ] && added=— && ratio=—
                say "| $name | $c | $t | $(field "$r" rps) | $(field "$r" p50_us) | $(field "$r" p99_us) | $(field "$r" errors) | $ratio | $added |"
            done
        done
    done
    say ""
    say "(vs nginx: req/s as a multiple of nginx's in the same row group; added p50: over direct-to-mock)"
    say ""
    stop_pid "$gw_pid"
    stop_pid "$nginx_pid"
fi

# ---- 2. streaming scale ----------------------------------------------------------------------
if [[ " $PARTS " == *" scale "* ]]; then
    # 16 tokens 500 ms apart: every stream stays open for 8 s, longer than the ramp.
    taskset -c $LOAD_CPU "$BUILD"/mockllm --listen 127.0.0.1:$SMOCK_PORT --tokens 16 --itl-ms 500 --quiet >/dev/null &
    smock=$!
    pids+=("$smock")
    wait_port $SMOCK_PORT
    gw_config $SMOCK_PORT
    start_gateway $PROXY_CPU
    sleep 1
    say "## 2. Concurrent streams (bench/streams: opened at 3,000/s, all held open; 16 tokens 500 ms apart)"
    say ""
    say "| streams | target | errors | TTFT p50 µs | TTFT p99 µs | added p50 µs | added p99 µs | RSS per stream | RSS after |"
    say "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for n in $STREAMS; do
        d=$(taskset -c $LOAD_CPU "$BUILD"/bench/streams --port $SMOCK_PORT --n "$n" | sed 's/^RESULT //') || true
        g=$(taskset -c $LOAD_CPU "$BUILD"/bench/streams --port $GW_PORT --n "$n" --pid "$gw_pid" --key $KEY |
            sed 's/^RESULT //') || true
        sleep 6 # idle multi handles are closed after 5 s
        after=$(awk '/VmRSS/ {print $2}' /proc/"$gw_pid"/status)
        per=$(awk -v p="$(field "$g" rss_peak_kb)" -v i="$(field "$g" rss_idle_kb)" -v n="$n" \
            'BEGIN{printf "%.1f KiB", (p-i)/n}')
        say "| $n | direct | $(field "$d" errors) | $(field "$d" ttft_p50_us) | $(field "$d" ttft_p99_us) | — | — | — | — |"
        say "| $n | gateway | $(field "$g" errors) | $(field "$g" ttft_p50_us) | $(field "$g" ttft_p99_us) |" \
            "$(($(field "$g" ttft_p50_us) - $(field "$d" ttft_p50_us))) |" \
            "$(($(field "$g" ttft_p99_us) - $(field "$d" ttft_p99_us))) | $per |" \
            "$((after / 1024)) MiB (idle before: $(($(field "$g" rss_idle_kb) / 1024)) MiB) |"
    done
    say ""
    stop_pid "$gw_pid"
    stop_pid "$smock"
fi

# ---- 3. workers ------------------------------------------------------------------------------
if [[ " $PARTS " == *" workers "* ]]; then
    ensure_mock
    gw_config $MOCK_PORT
    say "## 3. Worker processes (non-streamed, 32 connections; the gateway may use both CPUs, wrk and the mock stay on CPU $LOAD_CPU)"
    say ""
    say "| workers | req/s | p50 µs | p99 µs | errors |"
    say "| ---: | ---: | ---: | ---: | ---: |"
    for w in 1 2; do
        start_gateway 0-$(($(nproc) - 1)) --workers "$w"
        sleep 0.5
        r=$(run_wrk $GW_PORT 0 32)
        say "| $w | $(field "$r" rps) | $(field "$r" p50_us) | $(field "$r" p99_us) | $(field "$r" errors) |"
        stop_pid "$gw_pid"
    done
    say ""
fi

# ---- 4. fixed counts: instructions, allocations, system calls ---------------------------------
# measure TOOL TARGET KIND: the figure per request of TARGET (gateway|nginx) for KIND (chat|stream).
measure_once() { # tool target body count
    local tool=$1 target=$2 body=$3 count=$4 out=$tmp/m.$1.$2.$4 port pid
    local prefix=()
    case $tool in
    callgrind) prefix=(valgrind --tool=callgrind --callgrind-out-file="$out") ;;
    memcheck) prefix=(valgrind --tool=memcheck --leak-check=no --log-file="$out") ;;
    strace) prefix=(strace -f -c -o "$out") ;;
    esac
    if [ "$target" = gateway ]; then
        port=$GW_PORT
        mkdir -p "$tmp/gw" && rm -f "$tmp"/gw/sophia.db*
        (cd "$tmp/gw" && SOPHIA_LOG_LEVEL=warn LAMBDA_BASE_URL= LAMBDA_API_KEY= SNOWFLAKE_ACCOUNT= \
            exec taskset -c $PROXY_CPU "${prefix[@]}" "$BIN/sophia-gateway" \
            --listen 127.0.0.1:$GW_PORT --config "$tmp/gw.json" 2>>"$tmp/gw.log") &
    else
        port=$NGINX_PORT
        (exec taskset -c $PROXY_CPU "${prefix[@]}" "$NGINX" -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" \
            2>>"$tmp/nginx.log") &
    fi
    pid=$!
    for _ in $(seq 400); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.05; done
    taskset -c $LOAD_CPU "$BUILD"/bench/reqs "$port" "$count" /v1/chat/completions "$body" $KEY >/dev/null ||
        echo "bench: some of $count requests through $target failed" >&2
    # Under strace the process to stop is strace's child (valgrind runs in the process itself).
    local victim=$pid
    [ "$tool" = strace ] && victim=$(pgrep -P "$pid" | head -n 1)
    kill -TERM "${victim:-$pid}"
    wait "$pid" 2>/dev/null || true
    [ -s "$out" ] || { echo "?"; return; }
    case $tool in
    callgrind) grep -E '^(summary|totals):' "$out" | head -n 1 | awk '{print $2}' ;;
    memcheck) sed -n 's/.*total heap usage: \([0-9,]*\) allocs.*/\1/p' "$out" | tr -d , | tail -1 ;;
    strace) awk '$NF == "total" {print $(NF-2)}' "$out" ;;
    esac
}
measure() {
    local body=$CHAT
    [ "$3" = stream ] && body=$STREAM
    local a b
    a=$(measure_once "$1" "$2" "$body" "$WARM")
    b=$(measure_once "$1" "$2" "$body" $((WARM + N)))
    awk -v a="$a" -v b="$b" -v n="$N" 'BEGIN{ if (a == "" || b == "") print "?"; else printf "%.1f", (b-a)/n }'
}
if [[ " $PARTS " == *" count "* ]]; then
    ensure_mock
    gw_config $MOCK_PORT
    nginx_conf "daemon off; master_process off;"
    say "## 4. Per request, by count ($N requests after $WARM, one keep-alive connection)"
    say ""
    say "| answer | target | instructions (callgrind) | heap allocations (memcheck) | system calls (strace) |"
    say "| --- | --- | ---: | ---: | ---: |"
    for kind in chat stream; do
        for target in gateway nginx; do
            i=$(measure callgrind $target $kind)
            m=$(measure memcheck $target $kind)
            s=$(measure strace $target $kind)
            say "| $([ $kind = chat ] && echo non-stream || echo 16-token stream) | $target | $i | $m | $s |"
        done
    done
    say ""
    say "(all threads of the process count: for the gateway that includes the ledger's writer thread"
    say "and the log writer)"
    say ""
fi

cat >>"$report" <<'EOF'
## Commands

```
make bench                          # = make BUILD=build-release EXTRA_CFLAGS=-DNDEBUG all bench-tools && bench/run.sh build-release
BENCH_PARTS="rate" bench/run.sh     # one part: rate, scale, workers, count
build/bench/streams --port P --n 9000 [--pid PID] [--key K]   # concurrent streams, TTFT, RSS
build/bench/reqs PORT N PATH BODY [KEY]  # N requests on one connection (for callgrind, memcheck, strace)
bench/callgrind.sh build chat       # instructions per request for one endpoint
```
EOF
cp "$report" "$OUT"
echo "bench: written to $OUT"
