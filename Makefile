# Sophia Gateway build. `make` builds build/sophia-gateway and build/mockllm.
# `make run` starts the gateway (with the local mock upstream when no provider keys are set);
# `make test` runs every test; `make test-asan` runs them again under ASan+UBSan.

BUILD ?= build
CC ?= cc
SAN ?= 0

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Werror
CFLAGS_BASE := -std=c11 -D_GNU_SOURCE -g $(WARN) -Iinclude -I$(BUILD)/deps/include
ifeq ($(SAN),1)
CFLAGS_OPT := -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
LDFLAGS_SAN := -fsanitize=address,undefined
else
CFLAGS_OPT := -O2
LDFLAGS_SAN :=
endif
CFLAGS := $(CFLAGS_BASE) $(CFLAGS_OPT) $(EXTRA_CFLAGS)
LIBS := -luv -lcurl -lcjson -lmbedcrypto -lmbedx509 -lmbedtls -lsqlite3 -lpthread -lm
LDFLAGS := $(LDFLAGS_SAN) $(EXTRA_LDFLAGS)

DEPS_STAMP := $(BUILD)/.deps-installed
LLHTTP_LIB := $(BUILD)/deps/libllhttp.a

LIB_SRC := $(sort $(wildcard src/core/*.c src/ingress/*.c src/egress/*.c src/providers/*.c \
                              src/api/*.c src/pipeline/*.c \
                              src/policy/*.c src/state/*.c src/admin/*.c))
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
GW_OBJ := $(BUILD)/obj/src/main.o
MOCK_SRC := $(sort $(wildcard src/mock/*.c))
MOCK_OBJ := $(MOCK_SRC:%.c=$(BUILD)/obj/%.o)
UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all deps run test test-one test-asan unit-bins bench bench-tools bench-ledger fuzz clean format check-format

all: $(BUILD)/sophia-gateway $(BUILD)/mockllm

deps: $(DEPS_STAMP)

# Installs the Debian packages (and the npm test clients) when something is missing.
$(DEPS_STAMP): scripts/install-deps.sh
	@scripts/install-deps.sh
	@mkdir -p $(dir $@) && touch $@

$(LLHTTP_LIB): deps/Makefile | $(DEPS_STAMP)
	@$(MAKE) --no-print-directory -C deps OUT=$(abspath $(BUILD))/deps CC="$(CC)" \
		EXTRA_CFLAGS="$(CFLAGS_OPT)"

$(BUILD)/obj/%.o: %.c | $(DEPS_STAMP) $(LLHTTP_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libsophia.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/sophia-gateway: $(GW_OBJ) $(BUILD)/libsophia.a $(LLHTTP_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/mockllm: $(MOCK_OBJ) $(BUILD)/libsophia.a $(LLHTTP_LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(BUILD)/libsophia.a $(LLHTTP_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS) -lcmocka

run: all
	@scripts/run.sh $(BUILD)

# Every test, twice: the normal build, then the ASan+UBSan build. One summary line at the end.
test:
	@scripts/test-all.sh

# The suite on one build only (BUILD=…, SAN=1 for sanitizers).
test-one: all $(UNIT_BIN)
	@tests/run.sh $(BUILD)

test-asan:
	@$(MAKE) --no-print-directory BUILD=build-asan SAN=1 test-one

unit-bins: $(UNIT_BIN)

# Every performance figure next to nginx (bench/run.sh, bench/RESULTS.md), on a release build.
bench:
	@$(MAKE) --no-print-directory BUILD=build-release EXTRA_CFLAGS=-DNDEBUG all bench-tools
	@bench/run.sh build-release

bench-tools: $(BUILD)/bench/streams $(BUILD)/bench/reqs

# The usage ledger's sustained write rate and its observer's cost (bench/ledger_rate.c).
bench-ledger: $(BUILD)/bench/ledger_rate
	$(BUILD)/bench/ledger_rate $(or $(BENCH_SECONDS),3)

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(BUILD)/libsophia.a $(LLHTTP_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

# libFuzzer targets (clang): build/fuzz/fuzz_*; run each for a while with `-max_total_time=N`.
FUZZ_SRC := $(sort $(wildcard tests/fuzz/fuzz_*.c))
fuzz: | $(DEPS_STAMP) $(LLHTTP_LIB)
	@mkdir -p $(BUILD)/fuzz
	@for f in $(FUZZ_SRC); do n=$$(basename $$f .c); \
	  clang $(CFLAGS_BASE) -O1 -fsanitize=fuzzer,address,undefined -o $(BUILD)/fuzz/$$n $$f \
	    $(LIB_SRC) $(LLHTTP_LIB) $(LIBS) || exit 1; done

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

check-format:
	clang-format --dry-run --Werror $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-asan build-release

# Keep the unit tests' objects (they are intermediate files otherwise).
.SECONDARY:

-include $(LIB_OBJ:.o=.d) $(GW_OBJ:.o=.d) $(MOCK_OBJ:.o=.d) \
	$(UNIT_SRC:%.c=$(BUILD)/obj/%.d) $(wildcard $(BUILD)/obj/bench/*.d)
