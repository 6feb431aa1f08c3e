/* Circuit breakers and balancing of endpoints (src/policy/endpoint.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sophia/core.h"
#include "sophia/endpoint.h"

static const sg_breaker_cfg_t CFG = {
    .failures = 3, .error_pct = 50, .min_requests = 10, .window_ms = 1000, .cooldown_ms = 500};

static void outcome(sg_endpoint_t *ep, int ok, uint64_t now)
{
    sg_endpoint_begin(ep, &CFG, now);
    sg_endpoint_end(ep, &CFG, ok, ok ? 10 : -1, now);
}

static void test_consecutive_failures_open_then_half_open_then_close(void **state)
{
    SG_UNUSED(state);
    sg_endpoint_t *ep = sg_endpoint_acquire("p", "http://a/v1", 1);
    uint64_t t = 1000000;
    outcome(ep, 0, t);
    outcome(ep, 0, t);
    assert_int_equal(sg_endpoint_state(ep, &CFG, t), SG_BREAKER_CLOSED);
    outcome(ep, 1, t); /* a success resets the count */
    outcome(ep, 0, t);
    outcome(ep, 0, t);
    assert_true(sg_endpoint_available(ep, &CFG, t));
    outcome(ep, 0, t);
    assert_int_equal(sg_endpoint_state(ep, &CFG, t), SG_BREAKER_OPEN);
    assert_false(sg_endpoint_available(ep, &CFG, t + 499));
    /* After the cooldown: half-open, one trial at a time. */
    assert_int_equal(sg_endpoint_state(ep, &CFG, t + 500), SG_BREAKER_HALF_OPEN);
    assert_true(sg_endpoint_available(ep, &CFG, t + 500));
    sg_endpoint_begin(ep, &CFG, t + 500);
    assert_false(sg_endpoint_available(ep, &CFG, t + 501));
    sg_endpoint_end(ep, &CFG, 0, -1, t + 510); /* the trial fails: open again */
    assert_int_equal(sg_endpoint_state(ep, &CFG, t + 600), SG_BREAKER_OPEN);
    assert_int_equal(sg_endpoint_state(ep, &CFG, t + 1010), SG_BREAKER_HALF_OPEN);
    sg_endpoint_begin(ep, &CFG, t + 1010);
    sg_endpoint_end(ep, &CFG, 1, 20, t + 1030); /* the trial succeeds: closed */
    assert_int_equal(sg_endpoint_state(ep, &CFG, t + 1030), SG_BREAKER_CLOSED);
    assert_int_equal(ep->inflight, 0);
    sg_endpoint_release(ep);
}

static void test_error_rate_opens(void **state)
{
    SG_UNUSED(state);
    sg_endpoint_t *ep = sg_endpoint_acquire("p", "http://b/v1", 1);
    uint64_t t = 5000000;
    /* Alternating: never 3 in a row, but 50% over at least 10 outcomes. */
    for (int i = 0; i < 9; i++) outcome(ep, i % 2, t);
    assert_int_equal(sg_endpoint_state(ep, &CFG, t), SG_BREAKER_CLOSED);
    outcome(ep, 0, t);
    assert_int_equal(sg_endpoint_state(ep, &CFG, t), SG_BREAKER_OPEN);
    assert_true(sg_endpoint_error_rate(ep) >= 0.5);
    sg_endpoint_release(ep);
}

static void test_registry_shares_and_frees(void **state)
{
    SG_UNUSED(state);
    sg_endpoint_t *a = sg_endpoint_acquire("p", "http://c/v1", 1);
    sg_endpoint_t *b = sg_endpoint_acquire("p", "http://c/v1", 3);
    assert_ptr_equal(a, b);
    assert_int_equal(a->weight, 3); /* the newest configuration's weight */
    assert_ptr_not_equal(a, sg_endpoint_acquire("q", "http://c/v1", 1));
    size_t n;
    sg_endpoints_all(&n);
    assert_int_equal(n, 2);
    sg_endpoint_release(sg_endpoint_acquire("q", "http://c/v1", 1));
    sg_endpoint_release(a); /* (the q one is released twice above: one ref left for it) */
    sg_endpoint_release(b);
    sg_endpoint_t *const *all = sg_endpoints_all(&n);
    assert_int_equal(n, 1);
    sg_endpoint_release(all[0]);
    sg_endpoints_all(&n);
    assert_int_equal(n, 0);
}

static void test_pick_balances_by_weight_and_load(void **state)
{
    SG_UNUSED(state);
    sg_endpoint_t *eps[3] = {sg_endpoint_acquire("p", "http://d1/v1", 1),
                             sg_endpoint_acquire("p", "http://d2/v1", 3),
                             sg_endpoint_acquire("p", "http://d3/v1", 1)};
    uint64_t t = 9000000;
    int count[3] = {0};
    for (int i = 0; i < 3000; i++) count[sg_endpoint_pick(eps, 3, NULL, &CFG, t)]++;
    /* Equal load and latency: the heavier endpoint wins its draws more often. */
    assert_true(count[1] > count[0] && count[1] > count[2]);
    /* A loaded endpoint is avoided. */
    for (int i = 0; i < 10; i++) sg_endpoint_begin(eps[1], &CFG, t);
    memset(count, 0, sizeof(count));
    for (int i = 0; i < 3000; i++) count[sg_endpoint_pick(eps, 3, NULL, &CFG, t)]++;
    assert_true(count[1] < count[0] && count[1] < count[2]);
    for (int i = 0; i < 10; i++) sg_endpoint_end(eps[1], &CFG, 1, 10, t);
    /* Slow endpoints lose to fast ones. */
    eps[0]->ewma_ms = 500;
    eps[0]->has_ewma = 1;
    eps[2]->ewma_ms = 5;
    eps[2]->has_ewma = 1;
    eps[1]->ewma_ms = 5;
    memset(count, 0, sizeof(count));
    for (int i = 0; i < 3000; i++) count[sg_endpoint_pick(eps, 3, NULL, &CFG, t)]++;
    assert_true(count[0] < count[2]);
    /* Tried and unavailable ones are skipped; none left → -1. */
    unsigned char tried[3] = {1, 0, 1};
    for (int i = 0; i < 50; i++) assert_int_equal(sg_endpoint_pick(eps, 3, tried, &CFG, t), 1);
    tried[1] = 1;
    assert_int_equal(sg_endpoint_pick(eps, 3, tried, &CFG, t), -1);
    /* Health down everywhere (no breaker open): still picked (the check may be stale). */
    for (int i = 0; i < 3; i++) eps[i]->health = -1;
    assert_true(sg_endpoint_pick(eps, 3, NULL, &CFG, t) >= 0);
    for (int i = 0; i < 3; i++) outcome(eps[0], 0, t);
    eps[1]->health = eps[2]->health = 1;
    for (int i = 0; i < 100; i++) assert_int_not_equal(sg_endpoint_pick(eps, 3, NULL, &CFG, t), 0);
    for (int i = 0; i < 3; i++) sg_endpoint_release(eps[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_consecutive_failures_open_then_half_open_then_close),
        cmocka_unit_test(test_error_rate_opens),
        cmocka_unit_test(test_registry_shares_and_frees),
        cmocka_unit_test(test_pick_balances_by_weight_and_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
