/* The store of recent Responses API answers (see sophia/rstore.h): a list in insertion order,
 * oldest first, bounded in count, bytes and age, and a hash index from every response id and
 * output item id to its entry, so a lookup costs the same however full the store is. */
#include "sophia/rstore.h"

#include <stdlib.h>
#include <string.h>

#include "sophia/core.h"

#define BUCKETS 8192 /* a power of two */

typedef struct entry entry_t;

/* One index key: a response id (item NULL) or an output item's id. */
typedef struct key {
    struct key *next; /* in its bucket */
    const char *id;   /* borrowed from the entry or its item */
    entry_t *entry;
    const cJSON *item;
} rkey_t;

struct entry {
    entry_t *next;
    char id[80];
    int64_t at;
    size_t bytes;
    cJSON *input, *output;
    rkey_t *keys; /* the entry's own id first, then its items' */
    size_t n_keys;
};

static entry_t *head, *tail;
static size_t count, bytes;
static rkey_t *buckets[BUCKETS];

static size_t bucket_of(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h & (BUCKETS - 1);
}

static void index_add(rkey_t *k)
{
    size_t b = bucket_of(k->id);
    k->next = buckets[b];
    buckets[b] = k;
}

static void index_remove(const rkey_t *k)
{
    for (rkey_t **p = &buckets[bucket_of(k->id)]; *p; p = &(*p)->next) {
        if (*p == k) {
            *p = k->next;
            return;
        }
    }
}

static const rkey_t *index_find(const char *id, int want_item)
{
    for (const rkey_t *k = buckets[bucket_of(id)]; k; k = k->next)
        if ((k->item != NULL) == want_item && strcmp(k->id, id) == 0) return k;
    return NULL;
}

static void drop_oldest(void)
{
    entry_t *e = head;
    head = e->next;
    if (!head) tail = NULL;
    count--;
    bytes -= e->bytes;
    for (size_t i = 0; i < e->n_keys; i++) index_remove(&e->keys[i]);
    free(e->keys);
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
    e->keys = sg_xcalloc((size_t)cJSON_GetArraySize(output) + 1, sizeof(rkey_t));
    e->keys[e->n_keys++] = (rkey_t){NULL, e->id, e, NULL};
    const cJSON *it;
    cJSON_ArrayForEach(it, output)
    {
        const cJSON *iid = cJSON_GetObjectItemCaseSensitive(it, "id");
        if (cJSON_IsString(iid)) e->keys[e->n_keys++] = (rkey_t){NULL, iid->valuestring, e, it};
    }
    for (size_t i = 0; i < e->n_keys; i++) index_add(&e->keys[i]);
    e->bytes = sizeof(*e) + e->n_keys * sizeof(rkey_t) + size_of(input) + size_of(output);
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
    const rkey_t *k = index_find(id, 0);
    if (!k) return -1;
    *input = k->entry->input;
    *output = k->entry->output;
    return 0;
}

const cJSON *sg_rstore_item(const char *item_id, int64_t now)
{
    expire(now);
    const rkey_t *k = index_find(item_id, 1);
    return k ? k->item : NULL;
}

void sg_rstore_clear(void)
{
    while (head) drop_oldest();
}
