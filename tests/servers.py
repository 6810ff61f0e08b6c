"""Start and stop real server processes for the tests, always by their own pid."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url, timeout=10, data=None):
    """(status, body) of one request; HTTP errors are answers too."""
    try:
        with urllib.request.urlopen(url, data=data, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


class Server:
    """A server process started for one test: ``with Server(...) as server:``."""

    #: The signal that stops the server gracefully.
    stop_signal = signal.SIGTERM

    def __init__(self, command, port, cwd=ROOT, env=None, log_path=None):
        self.port = port
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        environment = dict(os.environ, **(env or {}))
        environment["PYTHONPATH"] = os.pathsep.join(
            filter(None, [ROOT, os.path.join(ROOT, "tests"), environment.get("PYTHONPATH")]))
        self._log = open(log_path, "wb") if log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(command, cwd=cwd, env=environment,
                                        stdout=self._log, stderr=self._log)

    def __enter__(self):
        self.wait_ready()
        return self

    def __exit__(self, *exc_info):
        self.stop()

    def wait_ready(self, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early ({self.process.returncode}): "
                                   f"{self.log()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("server did not start listening")

    def signal(self, signum):
        self.process.send_signal(signum)

    def stop(self, timeout=20):
        """The graceful stop signal, then SIGKILL if it lingers; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self._log is not subprocess.DEVNULL:
            self._log.close()
            self._log = subprocess.DEVNULL
        return self.process.returncode

    def log(self):
        if not self.log_path:
            return ""
        with open(self.log_path, "rb") as handle:
            return handle.read().decode("utf-8", "replace")


class Gunicorn(Server):
    """A gunicorn master; every one gets ``--no-control-socket`` and a free loopback port."""

    def __init__(self, app, *args, cwd=ROOT, env=None, log_path=None):
        port = free_port()
        command = [os.path.join(BIN, "gunicorn"), "--no-control-socket",
                   "-b", f"127.0.0.1:{port}", *args, app]
        super().__init__(command, port, cwd=cwd, env=env, log_path=log_path)


class Uwsgi(Server):
    """A uWSGI master (the pyuwsgi wheel's ``uwsgi``), serving HTTP on a free port."""

    stop_signal = signal.SIGINT  # uWSGI's graceful shutdown; SIGTERM means reload

    def __init__(self, module, *args, cwd=ROOT, env=None, log_path=None):
        port = free_port()
        command = [os.path.join(BIN, "uwsgi"), "--http-socket", f"127.0.0.1:{port}",
                   "--master", "--module", module, *args]
        super().__init__(command, port, cwd=cwd, env=env, log_path=log_path)
