"""A real PgBouncer for the tests, configured from the README's pgbouncer.ini.

PgBouncer refuses to run as root; started by root it is told to become ``postgres``
(``-u``), with its files in a directory that user owns. It listens on a free loopback
port and is stopped by its own pid.
"""

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from readme import snippet

BOUNCER_ROLE = "wsgipool_bouncer"  # the role PgBouncer logs in as (README's ini)
RUN_AS = "postgres"


def binary():
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")


class PgBouncer:
    """``with PgBouncer(admin_connect) as bouncer:`` then ``bouncer.url``."""

    def __init__(self, admin_connect, pool_size=2):
        self.admin_connect = admin_connect
        self.pool_size = pool_size
        self.port = _free_port()
        self.dir = tempfile.mkdtemp(prefix="wsgipool-pgbouncer-")
        self.url = f"postgresql://app@127.0.0.1:{self.port}/test"

    def __enter__(self):
        self._ensure_role()
        ini = snippet("pgbouncer-ini")
        ini = re.sub(r"(?m)^listen_port = \d+$", f"listen_port = {self.port}", ini)
        ini = re.sub(r"(?m)^default_pool_size = \d+$",
                     f"default_pool_size = {self.pool_size}", ini)
        # The snippet ends in [pgbouncer]: these lines belong to it.
        ini += (f"unix_socket_dir =\nlogfile = {self.dir}/pgbouncer.log\n"
                f"pidfile = {self.dir}/pgbouncer.pid\nadmin_users = {RUN_AS}\n")
        path = os.path.join(self.dir, "pgbouncer.ini")
        with open(path, "w") as file:
            file.write(ini)
        command = [binary(), path]
        if os.geteuid() == 0:
            user = pwd.getpwnam(RUN_AS)
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            os.chown(path, user.pw_uid, user.pw_gid)
            command[1:1] = ["-u", RUN_AS]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"pgbouncer did not start: {self.log()[-1500:]}")
                time.sleep(0.05)

    def __exit__(self, *exc_info):
        self.stop()

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # immediate shutdown
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self):
        try:
            with open(os.path.join(self.dir, "pgbouncer.log")) as file:
                return file.read()
        except OSError:
            return ""

    def server_sessions(self):
        """Server-side sessions PgBouncer holds open, as PostgreSQL sees them."""
        conn = self.admin_connect()
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s",
                               (BOUNCER_ROLE,))
                return cursor.fetchone()[0]
        finally:
            conn.close()

    def show(self, what):
        """``SHOW <what>`` on PgBouncer's admin console, as a list of dicts."""
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=RUN_AS,
                                dbname="pgbouncer")
        conn.autocommit = True
        try:
            with conn.cursor() as cursor:
                cursor.execute(f"SHOW {what}")
                names = [column[0] for column in cursor.description]
                return [dict(zip(names, row)) for row in cursor.fetchall()]
        finally:
            conn.close()

    def _ensure_role(self):
        conn = self.admin_connect()
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (BOUNCER_ROLE,))
                if cursor.fetchone() is None:
                    cursor.execute(f"CREATE ROLE {BOUNCER_ROLE} LOGIN SUPERUSER")
        finally:
            conn.close()


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
