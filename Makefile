# sealpost: the two commands a newcomer needs are `make run` and `make test`.
# Everything else here is a convenience over CMake + Ninja.
BUILD        ?= build
BUILD_ASAN   ?= build-asan
BUILD_FUZZ   ?= build-fuzz
BUILD_TYPE   ?= RelWithDebInfo
FUZZ_SECONDS ?= 10
PREFIX       ?= /usr/local
CTEST_FLAGS  ?= --output-on-failure --timeout 600

.PHONY: all bootstrap build test unit sanitize fuzz fuzz-smoke bench run tour demo install clean

all: build

bootstrap:
	@scripts/bootstrap

build:
	@cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DCMAKE_INSTALL_PREFIX=$(PREFIX) >/dev/null
	@cmake --build $(BUILD)

# The whole suite: normal build, the same tests under ASan+UBSan, each fuzz
# target briefly.
test: bootstrap
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory sanitize
	@$(MAKE) --no-print-directory fuzz-smoke

unit: build
	@cd $(BUILD) && ctest $(CTEST_FLAGS)

sanitize:
	@CC=clang-14 cmake -S . -B $(BUILD_ASAN) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DSP_SANITIZE=ON -DSP_BENCH=OFF >/dev/null
	@cmake --build $(BUILD_ASAN)
	@cd $(BUILD_ASAN) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		ctest $(CTEST_FLAGS)

$(BUILD_FUZZ)/.built: FORCE
	@CC=clang-14 cmake -S . -B $(BUILD_FUZZ) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSP_FUZZ=ON >/dev/null
	@cmake --build $(BUILD_FUZZ)
	@touch $@
FORCE:

# Each target for FUZZ_SECONDS on a scratch copy of its committed corpus.
fuzz-smoke: $(BUILD_FUZZ)/.built
	@scripts/fuzz-run $(BUILD_FUZZ) $(FUZZ_SECONDS)

# Longer runs for a developer: make fuzz FUZZ_SECONDS=300
fuzz: fuzz-smoke

# stdout carries nothing but the JSON lines; building talks on stderr
bench: bootstrap
	@$(MAKE) --no-print-directory build >&2
	@scripts/bench-run $(BUILD)

# sealpostd on the embedded defaults (var/): SQLite, local key files,
# a self-signed certificate
run: bootstrap build
	@scripts/run $(BUILD)

# the library from the CLI, step by step
tour: bootstrap build
	@scripts/tour $(BUILD)

# the platform and a provider end to end: one e-mail and one SMS, step by step
demo: bootstrap build
	@scripts/demo $(BUILD)

install: build
	@cmake --install $(BUILD)

clean:
	@rm -rf $(BUILD) $(BUILD_ASAN) $(BUILD_FUZZ)
