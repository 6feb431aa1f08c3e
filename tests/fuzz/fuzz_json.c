/* libFuzzer target for the strict JSON validator and the UTF-8 helpers. Invariants: whatever
 * the validator accepts, cJSON parses, and printing it back gives text the validator accepts
 * again; what it refuses carries a position inside the input; a sanitized string is valid
 * UTF-8; a cut string never ends inside a sequence; the escaper always produces a JSON string
 * the validator accepts; redaction leaves no configured secret and keeps valid UTF-8 valid. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sophia/buf.h"
#include "sophia/core.h"
#include "sophia/json.h"
#include "sophia/log.h"
#include "sophia/redact.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond)
{
    if (!cond) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    sg_json_problem_t p;
    if (sg_json_validate(s, size, &p) == 0) {
        cJSON *j = cJSON_ParseWithLength(s, size);
        check(j != NULL);
        char *out = cJSON_PrintUnformatted(j);
        check(out != NULL);
        check(sg_json_validate(out, strlen(out), &p) == 0);
        free(out);
        /* Top-level members found without a tree: each is a whole valid value, and (with no
         * escapes anywhere) the same value as the tree's first member of that name. */
        const cJSON *m;
        int escapes = memchr(s, '\\', size) != NULL;
        const cJSON *obj = cJSON_IsObject(j) ? j : NULL;
        cJSON_ArrayForEach(m, obj)
        {
            sg_json_member_t want = {m->string, NULL, 0};
            check(sg_json_validate_members(s, size, &want, 1, &p) == 0);
            const char *v = want.val;
            size_t vl = want.len;
            if (!v) {
                check(escapes);
                continue;
            }
            check(v >= s && v + vl <= s + size);
            check(sg_json_validate(v, vl, &p) == 0);
            if (!escapes) {
                cJSON *mv = cJSON_ParseWithLength(v, vl);
                check(mv != NULL);
                /* Printed, not cJSON_Compare: that one misreads objects with repeated keys. */
                char *a = cJSON_PrintUnformatted(mv);
                char *b = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(j, m->string));
                check(a && b && strcmp(a, b) == 0);
                free(a);
                free(b);
                cJSON_Delete(mv);
            }
        }
        cJSON_Delete(j);
    } else {
        check(p.what != NULL);
        check(p.offset <= size);
        check(p.line >= 1 && p.col >= 1);
    }
    cJSON *j = sg_json_parse_strict(s, size, &p);
    cJSON_Delete(j);

    char *copy = malloc(size + 1);
    check(copy != NULL);
    memcpy(copy, s, size);
    copy[size] = 0;
    sg_utf8_sanitize(copy, size);
    check(sg_utf8_valid(copy, size));
    size_t cut = sg_utf8_cut(copy, size / 2);
    check(cut <= size / 2);
    check(sg_utf8_valid(copy, cut));
    free(copy);

    static sg_secrets_t secrets;
    if (!secrets.n) {
        sg_secrets_add(&secrets, "secret-key-1");
        sg_secrets_add(&secrets, "eyJsecretsecret");
    }
    char red[600];
    size_t rn = size < sizeof(red) - 1 ? size : sizeof(red) - 1;
    memcpy(red, s, rn);
    red[rn] = 0;
    int was_valid = sg_utf8_valid(red, strlen(red));
    sg_redact(&secrets, NULL, red, sizeof(red));
    check(strstr(red, "secret-key-1") == NULL && strstr(red, "eyJsecretsecret") == NULL);
    if (was_valid) check(sg_utf8_valid(red, strlen(red)));

    sg_buf_t b;
    sg_buf_init(&b, 8 * size + 16);
    sg_json_escape_append(&b, s, size);
    check(sg_json_validate(b.data, b.len, &p) == 0 || memchr(s, 0, size) != NULL);
    sg_buf_dispose(&b);
    return 0;
}
