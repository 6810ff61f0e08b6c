# make demo: the guestbook on http://127.0.0.1:8000, on SQLite (examples/guestbook.db);
#   DATABASE_URL=postgresql://postgres@127.0.0.1/test make demo switches it to a server.
#   It needs Python 3.9+ and nothing else: its own small venv, no system packages.
# make django-demo: the same guestbook as a Django project (examples/django: the ORM, a
#   migration, the admin) on wsgipool's Django backends; DATABASE_URL switches it the same way.
# make test: the test suite against PostgreSQL, MariaDB and SQLite
# make docs: the Sphinx site in docs/_build/html (its own venv: no database, no driver)
PYTHON ?= python3
VENV ?= .venv
DEMO_VENV ?= .venv-demo
DOCS_VENV ?= .venv-docs
# Where make docs writes the site; .ci/run points it at a temporary directory.
DOCS_OUT ?= docs/_build/html
PYTEST_ARGS ?=
STAMP := $(VENV)/.installed
comma := ,
# The demo's extras: gunicorn, and the driver its DATABASE_URL names (SQLite: none).
DEMO_EXTRAS := demo$(if $(filter postgresql+psycopg%,$(DATABASE_URL)),$(comma)psycopg,$(if $(filter postgres%,$(DATABASE_URL)),$(comma)postgresql))$(if $(filter mysql+pymysql% mariadb+pymysql%,$(DATABASE_URL)),$(comma)pymysql,$(if $(filter mysql% mariadb%,$(DATABASE_URL)),$(comma)mysql))
DEMO_STAMP := $(DEMO_VENV)/.installed-$(subst $(comma),-,$(DEMO_EXTRAS))
DJANGO_DEMO_STAMP := $(DEMO_VENV)/.installed-$(subst $(comma),-,$(DEMO_EXTRAS))-django

.PHONY: help venv test demo django-demo docs bench clean

help:
	@echo "make demo   serve examples/guestbook.py on http://127.0.0.1:8000 (SQLite by default)"
	@echo "make django-demo  serve examples/django (Django's ORM and admin) on :8000"
	@echo "make test   run the test suite (PostgreSQL, MariaDB, SQLite)"
	@echo "make docs   build the documentation into $(DOCS_OUT)"
	@echo "make bench  run the benchmarks against the peers"
	@echo "make venv   create $(VENV) with the package and its test extras"
	@echo "make clean  remove the virtual environment and build files"

venv: $(STAMP)

# A stamp, not the directory: reinstall when the dependencies change.
$(STAMP): setup.cfg pyproject.toml
	./.ci/system-deps
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	touch $(STAMP)

# Most test files run in parallel, then the ones marked serial (tests/conftest.py says
# why), alone; exit status 5 means a half had nothing to run for PYTEST_ARGS.
test: $(STAMP)
	$(VENV)/bin/python -m pytest -n 3 --dist loadfile -m "not serial" $(PYTEST_ARGS) || [ $$? -eq 5 ]
	$(VENV)/bin/python -m pytest -m serial $(PYTEST_ARGS) || [ $$? -eq 5 ]

$(DEMO_STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/python -m pip install -q --upgrade pip
	$(DEMO_VENV)/bin/python -m pip install -q -e '.[$(DEMO_EXTRAS)]'
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	cd examples && ../$(DEMO_VENV)/bin/gunicorn --no-control-socket -c gunicorn.conf.py \
		-b 127.0.0.1:8000 --access-logfile - guestbook:app

$(DJANGO_DEMO_STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/python -m pip install -q --upgrade pip
	$(DEMO_VENV)/bin/python -m pip install -q -e '.[$(DEMO_EXTRAS),django]'
	touch $(DJANGO_DEMO_STAMP)

django-demo: $(DJANGO_DEMO_STAMP)
	cd examples/django && ../../$(DEMO_VENV)/bin/python manage.py migrate --noinput && \
		../../$(DEMO_VENV)/bin/gunicorn --no-control-socket -c gunicorn.conf.py \
		-b 127.0.0.1:8000 --access-logfile - mysite.wsgi

# Warnings are errors (-W), every one reported (--keep-going), every reference checked
# (-n); -E reads everything afresh, so the options table always follows the code.
$(DOCS_VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(DOCS_VENV)
	$(DOCS_VENV)/bin/python -m pip install -q --upgrade pip
	$(DOCS_VENV)/bin/python -m pip install -q -e '.[docs]'
	touch $(DOCS_VENV)/.installed

docs: $(DOCS_VENV)/.installed
	$(DOCS_VENV)/bin/python -m sphinx -b html -E -W --keep-going -n -q docs $(DOCS_OUT)
	@echo "The documentation is in $(DOCS_OUT): open $(abspath $(DOCS_OUT))/index.html"

bench: $(STAMP)
	./.ci/system-deps --bench
	$(VENV)/bin/python -m pip install -q -e '.[bench]'
	$(VENV)/bin/python -m benchmarks

clean:
	rm -rf $(VENV) $(DEMO_VENV) $(DOCS_VENV) docs/_build build dist *.egg-info .pytest_cache examples/*.db examples/*.db-* examples/django/*.db
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
