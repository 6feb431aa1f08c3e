/* The store of recent Responses API answers (see sophia/rstore.h): a list in insertion order,
 * oldest first, bounded in count, bytes and age. */
#include "sophia/rstore.h"

#include <stdlib.h>
#include <string.h>

#include "sophia/core.h"

typedef struct entry {
    struct entry *next;
    char id[80];
    int64_t at;
    size_t bytes;
    cJSON *input, *output;
} entry_t;

static entry_t *head, *tail;
static size_t count, bytes;

static void drop_oldest(void)
{
    entry_t *e = head;
    head = e->next;
    if (!head) tail = NULL;
    count--;
    bytes -= e->bytes;
    cJSON_Delete(e->input);
    cJSON_Delete(e->output);
    free(e);
}

static void expire(int64_t now)
{
    while (head &&
           (now - head->at > SG_RSTORE_TTL_S || count > SG_RSTORE_MAX || bytes > SG_RSTORE_BYTES))
        drop_oldest();
}

static size_t size_of(const cJSON *j)
{
    char *s = cJSON_PrintUnformatted(j);
    size_t n = s ? strlen(s) : 0;
    free(s);
    return n;
}

void sg_rstore_put(const char *id, cJSON *input, cJSON *output, int64_t now)
{
    entry_t *e = sg_xcalloc(1, sizeof(*e));
    strncpy(e->id, id, sizeof(e->id) - 1);
    e->at = now;
    e->input = input;
    e->output = output;
    e->bytes = sizeof(*e) + size_of(input) + size_of(output);
    if (tail)
        tail->next = e;
    else
        head = e;
    tail = e;
    count++;
    bytes += e->bytes;
    expire(now);
}

int sg_rstore_get(const char *id, int64_t now, const cJSON **input, const cJSON **output)
{
    expire(now);
    for (entry_t *e = head; e; e = e->next) {
        if (strcmp(e->id, id) != 0) continue;
        *input = e->input;
        *output = e->output;
        return 0;
    }
    return -1;
}

const cJSON *sg_rstore_item(const char *item_id, int64_t now)
{
    expire(now);
    /* Newest first: an id is unique, but a recent one is the likely one. */
    const cJSON *found = NULL;
    for (entry_t *e = head; e; e = e->next) {
        const cJSON *it;
        cJSON_ArrayForEach(it, e->output)
        {
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
            if (cJSON_IsString(id) && strcmp(id->valuestring, item_id) == 0) found = it;
        }
    }
    return found;
}

void sg_rstore_clear(void)
{
    while (head) drop_oldest();
}
