/* The configuration sections modules parse themselves: the one list to extend when a module
 * adds a top-level section. */
#include "sophia/access.h"
#include "sophia/config_parse.h"
#include "sophia/endpoint.h"
#include "sophia/health.h"
#include "sophia/route.h"

const sg_config_section_t *const sg_config_sections[] = {
    &sg_routing_section, &sg_breaker_section, &sg_health_section, &sg_ledger_section, NULL};
