# sstc build. `make` builds build/libsstc.a and build/sstc; `make test` runs the
# Criterion suite; `make asan` runs it under AddressSanitizer + UBSan.
# Every target depends on `deps`, which installs missing Debian packages once.

CC      ?= gcc
BUILD   := build
PKGS    := libopenblas-openmp-dev libcriterion-dev libpng-dev libstb-dev zlib1g-dev \
           libinih-dev libzip-dev libcjson-dev nettle-dev libgd-dev pkg-config

# OpenBLAS's OpenMP build, so that BLAS calls and sstc's own OpenMP loops share
# one thread pool (the pthread build's threads and OpenMP's compete for cores).
MULTIARCH  := $(shell $(CC) -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
BLAS_DIR    = /usr/lib/$(MULTIARCH)/openblas-openmp
BLAS_CFLAGS = -I/usr/include/$(MULTIARCH)/openblas-openmp
BLAS_LIBS   = -L$(BLAS_DIR) -Wl,-rpath,$(BLAS_DIR) -lopenblas

WARN    := -Wall -Wextra -Wno-unused-parameter
OPT     ?= -O3 -march=x86-64-v2 -g
CFLAGS_BASE = -std=c11 -D_GNU_SOURCE $(WARN) -fopenmp -Iinclude -Isrc \
              -I/usr/include/libpng16 -I/usr/include/stb $(BLAS_CFLAGS)
CFLAGS  = $(CFLAGS_BASE) $(OPT) $(EXTRA_CFLAGS)
LDLIBS  = $(BLAS_LIBS) -lpng16 -lz -linih -lzip -lcjson -lnettle -lm -fopenmp -pthread

LIB_SRC  := $(shell find src -name '*.c' -not -path 'src/cli/*' | sort)
CLI_SRC  := $(shell find src/cli -name '*.c' | sort)
TEST_SRC := $(shell find tests -name '*.c' | sort)
HDRS     := $(shell find include src tests -name '*.h')

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/obj/%.o)

ASAN_DIR   := $(BUILD)/asan
ASAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
ASAN_LIB_OBJ  := $(LIB_SRC:%.c=$(ASAN_DIR)/obj/%.o)
ASAN_TEST_OBJ := $(TEST_SRC:%.c=$(ASAN_DIR)/obj/%.o)

.PHONY: mpi mpi-deps test-mpi mutate fuzz-deps all deps test check-symbols check-install asan install uninstall bench bench-train bench-infer run data fuzz clean

all: $(BUILD)/libsstc.a $(BUILD)/sstc

deps:
	@missing=""; for p in $(PKGS) $(EXTRA_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing missing packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(BUILD)/obj/%.o: %.c $(HDRS) | deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libsstc.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/sstc: $(CLI_OBJ) $(BUILD)/libsstc.a
	$(CC) $(CFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libsstc.a $(LDLIBS) -lgd

$(BUILD)/test_sstc: $(TEST_OBJ) $(BUILD)/libsstc.a
	$(CC) $(CFLAGS) -o $@ $(TEST_OBJ) $(BUILD)/libsstc.a -lcriterion $(LDLIBS)

# Tests run from the repository root so fixtures are found at tests/fixtures.
# The MPI tests run when build/sstc-mpi exists (`make mpi`): it is brought up
# to date first, so that they never test a stale binary.
test: $(BUILD)/test_sstc $(BUILD)/sstc $(if $(wildcard $(BUILD)/sstc-mpi),$(BUILD)/sstc-mpi) check-symbols check-install
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 ./$(BUILD)/test_sstc --jobs 2

# Every symbol libsstc.a exports starts with sstc_ (the rest are static).
check-symbols: $(BUILD)/libsstc.a
	@bad=$$(nm -g --defined-only $< | awk 'NF==3 && $$2 ~ /[TDBRCVW]/ {print $$3}' | grep -v '^sstc_' | grep -v '^\.' | sort -u); \
	if [ -n "$$bad" ]; then echo "libsstc.a exports symbols without the sstc_ prefix:"; echo "$$bad"; exit 1; fi; \
	echo "check-symbols: every exported symbol of libsstc.a starts with sstc_"

$(ASAN_DIR)/obj/%.o: %.c $(HDRS) | deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) -O1 -g $(ASAN_FLAGS) -c $< -o $@

$(ASAN_DIR)/test_sstc: $(ASAN_TEST_OBJ) $(ASAN_LIB_OBJ)
	$(CC) $(CFLAGS_BASE) $(ASAN_FLAGS) -o $@ $^ -lcriterion $(LDLIBS)

asan: $(ASAN_DIR)/test_sstc
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 LSAN_OPTIONS=suppressions=tests/lsan.supp:print_suppressions=0 \
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 ./$(ASAN_DIR)/test_sstc --jobs 2

clean:
	rm -rf $(BUILD)

# ---- installing the library ---------------------------------------------------
# make install PREFIX=/opt/sstc: lib/libsstc.a, include/sstc/*.h, bin/sstc and
# lib/pkgconfig/sstc.pc (a static library: the .pc lists what it links with)
PREFIX  ?= /usr/local
VERSION := 0.4.0
install: $(BUILD)/libsstc.a $(BUILD)/sstc
	install -d $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include/sstc $(DESTDIR)$(PREFIX)/bin
	install -m 644 $(BUILD)/libsstc.a $(DESTDIR)$(PREFIX)/lib/
	install -m 644 include/sstc/*.h $(DESTDIR)$(PREFIX)/include/sstc/
	install -m 755 $(BUILD)/sstc $(DESTDIR)$(PREFIX)/bin/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' -e 's|@LIBS@|$(LDLIBS)|' sstc.pc.in \
	    > $(DESTDIR)$(PREFIX)/lib/pkgconfig/sstc.pc

# An installed copy is usable the usual way: examples/classify.c builds with
# pkg-config against it and classifies an image with a .sst file.
check-install: $(BUILD)/libsstc.a $(BUILD)/sstc
	@rm -rf $(BUILD)/install-check && $(MAKE) --no-print-directory -s install PREFIX=$(CURDIR)/$(BUILD)/install-check >/dev/null
	@PKG_CONFIG_PATH=$(BUILD)/install-check/lib/pkgconfig $(CC) -std=c11 -Wall -Wextra -Werror examples/classify.c \
	    $$(PKG_CONFIG_PATH=$(BUILD)/install-check/lib/pkgconfig pkg-config --cflags --libs sstc) -o $(BUILD)/install-check/classify
	@head -c 192 /dev/zero > $(BUILD)/install-check/black.raw
	@$(BUILD)/install-check/classify fuzz/corpus/fuzz_sst/cnn_8_2.sst $(BUILD)/install-check/black.raw | grep -q 'black.raw: class [0-9]' \
	    && echo "check-install: examples/classify.c builds with pkg-config against an installed copy and runs"

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/lib/libsstc.a $(DESTDIR)$(PREFIX)/bin/sstc $(DESTDIR)$(PREFIX)/lib/pkgconfig/sstc.pc
	rm -rf $(DESTDIR)$(PREFIX)/include/sstc

# ---- datasets --------------------------------------------------------------
data: $(BUILD)/sstc
	./$(BUILD)/sstc data prepare mnist

# ---- fuzzing (libFuzzer) ----------------------------------------------------
# Every fuzz/fuzz_*.c is a target; seeds live in fuzz/corpus/<target>/.
# `make fuzz FUZZ_SECONDS=600` runs each target for that long.
FUZZ_SECONDS ?= 60
FUZZ_DIR  := $(BUILD)/fuzz
FUZZ_SRC  := $(sort $(wildcard fuzz/fuzz_*.c))
FUZZ_BIN  := $(FUZZ_SRC:fuzz/%.c=$(FUZZ_DIR)/%)
FUZZ_LIB_OBJ := $(LIB_SRC:%.c=$(FUZZ_DIR)/obj/%.o)
# keep the instrumented objects between fuzz builds
.SECONDARY: $(FUZZ_LIB_OBJ)
FUZZ_CFLAGS = $(CFLAGS_BASE) -O1 -g -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined

fuzz-deps:
	@$(MAKE) --no-print-directory deps EXTRA_PKGS="clang libclang-rt-14-dev"

$(FUZZ_DIR)/obj/%.o: %.c $(HDRS) | fuzz-deps
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -c $< -o $@

$(FUZZ_DIR)/%: fuzz/%.c $(FUZZ_LIB_OBJ)
	clang $(CFLAGS_BASE) -O1 -g -fsanitize=fuzzer,address,undefined -o $@ $< $(FUZZ_LIB_OBJ) $(LDLIBS)

fuzz: $(FUZZ_BIN)
	@for b in $(FUZZ_BIN); do n=$$(basename $$b); mkdir -p fuzz/corpus-work/$$n; \
	  echo "== $$n for $(FUZZ_SECONDS)s"; \
	  $$b -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 fuzz/corpus-work/$$n fuzz/corpus/$$n || exit 1; done

# ---- benchmarks -------------------------------------------------------------
BENCH_SRC := $(sort $(wildcard experiments/bench/*.c))
BENCH_BIN := $(BENCH_SRC:experiments/bench/%.c=$(BUILD)/%)

$(BUILD)/bench_%: experiments/bench/bench_%.c $(BUILD)/libsstc.a $(BUILD)/obj/src/cli/startup.o
	$(CC) $(CFLAGS) -Isrc/cli -o $@ $< $(BUILD)/obj/src/cli/startup.o $(BUILD)/libsstc.a $(LDLIBS)

bench: $(BENCH_BIN)
	./$(BUILD)/bench_step --threads 2

bench-infer: $(BUILD)/bench_infer
	./$(BUILD)/bench_infer

# ---- the main job: MNIST from the mirror, the whole method ------------------
# float training, (8,2) compression with normalization and gradual pruning,
# model.sst checked with the multiplication-free engine, a short table
run: $(BUILD)/sstc
	./$(BUILD)/sstc data prepare mnist
	./$(BUILD)/sstc run configs/mnist_fc_quick.ini

# sstc against PyTorch (needs python3-torch), alternating, same net/data/threads
bench-train: $(BUILD)/sstc
	./experiments/bench_train

# Mutation testing: plants each bug of tests/mutate/mutants.txt in a copy of the
# tree (build/mutate/tree), runs the suite, reports the survivors. Takes a while.
mutate: $(BUILD)/test_sstc $(BUILD)/sstc
	python3 tests/mutate/mutate.py $(MUTATE_ARGS)

# Data-parallel training over MPI (docs/distributed.md): build/sstc-mpi is sstc
# with src/core/dist.c built against Open MPI (every other object is shared
# with build/sstc, which needs no MPI). Run it with mpirun -np P.
MPI_PKGS := libopenmpi-dev openmpi-bin
MPICC    ?= mpicc
MPI_OBJ  := $(filter-out $(BUILD)/obj/src/core/dist.o,$(LIB_OBJ)) $(BUILD)/mpi/dist.o

mpi: $(BUILD)/sstc-mpi

mpi-deps:
	@$(MAKE) --no-print-directory deps EXTRA_PKGS="$(MPI_PKGS)"

$(BUILD)/mpi/dist.o: src/core/dist.c $(HDRS) | mpi-deps
	@mkdir -p $(dir $@)
	OMPI_CC=$(CC) $(MPICC) $(CFLAGS) -DSSTC_MPI -c $< -o $@

$(BUILD)/sstc-mpi: $(CLI_OBJ) $(MPI_OBJ)
	OMPI_CC=$(CC) $(MPICC) $(CFLAGS) -o $@ $(CLI_OBJ) $(MPI_OBJ) $(LDLIBS) -lgd

# A 2-rank job on this machine against a 1-rank run (tests/mpi/test_mpi.c).
test-mpi: $(BUILD)/sstc-mpi $(BUILD)/sstc $(BUILD)/test_sstc
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 ./$(BUILD)/test_sstc --filter 'mpi/*'

# `make test` runs these too (tests/mpi), and skips them when build/sstc-mpi is missing.
