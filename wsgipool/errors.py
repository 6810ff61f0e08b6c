"""The exceptions wsgipool raises; catch :class:`PoolError` to catch them all."""


class PoolError(Exception):
    """Base class of every error raised by wsgipool."""


class ConfigurationError(PoolError, ValueError):
    """A URL or an option is invalid; raised at construction, before any connection."""


class DriverNotInstalled(ConfigurationError, ImportError):
    """The DB-API module a URL needs is not installed."""


class PoolTimeout(PoolError):
    """No connection became free within the pool's ``timeout``; or, with ``queue_full``
    true, ``max_waiting`` checkouts were already waiting and this one did not wait."""

    queue_full = False


class ConnectError(PoolError):
    """The database refused or could not be reached; the driver's error is ``__cause__``.

    ``logged`` is true when the pool has already logged the cause.
    """

    logged = False


class PoolClosed(PoolError):
    """The pool was closed and hands out no more connections."""
