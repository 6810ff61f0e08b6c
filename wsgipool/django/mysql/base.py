"""``ENGINE = "wsgipool.django.mysql"``: Django's MySQL/MariaDB backend (mysqlclient) on a
pool."""

from __future__ import annotations

from typing import Any, Dict
from urllib.parse import quote

from django.db.backends.mysql import base

from ...mysql import tracked_mysql_connection_class
from ..pooling import PooledWrapperMixin, creation_class


class DatabaseWrapper(PooledWrapperMixin, base.DatabaseWrapper):
    """Django's MySQL ``DatabaseWrapper``, its connections from a wsgipool pool."""

    pool_url = "mysql://"
    creation_class = creation_class(base.DatabaseWrapper.creation_class)

    def make_pool_url(self) -> str:
        # reset="session" logs in again as the same user (COM_CHANGE_USER): the driver
        # needs the user, password and database, which Django takes from USER, PASSWORD
        # and NAME or from OPTIONS (mysqlclient's own keywords, older and newer names).
        params = self.get_connection_params()
        user = quote(str(params.get("user") or ""), safe="")
        password = quote(str(params.get("password") or params.get("passwd") or ""), safe="")
        database = quote(str(params.get("database") or params.get("db") or ""), safe="")
        credentials = f"{user}:{password}@" if password else f"{user}@" if user else ""
        return f"mysql://{credentials}localhost/{database}"

    def open_real_connection(self, params: Dict[str, Any]) -> Any:
        # Django's get_new_connection(), with wsgipool's connection class, which notes
        # whether a statement ran: an idle return then costs no round trip.
        connection = tracked_mysql_connection_class()(**params)
        if connection.encoders.get(bytes) is bytes:
            connection.encoders.pop(bytes)
        connection._wsgipool_init_command_ran = True  # mysqlclient ran it as it connected
        return connection

    def _set_up_connection(self, conn: Any) -> None:
        # After reset="session" (COM_CHANGE_USER) the server's session is new, but
        # mysqlclient runs OPTIONS["init_command"] only when it connects: run it here,
        # before Django's own setup, as at connect.
        init_command = self.settings_dict["OPTIONS"].get("init_command")
        if init_command and not getattr(conn, "_wsgipool_init_command_ran", False):
            with conn.cursor() as cursor:
                cursor.execute(init_command)
        conn._wsgipool_init_command_ran = False  # the next setup follows a reset
        super()._set_up_connection(conn)
