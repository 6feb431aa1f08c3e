/* sophia-gateway: flags, configuration, signals, loop. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <uv.h>

#include "sophia/core.h"
#include "sophia/gateway.h"
#include "sophia/log.h"

typedef struct app {
    sg_gateway_t gw;
    uv_signal_t sigint, sigterm;
    uv_timer_t grace;
    int stopping;
    int exit_code;
} app_t;

static void usage(FILE *f)
{
    fprintf(f, "usage: sophia-gateway [--listen HOST:PORT] [--config PATH] [--check-config]\n"
               "\n"
               "  --listen HOST:PORT  address to listen on (overrides the config's \"listen\")\n"
               "  --config PATH       JSON configuration file (${ENV} interpolated)\n"
               "  --check-config      validate the configuration, print every problem, exit\n"
               "                      (0 when valid, 2 when not)\n"
               "\n"
               "Environment: LAMBDA_BASE_URL, LAMBDA_API_KEY (the lambda provider),\n"
               "SOPHIA_LISTEN, SOPHIA_LOG_LEVEL.\n");
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
    sg_curlm_free(a->gw.curlm);
    a->gw.curlm = NULL;
}

static void on_grace(uv_timer_t *t)
{
    app_t *a = t->data;
    sg_log(SG_LOG_WARN, "shutdown grace period over; closing %zu connection(s)",
           sg_http_server_conn_count(a->gw.http));
    sg_http_server_close_all(a->gw.http);
}

static void on_signal(uv_signal_t *s, int signum)
{
    app_t *a = s->data;
    if (a->stopping) {
        sg_log(SG_LOG_WARN, "second signal: closing every connection now");
        sg_http_server_close_all(a->gw.http);
        return;
    }
    a->stopping = 1;
    a->gw.draining = 1;
    sg_log(SG_LOG_INFO, "%s received: draining %zu connection(s) for up to %llu ms",
           signum == SIGINT ? "SIGINT" : "SIGTERM", sg_http_server_conn_count(a->gw.http),
           (unsigned long long)a->gw.cfg.shutdown_grace_ms);
    uv_timer_start(&a->grace, on_grace, a->gw.cfg.shutdown_grace_ms, 0);
    sg_http_server_stop(a->gw.http, on_http_closed, a);
}

static int parse_listen(const char *s, char **host, int *port)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s) return -1;
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || p < 0 || p > 65535) return -1;
    const char *h = s;
    size_t hl = (size_t)(colon - s);
    if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    free(*host);
    *host = sg_xstrndup(h, hl);
    *port = (int)p;
    return 0;
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void http_opts_from_config(const sg_config_t *cfg, sg_http_opts_t *o)
{
    sg_http_opts_defaults(o);
    o->max_header_bytes = cfg->max_header_bytes;
    o->max_body_bytes = cfg->max_body_bytes;
    o->header_timeout_ms = cfg->header_timeout_ms;
    o->idle_timeout_ms = cfg->idle_timeout_ms;
    o->write_stall_timeout_ms = cfg->write_stall_timeout_ms;
    o->max_connections = cfg->max_connections;
    o->high_watermark = cfg->high_watermark;
    o->low_watermark = cfg->low_watermark;
    o->cors_origins = cfg->cors_origins;
    o->n_cors_origins = cfg->n_cors_origins;
    o->log_requests_errors = 1;
}

int main(int argc, char **argv)
{
    const char *config_path = NULL, *listen_arg = NULL;
    int check_only = 0;
    static const struct option opts[] = {{"listen", required_argument, 0, 'l'},
                                         {"config", required_argument, 0, 'c'},
                                         {"check-config", no_argument, 0, 'k'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "l:c:kh", opts, NULL)) != -1) {
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
    sg_config_errors_t errs = {0};
    int rc = sg_config_load(&gw->cfg, config_path, &errs);
    if (listen_arg && parse_listen(listen_arg, &gw->cfg.listen_host, &gw->cfg.listen_port) != 0) {
        fprintf(stderr, "sophia-gateway: --listen: expected HOST:PORT, got '%s'\n", listen_arg);
        rc = -1;
    }
    if (rc != 0) {
        for (size_t i = 0; i < errs.n; i++)
            fprintf(stderr, "config error: %s: %s\n", errs.items[i].path, errs.items[i].message);
        fprintf(stderr, "sophia-gateway: invalid configuration (%zu problem%s)\n", errs.n,
                errs.n == 1 ? "" : "s");
        sg_config_errors_free(&errs);
        sg_config_free(&gw->cfg);
        return 2;
    }
    sg_config_errors_free(&errs);
    if (check_only) {
        printf("configuration OK: listen %s:%d, %zu provider(s)\n", gw->cfg.listen_host,
               gw->cfg.listen_port, gw->cfg.n_providers);
        sg_config_free(&gw->cfg);
        return 0;
    }
    sg_log_level_t lvl;
    if (sg_log_level_parse(gw->cfg.log_level, &lvl) == 0) sg_log_set_level(lvl);
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();

    uv_loop_t *loop = uv_default_loop();
    gw->loop = loop;
    sg_catalog_build(&gw->catalog, &gw->cfg);
    gw->curlm = sg_curlm_new(loop);
    sg_http_opts_t ho;
    http_opts_from_config(&gw->cfg, &ho);
    gw->http = sg_http_server_new(loop, gw->cfg.listen_host, gw->cfg.listen_port, &ho,
                                  sg_router_on_request, gw);
    if (!gw->http) {
        sg_curlm_free(gw->curlm);
        uv_run(loop, UV_RUN_DEFAULT);
        uv_loop_close(loop);
        sg_catalog_free(&gw->catalog);
        sg_config_free(&gw->cfg);
        return 1;
    }
    uv_signal_init(loop, &app.sigint);
    uv_signal_init(loop, &app.sigterm);
    app.sigint.data = app.sigterm.data = &app;
    uv_signal_start(&app.sigint, on_signal, SIGINT);
    uv_signal_start(&app.sigterm, on_signal, SIGTERM);
    uv_timer_init(loop, &app.grace);
    app.grace.data = &app;

    {
        sg_logline_t l;
        sg_logline_begin(&l, SG_LOG_INFO, "sophia-gateway listening");
        sg_logline_str(&l, "host", gw->cfg.listen_host);
        sg_logline_int(&l, "port", sg_http_server_port(gw->http));
        sg_logline_int(&l, "providers", (long long)gw->cfg.n_providers);
        sg_logline_int(&l, "models", (long long)gw->catalog.n);
        sg_logline_emit(&l);
        for (size_t i = 0; i < gw->cfg.n_providers; i++) {
            const sg_provider_cfg_t *p = &gw->cfg.providers[i];
            sg_logline_begin(&l, SG_LOG_INFO, "provider");
            sg_logline_str(&l, "name", p->name);
            sg_logline_str(&l, "kind", p->kind);
            sg_logline_str(&l, "base_url", p->base_url);
            sg_logline_bool(&l, "api_key_set", p->api_key && p->api_key[0]);
            sg_logline_int(&l, "models", (long long)p->n_models);
            sg_logline_emit(&l);
        }
        if (gw->cfg.n_providers == 0)
            sg_log(SG_LOG_WARN, "no provider configured: set LAMBDA_BASE_URL or use --config");
    }

    uv_run(loop, UV_RUN_DEFAULT);
    sg_http_server_free(gw->http);
    int close_rc = uv_loop_close(loop);
    if (close_rc != 0) {
        sg_log(SG_LOG_ERROR, "event loop closed with handles still open: %s",
               uv_strerror(close_rc));
        app.exit_code = 1;
    }
    sg_catalog_free(&gw->catalog);
    sg_config_free(&gw->cfg);
    curl_global_cleanup();
    sg_log(SG_LOG_INFO, "stopped");
    return app.exit_code;
}
