/* sophia-gateway: flags, configuration, signals, loop. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <uv.h>

#include "sophia/access.h"
#include "sophia/core.h"
#include "sophia/gateway.h"
#include "sophia/rstore.h"
#include "sophia/health.h"
#include "sophia/ledger.h"
#include "sophia/log.h"
#include "sophia/metrics.h"
#include "sophia/record.h"
#include "sophia/workers.h"

/* Scopes (keys, teams, global, model limits) the workers' shared region holds. */
#define SHARED_SCOPES_MAX 16384

typedef struct app {
    sg_gateway_t gw;
    const char *config_path;
    const char *listen_arg;
    char *bound_host; /* the host the server listens on (a reload does not move it) */
    uv_signal_t sigint, sigterm, sighup;
    uv_timer_t grace;
    int stopping;
    int exit_code;
} app_t;

static void usage(FILE *f)
{
    fprintf(
        f, "usage: sophia-gateway [--listen HOST:PORT] [--config PATH] [--workers N]\n"
           "                      [--check-config]\n"
           "       sophia-gateway usage [--db PATH] [--since 24h] [--by model] [--json]\n"
           "                      (usage from the ledger; sophia-gateway usage --help)\n"
           "       sophia-gateway hash-key < key-file\n"
           "\n"
           "  --listen HOST:PORT  address to listen on (overrides the config's \"listen\")\n"
           "  --config PATH       JSON configuration file (${ENV} and ${file:PATH} interpolated)\n"
           "  --workers N         run N worker processes on the port (SO_REUSEPORT) under a\n"
           "                      master that restarts them; limits and budgets are shared\n"
           "                      (docs/workers.md). Default 1: one process, no master.\n"
           "  --check-config      validate the configuration (syntax, values, secret and key\n"
           "                      files, token formats and expiry), print every problem and\n"
           "                      warning, exit (0 when valid, 2 when not). This does not contact\n"
           "                      the upstreams: a key they would refuse still passes.\n"
           "  hash-key            read a client or admin key on standard input and print its\n"
           "                      \"hash\" line for \"keys\" or \"admin_keys\" (docs/keys.md)\n"
           "\n"
           "Environment: LAMBDA_BASE_URL, LAMBDA_API_KEY (the lambda provider);\n"
           "SNOWFLAKE_ACCOUNT, SNOWFLAKE_USER, SNOWFLAKE_PAT or SNOWFLAKE_PRIVATE_KEY_PATH\n"
           "(+ SNOWFLAKE_PRIVATE_KEY_PASSPHRASE), SNOWFLAKE_ROLE, SNOWFLAKE_WAREHOUSE,\n"
           "SNOWFLAKE_DATABASE, SNOWFLAKE_SCHEMA, SNOWFLAKE_BASE_URL (the cortex provider);\n"
           "SOPHIA_LISTEN, SOPHIA_LOG_LEVEL, SOPHIA_ADMIN_KEY (a key for /admin/).\n"
           "\n"
           "With no client keys configured the gateway listens on loopback only (unless\n"
           "\"allow_unauthenticated\": true).\n"
           "\n"
           "Signals: SIGTERM/SIGINT drain and exit; SIGHUP re-reads the configuration and its\n"
           "secrets (requests in flight finish on the old ones).\n");
}

static void on_handle_close_noop(uv_handle_t *h)
{
    SG_UNUSED(h);
}

static void on_http_closed(sg_http_server_t *srv, void *ud)
{
    app_t *a = ud;
    SG_UNUSED(srv);
    sg_log(SG_LOG_INFO, "all connections closed; shutting down");
    uv_close((uv_handle_t *)&a->grace, on_handle_close_noop);
    uv_close((uv_handle_t *)&a->sigint, on_handle_close_noop);
    uv_close((uv_handle_t *)&a->sigterm, on_handle_close_noop);
    uv_close((uv_handle_t *)&a->sighup, on_handle_close_noop);
    sg_health_stop(a->gw.health);
    a->gw.health = NULL;
    sg_curlm_free(a->gw.curlm);
    a->gw.curlm = NULL;
}

static void on_grace(uv_timer_t *t)
{
    app_t *a = t->data;
    sg_log(SG_LOG_WARN, "shutdown grace period over; closing %zu connection(s)",
           sg_http_server_conn_count(a->gw.http));
    sg_gateway_shutdown_requests(&a->gw);
    sg_http_server_close_all(a->gw.http);
}

static void on_signal(uv_signal_t *s, int signum)
{
    app_t *a = s->data;
    if (a->stopping) {
        sg_log(SG_LOG_WARN, "second signal: closing every connection now");
        sg_gateway_shutdown_requests(&a->gw);
        sg_http_server_close_all(a->gw.http);
        return;
    }
    a->stopping = 1;
    a->gw.draining = 1;
    sg_health_stop(a->gw.health); /* no probes while draining */
    a->gw.health = NULL;
    uint64_t grace = a->gw.gen->cfg.shutdown_grace_ms;
    sg_log(SG_LOG_INFO, "%s received: draining %zu connection(s) for up to %llu ms",
           signum == SIGINT ? "SIGINT" : "SIGTERM", sg_http_server_conn_count(a->gw.http),
           (unsigned long long)grace);
    uv_timer_start(&a->grace, on_grace, grace, 0);
    sg_http_server_stop(a->gw.http, on_http_closed, a);
}

/* Prints configuration problems ("error") or warnings ("warning"), to the log or stderr. */
static void print_problems(const sg_config_errors_t *errs, const char *what, int to_log)
{
    for (size_t i = 0; errs && i < errs->n; i++) {
        if (to_log) {
            sg_logline_t l;
            sg_logline_begin(&l, strcmp(what, "error") == 0 ? SG_LOG_ERROR : SG_LOG_WARN,
                             strcmp(what, "error") == 0 ? "config error" : "config warning");
            sg_logline_str(&l, "path", errs->items[i].path);
            sg_logline_str(&l, what, errs->items[i].message);
            sg_logline_emit(&l);
        } else {
            fprintf(stderr, "config %s: %s: %s\n", what, errs->items[i].path,
                    errs->items[i].message);
        }
    }
}

static void print_errors(const sg_config_errors_t *errs, int to_log)
{
    print_problems(errs, "error", to_log);
}

#define NO_PROVIDER_FIX                                                                            \
    "set LAMBDA_BASE_URL (an OpenAI-compatible server, e.g. http://<host>:8000/v1) or "            \
    "SNOWFLAKE_ACCOUNT, SNOWFLAKE_USER and SNOWFLAKE_PAT, or define \"providers\" in a --config "  \
    "file"

/* Logs the configuration's warnings and one line per provider (never a secret). */
static void log_providers(const sg_gen_t *g)
{
    print_problems(g->cfg.warnings, "warning", 1);
    for (size_t i = 0; i < g->cfg.n_providers; i++) {
        const sg_provider_cfg_t *p = &g->cfg.providers[i];
        sg_logline_t l;
        sg_logline_begin(&l, SG_LOG_INFO, "provider");
        sg_logline_str(&l, "name", p->name);
        sg_logline_str(&l, "kind", p->kind);
        char url[1024];
        sg_url_redact(p->n_endpoints ? p->endpoints[0].base_url : NULL, url, sizeof(url));
        sg_logline_str(&l, "base_url", p->n_endpoints ? url : NULL);
        if (p->n_endpoints > 1) sg_logline_int(&l, "endpoints", (long long)p->n_endpoints);
        if (p->ops->log_fields) p->ops->log_fields(p, g->state[i], sg_unix_time(), &l);
        sg_logline_int(&l, "models", (long long)p->n_models);
        sg_logline_emit(&l);
    }
    if (g->cfg.n_providers == 0) sg_log(SG_LOG_WARN, "no provider configured: %s", NO_PROVIDER_FIX);
}

/* The first health checks are in: the gateway announces itself. */
static void on_ready(void *ud)
{
    app_t *a = ud;
    sg_gateway_t *gw = &a->gw;
    const sg_config_t *cfg = &gw->gen->cfg;
    sg_logline_t l;
    sg_logline_begin(&l, SG_LOG_INFO, "sophia-gateway listening");
    sg_logline_str(&l, "host", cfg->listen_host);
    sg_logline_int(&l, "port", sg_http_server_port(gw->http));
    if (sg_worker_count > 1) sg_logline_int(&l, "worker", sg_worker_index);
    sg_logline_int(&l, "providers", (long long)cfg->n_providers);
    sg_logline_int(&l, "models", (long long)gw->gen->catalog.n);
    sg_logline_emit(&l);
    log_providers(gw->gen);
}

/* SIGHUP: a new generation from the same sources. Requests in flight keep the old one, which
 * is freed when the last of them ends. */
static void on_sighup(uv_signal_t *s, int signum)
{
    SG_UNUSED(signum);
    app_t *a = s->data;
    sg_gateway_t *gw = &a->gw;
    if (a->stopping) return;
    sg_config_errors_t errs = {0};
    sg_gen_t *g = sg_gen_load(a->config_path, a->listen_arg, gw->gen->id + 1, &errs);
    if (!g) {
        print_errors(&errs, 1);
        sg_config_errors_free(&errs);
        gw->reloads_failed++;
        sg_log(SG_LOG_ERROR, "reload failed; the running configuration stays in force");
        return;
    }
    sg_config_errors_free(&errs);
    /* The server stays on the address it was started on: the loopback rule applies to that
     * one, not to a "listen" the new file may name. */
    char rule[512];
    if (sg_keys_check_listen(g->cfg.access, a->bound_host, rule, sizeof(rule))) {
        sg_logline_t el;
        sg_logline_begin(&el, SG_LOG_ERROR, "config error");
        sg_logline_str(&el, "path", "$.keys");
        sg_logline_str(&el, "error", rule);
        sg_logline_emit(&el);
        sg_gen_unref(g);
        gw->reloads_failed++;
        sg_log(SG_LOG_ERROR, "reload failed; the running configuration stays in force");
        return;
    }
    if (strcmp(g->cfg.listen_host, gw->gen->cfg.listen_host) != 0 ||
        g->cfg.listen_port != gw->gen->cfg.listen_port)
        sg_log(SG_LOG_WARN, "the listen address changed; it takes effect at the next restart");
    sg_http_opts_t ho;
    sg_gateway_http_opts(&g->cfg, &ho);
    sg_http_server_set_opts(gw->http, &ho);
    sg_log_level_t lvl;
    if (sg_log_level_parse(g->cfg.log_level, &lvl) == 0) sg_log_set_level(lvl);
    sg_gen_t *old = gw->gen;
    gw->gen = g;
    gw->reloads_ok++;
    sg_logline_t l;
    sg_logline_begin(&l, SG_LOG_INFO, "configuration reloaded");
    sg_logline_int(&l, "generation", (long long)g->id);
    sg_logline_int(&l, "requests_on_previous", (long long)(old->refs - 1));
    sg_logline_emit(&l);
    log_providers(g);
    sg_gen_unref(old);
    sg_health_kick(gw->health);
}

typedef struct spend_sum {
    size_t pairs;
    double day, month;
} spend_sum_t;

static void on_spend(const char *key, const char *team, double day_usd, double month_usd, void *ud)
{
    spend_sum_t *s = ud;
    sg_budget_seed(key, team, day_usd, month_usd);
    s->pairs++;
    s->day += day_usd;
    s->month += month_usd;
}

/* Opens the ledger (unless "ledger": null) and, with seed, rebuilds the budgets' spend of the
 * day and month from it. Returns 0, or -1 after logging why. */
static int open_ledger(sg_gateway_t *gw, const sg_config_t *cfg, int seed)
{
    if (!cfg->ledger.enabled) {
        sg_log(SG_LOG_INFO, "ledger off (\"ledger\": null): no usage is recorded");
        return 0;
    }
    char err[512];
    sg_ledger_t *l = sg_ledger_open(&cfg->ledger, err, sizeof(err));
    spend_sum_t s = {0};
    if (!l || (seed && sg_ledger_spend(l, sg_unix_time(), on_spend, &s, err, sizeof(err)) != 0)) {
        sg_log(SG_LOG_ERROR, "cannot use the ledger: %s", err);
        sg_ledger_close(l);
        return -1;
    }
    gw->ledger = l;
    if (!seed) return 0;
    sg_logline_t line;
    sg_logline_begin(&line, SG_LOG_INFO, "budgets rebuilt from the ledger");
    sg_logline_str(&line, "path", sg_ledger_path(l));
    sg_logline_int(&line, "pairs", (long long)s.pairs);
    sg_logline_num(&line, "day_usd", s.day);
    sg_logline_num(&line, "month_usd", s.month);
    sg_logline_emit(&line);
    return 0;
}

/* The open file limit (raised to the hard limit) and the connections it allows (each holds a
 * client and an upstream socket; SG_FD_RESERVE go to the loop, the ledger, logs). */
static void log_capacity(const sg_config_t *cfg)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
    unsigned long long lim = (unsigned long long)rl.rlim_cur;
    size_t cap = sg_gateway_max_connections(cfg->max_connections);
    sg_logline_t l;
    sg_logline_begin(&l, SG_LOG_INFO, "file descriptors");
    sg_logline_int(&l, "open_file_limit", (long long)lim);
    sg_logline_int(&l, "max_connections", (long long)cap);
    sg_logline_emit(&l);
    /* Worth a warning when the limit takes a real share of max_connections away. */
    if (cap < cfg->max_connections / 10 * 9)
        sg_log(SG_LOG_WARN,
               "the open file limit (%llu) holds only %zu connections with their upstream "
               "sockets: more are refused with 503 server_overloaded (raise the limit, e.g. "
               "LimitNOFILE= or ulimit -n, to serve max_connections %zu)",
               lim, cap, cfg->max_connections);
}

/* --workers: the budgets are rebuilt once, by the master, into the shared scopes; then the
 * workers are forked. Returns the master's exit code once they have all stopped, or -1 in a
 * worker (after re-reading the configuration if it replaces one that died, so that it starts
 * with what the others reloaded). */
static int start_workers(app_t *a, int n)
{
    sg_gateway_t *gw = &a->gw;
    if (gw->gen->cfg.listen_port == 0) {
        fprintf(stderr, "sophia-gateway: --workers needs a fixed port (not 0)\n");
        sg_gen_unref(gw->gen);
        return 2;
    }
    if (sg_scopes_share(SHARED_SCOPES_MAX) != 0) {
        sg_log(SG_LOG_ERROR, "cannot map the memory the workers share");
        sg_gen_unref(gw->gen);
        return 1;
    }
    if (open_ledger(gw, &gw->gen->cfg, 1) != 0) {
        sg_gen_unref(gw->gen);
        return 1;
    }
    sg_ledger_close(gw->ledger); /* its thread must be gone before fork; workers reopen it */
    gw->ledger = NULL;
    sg_log(SG_LOG_INFO, "starting %d workers on %s:%d", n, gw->gen->cfg.listen_host,
           gw->gen->cfg.listen_port);
    int restarted = 0;
    int w = sg_workers_run(n, &restarted);
    if (w < 0) {
        sg_gen_unref(gw->gen);
        free(a->bound_host);
        sg_log(SG_LOG_INFO, "stopped");
        return -1 - w;
    }
    if (restarted) {
        sg_config_errors_t errs = {0};
        sg_gen_t *g = sg_gen_load(a->config_path, a->listen_arg, gw->gen->id + 1, &errs);
        if (g) {
            sg_gen_unref(gw->gen);
            gw->gen = g;
        } else {
            print_errors(&errs, 1);
            sg_log(SG_LOG_WARN, "worker %d restarts on the configuration the gateway started with",
                   w);
        }
        sg_config_errors_free(&errs);
    }
    return -1;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "usage") == 0) return sg_usage_cli(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "hash-key") == 0) {
        if (argc > 2) {
            fprintf(stderr, "sophia-gateway hash-key: takes no arguments (the key comes on "
                            "standard input)\n");
            return 2;
        }
        return sg_keys_hash_cli();
    }
    const char *config_path = NULL, *listen_arg = NULL;
    int check_only = 0, workers = 1;
    static const struct option opts[] = {
        {"listen", required_argument, 0, 'l'}, {"config", required_argument, 0, 'c'},
        {"check-config", no_argument, 0, 'k'}, {"workers", required_argument, 0, 'w'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "l:c:kw:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'l':
            listen_arg = optarg;
            break;
        case 'c':
            config_path = optarg;
            break;
        case 'k':
            check_only = 1;
            break;
        case 'w': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > SG_WORKERS_MAX) {
                fprintf(stderr, "sophia-gateway: --workers takes a number from 1 to %d\n",
                        SG_WORKERS_MAX);
                return 2;
            }
            workers = (int)v;
            break;
        }
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "sophia-gateway: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }

    static app_t app;
    sg_gateway_t *gw = &app.gw;
    app.config_path = config_path;
    app.listen_arg = listen_arg;
    sg_config_errors_t errs = {0};
    gw->gen = sg_gen_load(config_path, listen_arg, 1, &errs);
    if (!gw->gen) {
        print_errors(&errs, 0);
        fprintf(stderr, "sophia-gateway: invalid configuration (%zu problem%s)\n", errs.n,
                errs.n == 1 ? "" : "s");
        sg_config_errors_free(&errs);
        return 2;
    }
    sg_config_errors_free(&errs);
    const sg_config_t *cfg = &gw->gen->cfg;
    if (check_only) {
        print_problems(cfg->warnings, "warning", 0);
        if (cfg->n_providers == 0) {
            fprintf(stderr, "config error: $.providers: no provider configured: %s\n",
                    NO_PROVIDER_FIX);
            fprintf(stderr, "sophia-gateway: invalid configuration (1 problem)\n");
            sg_gen_unref(gw->gen);
            return 2;
        }
        printf("configuration OK: listen %s:%d, %zu provider(s), %zu model name(s)\n",
               cfg->listen_host, cfg->listen_port, cfg->n_providers, gw->gen->catalog.n);
        sg_gen_unref(gw->gen);
        return 0;
    }
    app.bound_host = sg_xstrdup(cfg->listen_host);
    sg_log_level_t lvl;
    if (sg_log_level_parse(cfg->log_level, &lvl) == 0) sg_log_set_level(lvl);
    signal(SIGPIPE, SIG_IGN);
    sg_raise_nofile_limit();
    if (workers > 1) {
        int rc = start_workers(&app, workers);
        if (rc >= 0) return rc; /* the master, when every worker has stopped */
        cfg = &gw->gen->cfg;    /* a restarted worker has re-read the configuration */
    }
    sg_presize_fd_table(); /* before any thread starts (a fork does not keep the size) */
    log_capacity(cfg);
    if (open_ledger(gw, cfg, workers == 1) != 0) {
        sg_gen_unref(gw->gen);
        return 1;
    }

    uv_loop_t *loop = uv_default_loop();
    gw->loop = loop;
    gw->curlm = sg_curlm_new(loop);
    sg_http_opts_t ho;
    sg_gateway_http_opts(cfg, &ho);
    ho.reuseport = workers > 1;
    gw->http =
        sg_http_server_new(loop, cfg->listen_host, cfg->listen_port, &ho, sg_router_on_request, gw);
    if (!gw->http) {
        sg_curlm_free(gw->curlm);
        uv_run(loop, UV_RUN_DEFAULT);
        uv_loop_close(loop);
        sg_ledger_close(gw->ledger);
        sg_gen_unref(gw->gen);
        free(app.bound_host);
        return 1;
    }
    /* From here on log lines are written by their own thread: a slow reader of stderr never
     * blocks the loop. */
    sg_log_writer_start();
    uv_signal_init(loop, &app.sigint);
    uv_signal_init(loop, &app.sigterm);
    uv_signal_init(loop, &app.sighup);
    app.sigint.data = app.sigterm.data = app.sighup.data = &app;
    uv_signal_start(&app.sigint, on_signal, SIGINT);
    uv_signal_start(&app.sigterm, on_signal, SIGTERM);
    uv_signal_start(&app.sighup, on_sighup, SIGHUP);
    uv_timer_init(loop, &app.grace);
    app.grace.data = &app;
    sg_observe(gw, sg_log_observer, NULL);
    if (gw->ledger) sg_observe(gw, sg_ledger_observer, gw->ledger);
    gw->metrics = sg_metrics_new();
    sg_observe(gw, sg_metrics_observer, gw->metrics);
    /* The first health checks (and model discovery) run before the gateway says it listens,
     * so that discovered names are known to the first requests (bounded by
     * health.startup_wait_ms). */
    gw->health = sg_health_start(gw, on_ready, &app);

    uv_run(loop, UV_RUN_DEFAULT);
    /* Every request has ended: the ledger writes what is still queued. */
    sg_ledger_close(gw->ledger);
    gw->ledger = NULL;
    sg_http_server_free(gw->http);
    int close_rc = uv_loop_close(loop);
    if (close_rc != 0) {
        sg_log(SG_LOG_ERROR, "event loop closed with handles still open: %s",
               uv_strerror(close_rc));
        app.exit_code = 1;
    }
    sg_gen_unref(gw->gen);
    free(app.bound_host);
    sg_metrics_free(gw->metrics);
    gw->metrics = NULL;
    sg_rstore_clear();
    curl_global_cleanup();
    sg_log(SG_LOG_INFO, "stopped");
    sg_log_writer_stop();
    return app.exit_code;
}
