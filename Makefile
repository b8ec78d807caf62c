# Developer entry points. The repository itself is the /usr/local/mgr5 tree; nothing here is installed.
PYTHON ?= python3
PY36 := $(firstword $(wildcard /root/.pyenv/versions/3.6.*/bin/python))
MODULES := $(wildcard gate/* notify/*)
# The tests that also run under Python 3.6, with the modules themselves run by 3.6 (AlmaLinux 8's python3).
PY36_TESTS := tests/test_library.py tests/test_db.py tests/test_runner.py tests/test_template.py \
              tests/test_queue.py tests/test_gwepochta.py

# rpm and deb are folders too: without .PHONY make would call them up to date.
.PHONY: demo test deps vermin pytest pytest36 bench rpm deb clean

demo: deps
	$(PYTHON) tests/demo.py

test: deps vermin pytest pytest36

deps:
	@bash .ci/deps

vermin:
	vermin -q -t=3.6- --violations --no-tips --no-parse-comments lib/python/mgrnotify/*.py $(MODULES)

# The run also writes RELIABILITY.md: the fault matrix with this run's counts.
pytest:
	$(PYTHON) -m pytest tests -q --junitxml=build/junit.xml
	$(PYTHON) tests/reliability.py build/junit.xml build/fuzz-counts.json

pytest36:
ifneq ($(PY36),)
	MGRNOTIFY_TEST_PYTHON=$(PY36) $(PY36) -m pytest -q -p no:cacheprovider $(PY36_TESTS)
else
	@echo "No Python 3.6 interpreter on this machine: the 3.6 run is skipped (vermin still checked 3.6 syntax)."
endif

bench: deps
	$(PYTHON) bench/run.py --write

rpm:
	rpm/build

deb:
	debian/build

clean:
	rm -rf build .pytest_cache tests/.pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
