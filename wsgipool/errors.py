"""The exceptions wsgipool raises; catch :class:`PoolError` to catch them all."""


class PoolError(Exception):
    """Base class of every error raised by wsgipool: ``except wsgipool.PoolError``."""


class ConfigurationError(PoolError, ValueError):
    """A URL or an option is invalid; raised at construction, before any connection."""


class DriverNotInstalled(ConfigurationError, ImportError):
    """The DB-API module a URL needs is not installed; the message names the extra to
    install (``pip install wsgipool[postgresql]``...)."""


class PoolTimeout(PoolError):
    """No connection became free within the pool's ``timeout``; or, with ``queue_full``
    true, ``max_waiting`` checkouts were already waiting and this one did not wait.

    The middleware answers it with ``503 Service Unavailable`` and ``Retry-After``; the
    ``timeouts`` figure of :meth:`wsgipool.Pool.stats` counts the first kind,
    ``queue_full`` the second. ``waited`` is how many seconds the checkout waited (0 when
    ``queue_full``): the middleware's pause before the 503 counts it.
    """

    queue_full = False
    waited = 0.0


class ConnectError(PoolError):
    """The database refused or could not be reached; the driver's error is ``__cause__``.

    The middleware answers it with a 503. While the database refuses, new attempts wait
    a back-off (0.1 s doubling to 5 s) and checkouts in between raise it at once.
    ``logged`` is true when the pool has already logged the cause. The message never
    holds the password.
    """

    logged = False


class PoolClosed(PoolError):
    """The pool was closed and hands out no more connections."""
