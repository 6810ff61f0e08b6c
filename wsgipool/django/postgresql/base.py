"""``ENGINE = "wsgipool.django.postgresql"``: Django's PostgreSQL backend on a pool.

psycopg 3 or psycopg2, whichever Django's own backend picks (psycopg 3 if installed).
"""

from __future__ import annotations

from typing import Any

from django.db.backends.postgresql import base
from django.db.backends.postgresql.base import IsolationLevel, is_psycopg3

from ..pooling import PooledWrapperMixin, creation_class

# The driver-side session flags after autocommit, in the order wsgipool's driver keeps
# them in a connection's connect-time flags.
_FLAGS = (("read_only" if is_psycopg3 else "readonly"), "isolation_level", "deferrable")
# libpq's transaction statuses, the same numbers in both drivers.
_IDLE, _INTRANS, _INERROR = 0, 2, 3


class DatabaseWrapper(PooledWrapperMixin, base.DatabaseWrapper):
    """Django's PostgreSQL ``DatabaseWrapper``, its connections from a wsgipool pool."""

    pool_url = "postgresql+psycopg://" if is_psycopg3 else "postgresql://"
    creation_class = creation_class(base.DatabaseWrapper.creation_class)

    def adopt_connection(self, entry: Any) -> None:
        level = self.settings_dict["OPTIONS"].get("isolation_level")
        self.isolation_level = (IsolationLevel.READ_COMMITTED if level is None
                                else IsolationLevel(level))

    def open_real_connection(self, params: Any) -> Any:
        conn = super().open_real_connection(params)
        if is_psycopg3:
            # psycopg warns about an open connection garbage collected unless a pool
            # owns it: a process exiting (or a forked child dropping its parent's) is normal.
            conn._pool = None
        return conn

    def prepare_return(self, entry: Any) -> None:
        # A request that set the driver's isolation level, read-only or deferrable flag
        # must not hand it to the next. Each is local (no round trip), but the drivers
        # accept a change only outside a transaction: one left open is rolled back
        # first, as the pool would have done anyway.
        conn = entry.conn
        if conn.closed:
            return
        changed = [(name, value) for name, value in zip(_FLAGS, entry.flags[1:])
                   if getattr(conn, name) != value]
        if not changed:
            return
        status = conn.info.transaction_status
        if status in (_INTRANS, _INERROR):
            try:
                conn.rollback()
            except Exception:  # the session is gone: the pool's return discards it (a
                return  # close must not raise, as Django's own close of it does not)
            status = conn.info.transaction_status
        if status != _IDLE:  # busy, or still in a transaction: the pool decides
            return
        for name, value in changed:
            setattr(conn, name, value)
