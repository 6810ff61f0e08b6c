"""Sphinx configuration for wsgipool's documentation: ``make docs``."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "_ext"))
sys.path.insert(0, os.path.dirname(HERE))  # the checkout's wsgipool, installed or not

import wsgipool  # noqa: E402

project = "wsgipool"
author = "wsgipool contributors"
copyright = "wsgipool contributors, MIT licence"
release = version = wsgipool.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "wsgipool_options",
]

# The build needs neither the database servers nor the optional packages: autodoc
# imports wsgipool's modules, and these stand in for what they import lazily or
# optionally.
autodoc_mock_imports = [
    "webob", "prometheus_client", "gevent", "eventlet", "django", "flask", "click",
    "werkzeug", "psycopg2", "psycopg",
    "psycopg_pool", "MySQLdb", "pymysql", "mod_python", "uwsgi", "paste",
]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"

# Every cross-reference must resolve (sphinx-build -n), except names that are not
# documented here on purpose: the standard library (no network for intersphinx at
# build time) and wsgipool's internal modules.
nitpicky = True
nitpick_ignore_regex = [
    ("py:class", r"(_typeshed\.wsgi\.)?(WSGIApplication|WSGIEnvironment|StartResponse)"),
    ("py:class", r"wsgipool\.(pool\.PooledConnection|pool\._Lease|request\.\w+|"
                 r"prometheus\.MultiProcessMirror|stats\.\w+|drivers\.\w+)"),
    ("py:class", r"'?(PooledConnection|_Lease|RequestConnections|Pool|HoldClock)'?"),
    ("py:mod", r"wsgipool\.(housekeeping|process|watchdog|options|drivers|request)"),
    ("py:class", r"(re\.)?Match\[str\]|collections\.abc\.\w+|typing\.\w+"),
    # Django's and Flask's own names (mocked: the build needs neither installed).
    ("py:(class|exc)", r"(django|flask|werkzeug)\..*|ImproperlyConfigured|'?Flask'?"),
]

# wsgipool.flask has a Pool too, so a bare "Pool" in a signature (a string annotation
# under TYPE_CHECKING) finds several targets; only that ambiguity is silenced (the
# category holds nothing else), every unresolved reference still fails the build.
suppress_warnings = ["ref.python"]

exclude_patterns = ["_build"]
html_theme = "furo"
html_title = f"wsgipool {release}"
html_static_path = []
