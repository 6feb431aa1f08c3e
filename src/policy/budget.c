/* Budgets: USD per UTC calendar day and month, per key, team and the whole gateway (see
 * sophia/access.h). Reserve, then settle: admission reserves a request's worst case, so that
 * requests in flight together can never spend more than is left; the end of the request
 * replaces the reservation with its real cost, which frees the difference for others.
 *
 * Mode "hard" (the default) refuses what does not fit and ends a stream whose running cost
 * would pass what is left. Mode "soft" refuses nothing: spend is recorded, and a warning (log
 * line and metric) marks the soft_pct threshold and the budget itself. */
#include <stdio.h>
#include <time.h>

#include "sophia/access.h"
#include "sophia/core.h"
#include "sophia/log.h"

#define EPS 1e-9 /* USD: rounding of sums of small prices */

static long month_of(int64_t unix_now, struct tm *tm)
{
    time_t t = (time_t)unix_now;
    gmtime_r(&t, tm);
    return (long)(tm->tm_year + 1900) * 12 + tm->tm_mon;
}

void sg_budget_roll(sg_scope_t *s, int64_t unix_now)
{
    struct tm tm;
    long day = (long)(unix_now / 86400), month = month_of(unix_now, &tm);
    if (day != s->day) {
        s->day = day;
        s->day_spent = 0;
        s->warned_day = 0;
    }
    if (month != s->month) {
        s->month = month;
        s->month_spent = 0;
        s->warned_month = 0;
    }
}

double sg_budget_spent(const sg_scope_t *s, int monthly, int64_t unix_now)
{
    struct tm tm;
    if (monthly) return month_of(unix_now, &tm) == s->month ? s->month_spent : 0;
    return unix_now / 86400 == s->day ? s->day_spent : 0;
}

/* Seconds from unix_now to the next UTC midnight / first of the next month. */
static long reset_in(int64_t unix_now, int monthly)
{
    if (!monthly) return (long)(86400 - unix_now % 86400);
    struct tm tm;
    month_of(unix_now, &tm);
    tm.tm_mday = 1;
    tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
    if (++tm.tm_mon == 12) {
        tm.tm_mon = 0;
        tm.tm_year++;
    }
    return (long)(timegm(&tm) - (time_t)unix_now);
}

int sg_budget_check(const sg_scope_t *s, double usd, const char **period, int64_t unix_now,
                    long *reset_s)
{
    const sg_budget_cfg_t *b = &s->budget;
    if (b->soft) return 0;
    if (b->daily_usd > 0 && s->day_spent + s->reserved + usd > b->daily_usd + EPS) {
        *period = "daily";
        *reset_s = reset_in(unix_now, 0);
        return -1;
    }
    if (b->monthly_usd > 0 && s->month_spent + s->reserved + usd > b->monthly_usd + EPS) {
        *period = "monthly";
        *reset_s = reset_in(unix_now, 1);
        return -1;
    }
    return 0;
}

/* Warns once per period when spend crosses soft_pct of a budget, and (soft mode) once when it
 * passes the budget itself. */
static void warn(sg_scope_t *s, const char *period, double spent, double limit, int *warned)
{
    if (limit <= 0) return;
    double pct = s->budget.soft_pct > 0 ? s->budget.soft_pct : 80;
    int level = spent > limit + EPS ? 2 : spent >= limit * pct / 100 - EPS ? 1 : 0;
    if (level <= *warned) return;
    *warned = level;
    s->soft_warnings++;
    sg_logline_t l;
    sg_logline_begin(&l, SG_LOG_WARN,
                     level == 2 ? "budget exceeded (soft mode: recorded, not refused)"
                                : "budget threshold reached");
    sg_logline_str(&l, "scope", sg_scope_kind_name(s->kind));
    if (s->name[0]) sg_logline_str(&l, "name", s->name);
    sg_logline_str(&l, "period", period);
    sg_logline_num(&l, "spent_usd", spent);
    sg_logline_num(&l, "budget_usd", limit);
    sg_logline_num(&l, "threshold_pct", pct);
    sg_logline_emit(&l);
}

void sg_budget_settle(sg_scope_t *s, double reserved, double cost, int64_t unix_now)
{
    sg_budget_roll(s, unix_now);
    s->reserved -= reserved;
    if (s->reserved < EPS) s->reserved = 0;
    s->reserved_by[sg_worker_index] -= reserved;
    if (s->reserved_by[sg_worker_index] < EPS) s->reserved_by[sg_worker_index] = 0;
    s->day_spent += cost;
    s->month_spent += cost;
    warn(s, "daily", s->day_spent, s->budget.daily_usd, &s->warned_day);
    warn(s, "monthly", s->month_spent, s->budget.monthly_usd, &s->warned_month);
}

static void seed(sg_scope_t *s, double day_usd, double month_usd, int64_t now)
{
    if (!s) return;
    sg_budget_roll(s, now);
    s->day_spent += day_usd;
    s->month_spent += month_usd;
}

void sg_budget_seed(const char *key, const char *team, double day_usd, double month_usd)
{
    int64_t now = sg_unix_time();
    sg_scopes_lock();
    if (key && key[0]) seed(sg_scope_get(SG_SCOPE_KEY, key), day_usd, month_usd, now);
    if (team && team[0]) seed(sg_scope_get(SG_SCOPE_TEAM, team), day_usd, month_usd, now);
    seed(sg_scope_get(SG_SCOPE_GLOBAL, ""), day_usd, month_usd, now);
    sg_scopes_unlock();
}
