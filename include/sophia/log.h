/* Structured logging: one JSON object per line on stderr. */
#ifndef SOPHIA_LOG_H
#define SOPHIA_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "sophia/buf.h"

typedef enum { SG_LOG_DEBUG = 0, SG_LOG_INFO, SG_LOG_WARN, SG_LOG_ERROR } sg_log_level_t;

void sg_log_set_level(sg_log_level_t level);
/* Parses "debug|info|warn|error"; returns 0, or -1 when unknown. */
int sg_log_level_parse(const char *s, sg_log_level_t *out);
int sg_log_enabled(sg_log_level_t level);
/* Logs {"ts":…,"level":…,"msg":<formatted>} . The message is JSON-escaped. Never pass a
 * secret: nothing here redacts. */
void sg_log(sg_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A log line built field by field: sg_logline_begin, then _str/_int/_num fields, then _emit. */
typedef struct sg_logline {
    sg_buf_t b;
    int level;
} sg_logline_t;
void sg_logline_begin(sg_logline_t *l, sg_log_level_t level, const char *msg);
void sg_logline_str(sg_logline_t *l, const char *key, const char *val); /* NULL → null */
void sg_logline_int(sg_logline_t *l, const char *key, long long val);
void sg_logline_num(sg_logline_t *l, const char *key, double val);
void sg_logline_bool(sg_logline_t *l, const char *key, int val);
/* Writes the line to stderr (if the level is enabled) and frees it. */
void sg_logline_emit(sg_logline_t *l);

/* The log writer (src/core/logwriter.c). Once started, lines go to a bounded buffer that a
 * thread of its own writes to stderr, so a slow reader never blocks the caller; a full buffer
 * drops lines (counted, and said in the next line that fits). Stopping writes what is left.
 * Without it, lines are written at once. */
int sg_log_writer_start(void);
void sg_log_writer_stop(void);
/* One finished line (with its newline), from any thread. */
void sg_log_write(const char *line, size_t n);
/* Lines dropped so far, and bytes waiting (either may be NULL). */
void sg_log_writer_stats(uint64_t *dropped, size_t *buffered);

/* Appends s as a JSON string literal (with quotes) to b; bytes that are not valid UTF-8
 * become \ufffd. Ignores the cap error (a log line is bounded by its own cap and is
 * truncated). */
void sg_json_escape_append(sg_buf_t *b, const char *s, size_t n);

#endif
