/* For unit tests: a configuration generation loaded from JSON text (through a temporary file,
 * as the gateway loads one), with the environment's providers out of the way and every
 * problem printed. */
#ifndef SOPHIA_TEST_GEN_H
#define SOPHIA_TEST_GEN_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sophia/generation.h"
#include "sophia/log.h"

/* The generation of config, or NULL (its problems on stderr). */
static inline sg_gen_t *test_gen_load(const char *config)
{
    sg_log_set_level(SG_LOG_ERROR);
    unsetenv("LAMBDA_BASE_URL");
    unsetenv("SNOWFLAKE_ACCOUNT");
    char path[] = "/tmp/sg_test_gen_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return NULL;
    size_t n = strlen(config);
    ssize_t w = write(fd, config, n);
    close(fd);
    sg_config_errors_t errs = {0};
    sg_gen_t *g = w == (ssize_t)n ? sg_gen_load(path, NULL, 1, &errs) : NULL;
    for (size_t i = 0; i < errs.n; i++)
        fprintf(stderr, "# %s: %s\n", errs.items[i].path, errs.items[i].message);
    unlink(path);
    sg_config_errors_free(&errs);
    return g;
}

#endif
