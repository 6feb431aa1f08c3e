/* JSON helpers: a strict validator for request bodies (cJSON alone accepts trailing bytes, raw
 * control characters, invalid UTF-8 and truncates strings at \u0000), and checked reads of
 * numbers that come from outside (an upstream's token counts, timestamps, codes). */
#ifndef SOPHIA_JSON_H
#define SOPHIA_JSON_H

#include <cjson/cJSON.h>
#include <stddef.h>

/* Where and why a text is not acceptable JSON. what is a static string. */
typedef struct sg_json_problem {
    size_t offset; /* byte offset of the problem */
    size_t line;   /* 1-based; 0 when the position is not known */
    size_t col;    /* 1-based, in bytes */
    const char *what;
} sg_json_problem_t;

/* Nesting deeper than this is refused (cJSON's own limit is 1000). */
#define SG_JSON_MAX_DEPTH 256

/* Checks that s[0..n) is exactly one JSON value (RFC 8259) with only white space around it:
 * valid UTF-8 (no overlong forms, surrogates or code points above U+10FFFF), no raw control
 * characters inside strings, valid escapes with paired surrogates, no \u0000 (a C string
 * cannot carry it, so accepting it would silently cut the text), depth at most
 * SG_JSON_MAX_DEPTH. Returns 0, or -1 with p filled. */
int sg_json_validate(const char *s, size_t n, sg_json_problem_t *p);

/* sg_json_validate that also locates top-level members of an object on the way: for each
 * want[i].key, want[i].val/len are set to the raw text of its value (first occurrence; keys
 * compared as written), or val NULL when absent or s is not an object. */
typedef struct sg_json_member {
    const char *key;
    const char *val;
    size_t len;
} sg_json_member_t;
int sg_json_validate_members(const char *s, size_t n, sg_json_member_t *want, size_t n_want,
                             sg_json_problem_t *p);

/* sg_json_validate, then cJSON, then a check that no object repeats a key (parsers disagree
 * on which one wins: the gateway could route on one model while the upstream bills another).
 * Returns the parsed value (caller deletes), or NULL with p. */
cJSON *sg_json_parse_strict(const char *s, size_t n, sg_json_problem_t *p);

/* Length (1 to 4) of the valid UTF-8 sequence at the start of s[0..n), or 0 when there is
 * none (n is at least 1). */
size_t sg_utf8_seq_len(const char *s, size_t n);

/* Replaces, in place, every byte of s[0..n) that is not part of a valid UTF-8 sequence with
 * '?', so text from outside (an upstream's error message, a cut string) can go into JSON. */
void sg_utf8_sanitize(char *s, size_t n);

/* 1 when s[0..n) is valid UTF-8 (same rules as above). */
int sg_utf8_valid(const char *s, size_t n);

/* Length of the longest prefix of s[0..n) that does not end inside a UTF-8 sequence: cut a
 * string there to shorten it without producing invalid UTF-8. */
size_t sg_utf8_cut(const char *s, size_t n);

/* Copies the JSON text s[0..n) into out with the string value of the first member named key
 * replaced by value (escaped). Inside a JSON string every quote is escaped, so a quoted key
 * followed by ':' is a real key: meant for flat objects such as chat completions, whose
 * "model" appears once. Returns 0, or -1 (out untouched) when there is no such string member. */
struct sg_buf;
int sg_json_splice_string(const char *s, size_t n, const char *key, const char *value,
                          struct sg_buf *out);

/* Reads a count (tokens and the like) that must be a whole number in [0, max]. Returns 0 with
 * *out set, or -1 when v is absent, not a number, not finite, fractional or out of range. */
int sg_json_count(const cJSON *v, double max, long long *out);

/* Reads an integer in [min, max] (a timestamp, a numeric error code). Same returns. */
#define SG_UNIX_TIME_MAX 4102444800.0 /* 2100-01-01: later "created" values are not believed */
int sg_json_int_in(const cJSON *v, double min, double max, long long *out);

#endif
