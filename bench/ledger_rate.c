/* The ledger's sustained write rate and the cost of its observer on the calling thread.
 *
 *   make bench-ledger                      (3 seconds, a file in a new temp directory)
 *   build/bench/ledger_rate SECONDS [DIR]  (DIR: where the file goes, e.g. the real disk)
 *
 * Phase 1 (writer held): queue_max rows go through sg_ledger_observer with nobody taking them:
 * the observer's own cost (copy, allocation, lock, append), ns per row.
 * Phase 2 (sustained): rows are pushed as fast as the writer commits them (the producer backs
 * off when the queue is three quarters full, so nothing is dropped) for SECONDS; rows
 * committed per second is the writer's sustained rate, with the observer's cost while the
 * writer runs beside it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sophia/core.h"
#include "sophia/ledger.h"
#include "sophia/log.h"

#define QUEUE_MAX 65536
#define BURST 256

/* A typical record: every text field filled with realistic lengths. */
static void record(sg_record_t *r)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->request_id, sizeof(r->request_id), "3f2a9c0e7b1d4e5f8a6b2c3d4e5f6a7b");
    r->method = "POST";
    r->path = "/v1/chat/completions";
    snprintf(r->key, sizeof(r->key), "team-research-ci");
    snprintf(r->team, sizeof(r->team), "research");
    snprintf(r->model, sizeof(r->model), "fast");
    snprintf(r->route, sizeof(r->route), "lambda/llama3.1-8b-instruct");
    snprintf(r->provider, sizeof(r->provider), "lambda");
    snprintf(r->endpoint, sizeof(r->endpoint), "https://api.lambdalabs.com/v1");
    snprintf(r->rule, sizeof(r->rule), "alias");
    snprintf(r->why, sizeof(r->why),
             "alias fast -> lambda/llama3.1-8b-instruct (chain: lambda/llama3.1-8b-instruct)");
    r->stream = 1;
    r->status = 200;
    r->attempts = 1;
    r->usage = (sg_usage_t){.prompt_tokens = 812, .completion_tokens = 256, .known = 1};
    r->cost_in_usd = 812 * 0.02 / 1e6;
    r->cost_out_usd = 256 * 0.05 / 1e6;
    r->cost_usd = r->cost_in_usd + r->cost_out_usd;
    r->start_ns = 1000000000ull;
    r->ttft_ns = r->start_ns + 180000000ull;
    r->end_ns = r->start_ns + 2400000000ull;
    r->upstream_ns = 2390000000ull;
    r->outcome = "ok";
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Pushes n rows; returns the seconds spent inside the observer. */
static double push(sg_ledger_t *l, const sg_record_t *r, int n)
{
    double t = now_s();
    for (int i = 0; i < n; i++) sg_ledger_observer(r, l);
    return now_s() - t;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 3;
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/sg_ledger_bench_XXXXXX", argc > 2 ? argv[2] : "/tmp");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    char path[600];
    snprintf(path, sizeof(path), "%s/bench.db", dir);
    sg_log_set_level(SG_LOG_WARN);
    sg_ledger_cfg_t cfg = {1, path, 200, QUEUE_MAX, 0};
    char err[256];
    sg_ledger_t *l = sg_ledger_open(&cfg, err, sizeof(err));
    if (!l) {
        fprintf(stderr, "ledger_rate: %s\n", err);
        return 1;
    }
    sg_record_t r;
    record(&r);

    /* phase 1: the observer alone */
    sg_ledger_hold(l, 1);
    double held = push(l, &r, QUEUE_MAX);
    sg_ledger_hold(l, 0);
    sg_ledger_stats_t s;
    do {
        usleep(1000);
        sg_ledger_stats(l, &s);
    } while (s.depth > 0);

    /* phase 2: sustained */
    uint64_t written0 = s.written, pushed = 0;
    double in_observer = 0, t0 = now_s(), end = t0 + seconds;
    while (now_s() < end) {
        sg_ledger_stats(l, &s);
        if (s.depth > QUEUE_MAX * 3 / 4) {
            usleep(200);
            continue;
        }
        in_observer += push(l, &r, BURST);
        pushed += BURST;
    }
    sg_ledger_stats(l, &s);
    double elapsed = now_s() - t0;
    uint64_t written = s.written - written0;
    sg_ledger_close(l);
    struct stat st;
    double mb = stat(path, &st) == 0 ? (double)st.st_size / 1e6 : 0;

    printf("observer, writer held: %.0f ns/row (%d rows)\n", held * 1e9 / QUEUE_MAX, QUEUE_MAX);
    printf("observer, writer running: %.0f ns/row (%llu rows)\n",
           pushed ? in_observer * 1e9 / (double)pushed : 0, (unsigned long long)pushed);
    printf("sustained write rate: %.0f rows/s (%llu rows committed in %.2f s, %llu dropped)\n",
           (double)written / elapsed, (unsigned long long)written, elapsed,
           (unsigned long long)s.dropped);
    printf("file: %s, %.1f MB, %.0f bytes/row\n", path, mb,
           mb * 1e6 / (double)(QUEUE_MAX + pushed));
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : 1;
}
