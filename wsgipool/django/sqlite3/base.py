"""``ENGINE = "wsgipool.django.sqlite3"``: Django's SQLite backend on a pool.

A database in memory is not pooled (each connection would be another database): Django's
own behaviour applies, as it does for the test database Django makes in memory.
``OPTIONS["timeout"]`` is both sqlite3's busy timeout and the pool's checkout timeout.
"""

from __future__ import annotations

from django.db.backends.sqlite3 import base

from ..pooling import PooledWrapperMixin, creation_class


class DatabaseWrapper(PooledWrapperMixin, base.DatabaseWrapper):
    """Django's SQLite ``DatabaseWrapper``, its connections from a wsgipool pool."""

    pool_url = "sqlite://"
    shared_options = frozenset({"timeout"})
    creation_class = creation_class(base.DatabaseWrapper.creation_class)

    def pool_applies(self) -> bool:
        return super().pool_applies() and not self.is_in_memory_db()
