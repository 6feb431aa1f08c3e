/* GET /v1/models and GET /v1/models/{id}: every model the gateway serves, configured or
 * discovered from the endpoints, in OpenAI's shape (plus a "sophia" object: provider,
 * upstream id, tier, context window, prices, capabilities). Ids may contain '/' (sent as is
 * or URL-encoded). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sophia/core.h"
#include "sophia/gateway.h"
#include "sophia/json.h"

/* Decodes %XX escapes of s into out; returns -1 on a malformed escape or a NUL byte. */
static int url_decode(const char *s, char *out, size_t cap)
{
    size_t n = 0;
    for (; *s; s++) {
        if (n + 1 >= cap) return -1;
        if (*s != '%') {
            out[n++] = *s;
            continue;
        }
        int v = 0;
        for (int i = 1; i <= 2; i++) {
            char h = s[i];
            int d = h >= '0' && h <= '9'   ? h - '0'
                    : h >= 'a' && h <= 'f' ? h - 'a' + 10
                    : h >= 'A' && h <= 'F' ? h - 'A' + 10
                                           : -1;
            if (d < 0) return -1;
            v = v * 16 + d;
        }
        if (v == 0) return -1;
        out[n++] = (char)v;
        s += 2;
    }
    out[n] = '\0';
    return 0;
}

void sg_models_handle(sg_gateway_t *gw, sg_http_req_t *req, const char *id)
{
    cJSON *j;
    char name[512];
    if (!id) {
        j = sg_gen_models_json(gw->gen, NULL);
    } else if (url_decode(id, name, sizeof(name)) != 0 || !sg_utf8_valid(name, strlen(name))) {
        sg_http_respond_error(req, 400, "invalid_request_error", "invalid_value",
                              "the model id in the path is not valid (URL-encoded UTF-8)");
        return;
    } else if (!(j = sg_gen_models_json(gw->gen, name))) {
        char msg[400];
        snprintf(msg, sizeof(msg), "The model '%.*s' does not exist",
                 (int)sg_utf8_cut(name, strnlen(name, 200)), name);
        sg_http_respond_error(req, 404, "invalid_request_error", "model_not_found", msg);
        return;
    }
    char *s = cJSON_PrintUnformatted(j);
    SG_ASSERT(s != NULL);
    sg_http_respond(req, 200, "application/json", s, strlen(s), NULL);
    free(s);
    cJSON_Delete(j);
}
