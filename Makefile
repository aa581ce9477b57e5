# The two commands a newcomer needs: `make run` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
UV_VERSION := 0.13.9
# Validators for docker-compose.yml and the Kubernetes manifests live in their own environment:
# docker-compose 1.29 needs PyYAML 5, which only builds with Cython < 3 and no build isolation.
TOOLS := .tools
TOOLS_STAMP := $(TOOLS)/.installed-k8s

# The benchmark's peers (bench/peers.py) live in environments of their own under bench/.work/peers: a
# peer's pins need not fit seam's. Infinity: torch first, pinned as above (the CPU build).
PEERS := bench/.work/peers
INFINITY := $(PEERS)/infinity
INFINITY_STAMP := $(INFINITY)/.installed

# Two workers, a test module per worker at a time (its module-scoped processes start once), in the
# order collected (tests/conftest.py puts the modules that start real processes first).
PYTEST_WORKERS ?= -n 2 --dist loadscope --no-loadscope-reorder

.PHONY: run test tools bench bench-peers clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned, through pip (the machine's pip configuration finds the CPU build); an
	# unpinned torch would pull CUDA packages.
	$(PY) -m pip install --quiet --no-compile torch==2.13.0 uv==$(UV_VERSION)
	# The rest through uv: it downloads and unpacks in parallel and compiles what it installs on every
	# core (pip, one file at a time: 54 s and then 29 s of compiling, against 23 s in all). Certificates
	# from the system store, as pip takes them.
	UV_LINK_MODE=copy UV_SYSTEM_CERTS=1 $(VENV)/bin/uv pip install --python $(PY) --quiet --compile-bytecode -e '.[test,bench]'
	# torch's bytecode, on every core. Like pip, it skips the few files written for other Pythons
	# (torch's py312 tests), which it reports on stdout (silenced) and in its exit status (ignored).
	$(PY) -m compileall -j0 -q "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null || true
	touch $(STAMP)

$(TOOLS_STAMP):
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet "cython<3" wheel "setuptools<70"
	$(TOOLS)/bin/pip install --quiet --no-build-isolation pyyaml==5.4.1
	$(TOOLS)/bin/pip install --quiet docker-compose==1.29.2
	# kubernetes-validate needs jsonschema 4, docker-compose 1.29 jsonschema 3: it gets a venv of its own.
	test -x $(TOOLS)/k8s/bin/python || $(PYTHON) -m venv $(TOOLS)/k8s
	$(TOOLS)/k8s/bin/pip install --quiet kubernetes-validate==1.33.1
	touch $(TOOLS_STAMP)

tools: $(TOOLS_STAMP)

run: $(STAMP)
	$(VENV)/bin/seam up

# The two environments build side by side (the validators' takes about 25 s, on the other core).
test:
	$(MAKE) --no-print-directory -j2 $(STAMP) $(TOOLS_STAMP)
	$(PY) -m pytest $(PYTEST_WORKERS) $(PYTEST_ARGS)

$(INFINITY_STAMP):
	test -x $(INFINITY)/bin/python || $(PYTHON) -m venv $(INFINITY)
	$(INFINITY)/bin/pip install --quiet torch==2.13.0
	$(INFINITY)/bin/pip install --quiet 'infinity-emb[torch,server]==0.0.78'
	touch $(INFINITY_STAMP)

bench-peers: $(INFINITY_STAMP)

# The peer's environment first; where it cannot be built, the bench runs without the peer's rows and says why.
bench: $(STAMP)
	-$(MAKE) --no-print-directory bench-peers
	$(PY) -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache build *.egg-info
