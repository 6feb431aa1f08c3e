/* The store of recent Responses API answers, so that a client may continue from one
 * (previous_response_id) or refer to its output items (item_reference, as the Vercel AI SDK
 * does for tool calls) instead of sending them again. In memory, per process: at most
 * SG_RSTORE_MAX responses and SG_RSTORE_BYTES bytes, each kept SG_RSTORE_TTL_S seconds; the
 * oldest go first. */
#ifndef SOPHIA_RSTORE_H
#define SOPHIA_RSTORE_H

#include <cjson/cJSON.h>
#include <stdint.h>

#define SG_RSTORE_MAX 4096
#define SG_RSTORE_BYTES (64u * 1024 * 1024)
#define SG_RSTORE_TTL_S 3600

/* Keeps a response: its id, the input items it answered (in Responses form, references
 * resolved) and its output items. Both arrays are taken over. */
void sg_rstore_put(const char *id, cJSON *input, cJSON *output, int64_t now);
/* The stored response's input and output items (borrowed until the next put), or -1. */
int sg_rstore_get(const char *id, int64_t now, const cJSON **input, const cJSON **output);
/* A stored output item by its id (borrowed until the next put), or NULL. */
const cJSON *sg_rstore_item(const char *item_id, int64_t now);
/* Frees everything (at exit, and in tests). */
void sg_rstore_clear(void);

#endif
