/* libFuzzer target for the HTTP request path: arbitrary bytes go to the real server over a
 * loopback socket, through llhttp, the limits, the router and the endpoint handlers (chat
 * bodies parsed, validated and routed to a provider whose upstream refuses connections), with
 * the client half-closing after its bytes; an admin key ("fuzz-admin-key-0123456789") opens
 * the admin paths, and every request goes to a ledger in a temporary directory, which
 * /admin/usage queries. Invariants: no crash, leak or sanitizer report; every connection
 * closes; no chat or upstream transfer outlives it. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sophia/core.h"
#include "sophia/gateway.h"
#include "sophia/ledger.h"
#include "sophia/log.h"
#include "sophia/record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static sg_gateway_t gw;
static int port;

static void check(int cond)
{
    if (!cond) abort();
}

static void setup(void)
{
    sg_log_set_level(getenv("FUZZ_LOG") ? SG_LOG_DEBUG : SG_LOG_ERROR);
    setenv("LAMBDA_BASE_URL", "http://127.0.0.1:1/v1", 1);
    setenv("LAMBDA_API_KEY", "fuzz-key", 1);
    setenv("SOPHIA_ADMIN_KEY", "fuzz-admin-key-0123456789", 1);
    sg_config_errors_t errs = {0};
    gw.gen = sg_gen_load(NULL, "127.0.0.1:0", 1, &errs);
    check(gw.gen != NULL);
    sg_config_errors_free(&errs);
    static char dir[] = "/tmp/sg-fuzz-http-XXXXXX";
    check(mkdtemp(dir) != NULL);
    static char path[64];
    snprintf(path, sizeof(path), "%s/sophia.db", dir);
    sg_ledger_cfg_t lc = gw.gen->cfg.ledger;
    lc.path = path;
    char err[256];
    gw.ledger = sg_ledger_open(&lc, err, sizeof(err));
    check(gw.ledger != NULL);
    sg_observe(&gw, sg_ledger_observer, gw.ledger);
    gw.loop = uv_default_loop();
    gw.curlm = sg_curlm_new(gw.loop);
    sg_http_opts_t ho;
    sg_gateway_http_opts(&gw.gen->cfg, &ho);
    ho.max_body_bytes = 64 * 1024;
    ho.log_requests_errors = getenv("FUZZ_LOG") != NULL;
    gw.http = sg_http_server_new(gw.loop, "127.0.0.1", 0, &ho, sg_router_on_request, &gw);
    check(gw.http != NULL);
    port = sg_http_server_port(gw.http);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!gw.http) setup();
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    check(fd >= 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    check(connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    size_t off = 0;
    int closed = 0;
    char sink[65536];
    /* Feed the bytes, then half-close; run the loop until the server closes the connection
     * and every chat and transfer it started has ended. */
    for (int spins = 0; spins < 200000; spins++) {
        if (off < size) {
            ssize_t n = send(fd, data + off, size - off, MSG_NOSIGNAL);
            if (n > 0) off += (size_t)n;
            if (n < 0 && errno != EAGAIN) off = size;
            if (off == size) shutdown(fd, SHUT_WR);
        } else if (size == 0 && spins == 0) {
            shutdown(fd, SHUT_WR);
        }
        uv_run(gw.loop, UV_RUN_NOWAIT);
        ssize_t r;
        while ((r = recv(fd, sink, sizeof(sink), 0)) > 0) {
        }
        if (r == 0 || (r < 0 && errno != EAGAIN)) closed = 1;
        if (closed && off == size && sg_http_server_conn_count(gw.http) == 0 &&
            gw.chats_active == 0 && sg_curlm_active(gw.curlm) == 0)
            break;
    }
    close(fd);
    check(closed);
    check(gw.chats_active == 0);
    return 0;
}
