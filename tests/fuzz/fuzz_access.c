/* libFuzzer target for what admission and the admin side parse from clients: the credential
 * headers (Authorization with any scheme, x-api-key) against configured keys and admin keys,
 * model patterns against names, and the times /admin/usage and the usage command accept. The
 * first byte picks the part; the rest is the input (split at the first NUL where two strings
 * are needed). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sophia/access.h"
#include "sophia/core.h"
#include "sophia/ledger.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond)
{
    if (!cond) abort();
}

/* One configured client key ("sk-test") and one admin key ("admin-test"). */
static sg_access_cfg_t *access_cfg(void)
{
    static sg_access_cfg_t a;
    static sg_key_cfg_t key;
    static unsigned char admin[1][SG_KEY_HASH_LEN];
    if (!a.n_keys) {
        key.name = "test";
        sg_key_hash("sk-test", 7, key.hash);
        a.keys = &key;
        a.n_keys = 1;
        sg_key_hash("admin-test", 10, admin[0]);
        a.admin = admin;
        a.n_admin = 1;
    }
    return &a;
}

static void credentials(const char *s, int which)
{
    sg_http_req_t req;
    memset(&req, 0, sizeof(req));
    req.headers[0].name = which ? "x-api-key" : "authorization";
    req.headers[0].value = s;
    req.n_headers = 1;
    const sg_key_cfg_t *k = NULL;
    sg_error_t e;
    int r = sg_keys_authenticate(access_cfg(), &req, &k, &e);
    /* Only the configured key opens the door; anything else is a 401. */
    if (r == 0) check(k != NULL && strstr(s, "sk-test") != NULL);
    if (r != 0) check(e.status == 401);
    r = sg_keys_admin(access_cfg(), &req, &e);
    if (r == 0) check(strstr(s, "admin-test") != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    char *s = sg_xstrndup((const char *)data + 1, size - 1);
    size_t n = strlen(s);
    switch (data[0] % 4) {
    case 0:
    case 1:
        credentials(s, data[0] % 2);
        break;
    case 2: {
        /* pattern \0 name */
        char *nm = sg_xstrndup((const char *)data + 1 + n + 1, n + 1 < size - 1 ? size - 2 - n : 0);
        int m = sg_keys_pattern_match(s, nm);
        if (!strchr(s, '*')) check(m == (strcmp(s, nm) == 0));
        check(sg_keys_pattern_match("*", nm) == 1);
        check(sg_keys_pattern_match(nm, nm) == 1);
        free(nm);
        break;
    }
    default: {
        int64_t t = 0;
        (void)sg_usage_parse_time(s, 1764400000, &t);
        break;
    }
    }
    free(s);
    return 0;
}
