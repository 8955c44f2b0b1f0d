# meshsolve: two commands on a fresh machine.
#   make demo   - set up, then run the main job
#   make test   - set up, then run every test
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test setup lint clean system-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# Debian's iptables, nftables and ipset (and iproute2) for the kernel tests, only as root and only when missing.
system-deps:
	@if [ "$$(id -u)" = 0 ] && { ! command -v iptables-restore >/dev/null 2>&1 || ! command -v nft >/dev/null 2>&1 \
	    || ! command -v ipset >/dev/null 2>&1; }; then \
	  echo "installing Debian's iptables, nftables, ipset and iproute2"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables nftables ipset iproute2 \
	    >/dev/null; \
	fi

setup: $(STAMP) system-deps

demo: setup
	$(PY) -m meshsolve.demo

test: setup
	$(PY) -m ruff check meshsolve tests
	$(PY) -m mypy
	$(PY) -m pytest -q -n auto --dist loadgroup

lint: setup
	$(PY) -m ruff check meshsolve tests
	$(PY) -m mypy

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
