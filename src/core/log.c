/* Structured JSON-lines logging on stderr. */
#include "sophia/log.h"

#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "sophia/core.h"
#include "sophia/json.h"

#define LOG_LINE_MAX 8192

static sg_log_level_t g_level = SG_LOG_INFO;
static const char *level_names[] = {"debug", "info", "warn", "error"};

void sg_log_set_level(sg_log_level_t level)
{
    g_level = level;
}

int sg_log_level_parse(const char *s, sg_log_level_t *out)
{
    for (size_t i = 0; i < SG_ARRAY_LEN(level_names); i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (sg_log_level_t)i;
            return 0;
        }
    }
    return -1;
}

int sg_log_enabled(sg_log_level_t level)
{
    return level >= g_level;
}

void sg_json_escape_append(sg_buf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    sg_buf_append(b, "\"", 1);
    size_t run = 0; /* start of the pending run of bytes that need no escaping */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') continue;
        if (c >= 0x80) {
            size_t l = sg_utf8_seq_len(s + i, n - i);
            if (l) {
                i += l - 1;
                continue;
            }
            /* Not UTF-8: never copied raw into JSON. */
            sg_buf_append(b, s + run, i - run);
            run = i + 1;
            sg_buf_append(b, "\\ufffd", 6);
            continue;
        }
        sg_buf_append(b, s + run, i - run);
        run = i + 1;
        char esc[7];
        switch (c) {
        case '"':
            sg_buf_append(b, "\\\"", 2);
            break;
        case '\\':
            sg_buf_append(b, "\\\\", 2);
            break;
        case '\n':
            sg_buf_append(b, "\\n", 2);
            break;
        case '\r':
            sg_buf_append(b, "\\r", 2);
            break;
        case '\t':
            sg_buf_append(b, "\\t", 2);
            break;
        default:
            if (c < 0x20 || c == 0x7f) {
                memcpy(esc, "\\u00", 4);
                esc[4] = hex[c >> 4];
                esc[5] = hex[c & 15];
                sg_buf_append(b, esc, 6);
            }
        }
    }
    sg_buf_append(b, s + run, n - run);
    sg_buf_append(b, "\"", 1);
}

void sg_logline_begin(sg_logline_t *l, sg_log_level_t level, const char *msg)
{
    l->level = (int)level;
    /* A disabled line costs nothing: fields are not formatted (max 0 refuses every append). */
    if (!sg_log_enabled(level)) {
        sg_buf_init(&l->b, 0);
        return;
    }
    struct timeval tv;
    struct tm tm;
    char ts[64];
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof(ts) - n, ".%03dZ", (int)(tv.tv_usec / 1000));
    l->level = (int)level;
    sg_buf_init(&l->b, LOG_LINE_MAX);
    sg_buf_printf(&l->b, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":", ts, level_names[level]);
    sg_json_escape_append(&l->b, msg, strlen(msg));
}

static int key(sg_logline_t *l, const char *k)
{
    if (l->b.max == 0) return 0;
    sg_buf_append(&l->b, ",", 1);
    sg_json_escape_append(&l->b, k, strlen(k));
    sg_buf_append(&l->b, ":", 1);
    return 1;
}

void sg_logline_str(sg_logline_t *l, const char *k, const char *val)
{
    if (!key(l, k)) return;
    if (val)
        sg_json_escape_append(&l->b, val, strlen(val));
    else
        sg_buf_append(&l->b, "null", 4);
}

void sg_logline_int(sg_logline_t *l, const char *k, long long val)
{
    if (!key(l, k)) return;
    sg_buf_printf(&l->b, "%lld", val);
}

void sg_logline_num(sg_logline_t *l, const char *k, double val)
{
    if (!key(l, k)) return;
    sg_buf_printf(&l->b, "%.3f", val);
}

void sg_logline_bool(sg_logline_t *l, const char *k, int val)
{
    if (!key(l, k)) return;
    sg_buf_append_str(&l->b, val ? "true" : "false");
}

void sg_logline_emit(sg_logline_t *l)
{
    if (l->b.max != 0 && sg_log_enabled((sg_log_level_t)l->level)) {
        /* A line over the cap lost fields; close it so it is still one JSON object. */
        if (sg_buf_append(&l->b, "}\n", 2) != 0) {
            l->b.len = l->b.max - 16 < l->b.len ? l->b.max - 16 : l->b.len;
            sg_buf_append_str(&l->b, ",\"trunc\":1}\n");
        }
        sg_log_write(l->b.data, l->b.len);
    }
    sg_buf_dispose(&l->b);
}

void sg_log(sg_log_level_t level, const char *fmt, ...)
{
    if (!sg_log_enabled(level)) return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    sg_logline_t l;
    sg_logline_begin(&l, level, msg);
    sg_logline_emit(&l);
}
