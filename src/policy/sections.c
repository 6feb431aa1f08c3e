/* The configuration sections modules parse themselves: the one list to extend when a module
 * adds a top-level section. Sections are parsed in this order ("teams" before "keys": a key's
 * team is looked up among them). */
#include "sophia/access.h"
#include "sophia/config_parse.h"
#include "sophia/endpoint.h"
#include "sophia/health.h"
#include "sophia/route.h"

const sg_config_section_t *const sg_config_sections[] = {
    &sg_routing_section,      &sg_breaker_section,    &sg_health_section,
    &sg_teams_section,        &sg_keys_section,       &sg_global_section,
    &sg_model_limits_section, &sg_admin_keys_section, &sg_allow_unauth_section,
    &sg_throttle_section,     &sg_ledger_section,     NULL};
