# Developer entry points. The repository itself is the /usr/local/mgr5 tree; nothing here is installed.
PYTHON ?= python3
PYENV := /root/.pyenv/versions
# AlmaLinux 8's /usr/bin/python3, where most BILLmanager installations run.
PY36 := $(firstword $(wildcard $(PYENV)/3.6.*/bin/python))
# The other interpreters BILLmanager meets: AlmaLinux 9 and Debian 11 (3.9), Ubuntu 24.04 (3.12), Debian 13 (3.13).
MATRIX := $(foreach v,3.9 3.12 3.13,$(firstword $(wildcard $(PYENV)/$(v).*/bin/python)))
MODULES := $(wildcard gate/* notify/*)
# The library's own tests, run by pytest under every interpreter (the modules they start use it too).
UNIT_TESTS := tests/test_library.py tests/test_template.py tests/test_db.py tests/test_xmpp.py
# Tests that run no module in a subprocess: the runs with the modules under another interpreter leave them out. So
# does the queue model on utf8mb4 and latin1 tables: the table's charset is the database's business, not the
# interpreter's, and utf8 (utf8mb3), the oldest installations' charset, is kept (the whole run stays in budget).
# The queue's fuzzing runs for ntjabber only there: ntmax's queue is the same library code (notify.NotifyModule).
IN_PROCESS := -k "not test_in_process and not (test_queue_model and (utf8mb4 or latin1)) \
	and not (test_queue_database and ntmax)" \
	--ignore=tests/test_packages.py --ignore=tests/test_repo.py --ignore=tests/test_module_xml.py

# rpm and deb are folders too: without .PHONY make would call them up to date.
.PHONY: demo test deps vermin pytest pytest36 matrix reliability mutate bench rpm deb repo clean

demo: deps
	$(PYTHON) tests/demo.py

test: deps vermin pytest pytest36 matrix reliability

deps:
	@bash .ci/deps

vermin:
	vermin -q -t=3.6- --violations --no-tips --no-parse-comments lib/python/mgrnotify/*.py $(MODULES)

# Every test, the modules run by their own shebang: /usr/bin/python3.
pytest:
	rm -f build/junit*.xml build/fuzz-counts.json
	$(PYTHON) -m pytest tests -q --junitxml=build/junit.xml

# Every test that runs a module, the modules run by 3.6; then the library's tests with pytest itself on 3.6.
pytest36:
ifneq ($(PY36),)
	MGRNOTIFY_TEST_PYTHON=$(PY36) $(PYTHON) -m pytest tests -q -p no:cacheprovider $(IN_PROCESS) \
		--junitxml=build/junit-modules-3.6.xml
	MGRNOTIFY_TEST_PYTHON=$(PY36) $(PY36) -m pytest -q -p no:cacheprovider $(UNIT_TESTS) \
		--junitxml=build/junit-library-3.6.xml
else
	@echo "No Python 3.6 interpreter on this machine: the 3.6 runs are skipped (vermin still checked 3.6 syntax)."
endif

# Each other interpreter: every command of every module once against the real servers (the tests marked smoke),
# and the library's tests with pytest itself on that interpreter.
matrix:
	@$(foreach py,$(MATRIX),v=$$($(py) -c 'import sys; print("%d.%d" % sys.version_info[:2])') && \
		echo "== Python $$v: the smoke matrix and the library's tests" && \
		MGRNOTIFY_TEST_PYTHON=$(py) $(PYTHON) -m pytest tests -q -p no:cacheprovider -m smoke \
			--junitxml=build/junit-modules-$$v.xml && \
		MGRNOTIFY_TEST_PYTHON=$(py) $(py) -m pytest -q -p no:cacheprovider $(UNIT_TESTS) \
			--junitxml=build/junit-library-$$v.xml && ) true

# RELIABILITY.md from this run's reports: the fault matrix, the generated cases, the interpreters.
reliability:
	$(PYTHON) tests/reliability.py build

# Each mutant of tests/mutation/mutants.py planted alone in a copy of the repository against its tests; prints every
# mutant's fate and the score, writes the run into RELIABILITY.md. Not part of test: it takes about half an hour.
# MUTATE_OPTIONS="--only ID,ID" runs some (not written), "-j 1" one copy at a time.
mutate: deps
	$(PYTHON) tests/mutation/run.py --check
	$(PYTHON) tests/mutation/run.py $(MUTATE_OPTIONS)

bench: deps
	$(PYTHON) bench/run.py --write

rpm:
	rpm/build

deb:
	debian/build

# The signed yum/dnf and apt repositories of those packages, in build/repo/: MGRNOTIFY_SIGNING_KEY names the gpg key
# (without it they are unsigned, and publish/build says so).
repo: rpm deb
	publish/build

clean:
	rm -rf build .pytest_cache tests/.pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
