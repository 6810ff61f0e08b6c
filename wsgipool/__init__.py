"""wsgipool: a per-process pool of database connections for WSGI apps.

Each request gets its own DB-API 2.0 connection in ``environ["db.conn"]``::

    from wsgipool import PoolMiddleware
    app = PoolMiddleware(app, "postgresql://app@db/app", max_size=8)
"""

from .errors import (
    ConfigurationError,
    ConnectError,
    DriverNotInstalled,
    PoolClosed,
    PoolError,
    PoolTimeout,
)
from .middleware import PoolMiddleware
from .pool import Pool
from .request import connection
from .settings import configure
from .urls import redact_url

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "ConnectError",
    "DriverNotInstalled",
    "Pool",
    "PoolClosed",
    "PoolError",
    "PoolMiddleware",
    "PoolTimeout",
    "__version__",
    "configure",
    "connection",
    "redact_url",
]
