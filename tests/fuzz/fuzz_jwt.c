/* libFuzzer target for token parsing: base64url decoding (round trip through the encoder)
 * and a PAT's expiry (sg_jwt_peek_exp) on arbitrary strings. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sophia/core.h"
#include "sophia/jwt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond)
{
    if (!cond) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = sg_xstrndup((const char *)data, size);
    int64_t exp = -1;
    if (sg_jwt_peek_exp(s, &exp) == 0) check(exp >= 0);

    unsigned char *dec = NULL;
    size_t dec_len = 0;
    if (sg_base64url_decode(s, strlen(s), &dec, &dec_len) == 0) {
        char *enc = sg_base64url_encode(dec, dec_len);
        unsigned char *again = NULL;
        size_t again_len = 0;
        check(sg_base64url_decode(enc, strlen(enc), &again, &again_len) == 0);
        check(again_len == dec_len && memcmp(again, dec, dec_len) == 0);
        free(again);
        free(enc);
        free(dec);
    }
    char *enc = sg_base64url_encode(data, size);
    check(sg_base64url_decode(enc, strlen(enc), &dec, &dec_len) == 0);
    check(dec_len == size && (size == 0 || memcmp(dec, data, size) == 0));
    free(dec);
    free(enc);
    free(s);
    return 0;
}
