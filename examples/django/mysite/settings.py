"""The guestbook project's settings: Django's ORM on wsgipool's pool.

``DATABASE_URL`` chooses the database (SQLite in this directory by default):
``postgresql://postgres@127.0.0.1/test``, ``mysql://root@127.0.0.1/test`` or
``sqlite:///guestbook.db``.
"""

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "guestbook-demo-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "guestbook",
]

MIDDLEWARE = [
    # First: a request that finds no free connection gets a 503 with Retry-After.
    "wsgipool.django.middleware.PoolTimeoutMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "mysite.urls"
WSGI_APPLICATION = "mysite.wsgi.application"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
STATIC_URL = "static/"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

ENGINES = {
    "postgresql": "wsgipool.django.postgresql", "postgres": "wsgipool.django.postgresql",
    "mysql": "wsgipool.django.mysql", "mariadb": "wsgipool.django.mysql",
    "sqlite": "wsgipool.django.sqlite3",
}


def database(url, **pool_options):
    """A DATABASES entry for ``url``, with wsgipool's pool options in OPTIONS."""
    parts = urlsplit(url)
    engine = ENGINES[parts.scheme.split("+")[0]]
    if engine.endswith("sqlite3"):
        name = parts.path[1:] if parts.path.startswith("/") else parts.path
        # A test database in a file too: one in memory would not be pooled.
        return {"ENGINE": engine, "NAME": str(BASE_DIR / name), "OPTIONS": pool_options,
                "TEST": {"NAME": str(BASE_DIR / f"test_{Path(name).name}")}}
    return {
        "ENGINE": engine, "NAME": parts.path.lstrip("/"),
        "USER": unquote(parts.username or ""), "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "", "PORT": str(parts.port or ""),
        "OPTIONS": pool_options,
    }


# max_size = gunicorn's threads: one connection per thread, so no request waits for
# another's; timeout: how long a request may wait for one before its 503.
DATABASES = {"default": database(
    os.environ.get("DATABASE_URL", "sqlite:///guestbook.db"),
    max_size=int(os.environ.get("THREADS", "4")), timeout=5.0,
)}
