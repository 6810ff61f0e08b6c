"""Apache httpd for the tests: mod_wsgi (embedded or daemon mode) or mod_python, on the
prefork, worker or event MPM, configured from the README's snippets (see ``SITES``).

Apache's children run as ``www-data``, which cannot read a Python installed under
``/root``: the Python code runs in a virtual environment of the system Python
(``/usr/bin/python3``, which mod_python is built for too), made on first use with
mod_wsgi built for that Python and the drivers; the app and this checkout's wsgipool
are copied to a directory www-data can read. Every Apache listens on a free loopback
port, writes its files to a directory of its own, and is signalled by its own pid,
never by name.
"""

import glob
import os
import shutil
import signal
import socket
import string
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.join(ROOT, "tests", "apache")
HTTPD = "/usr/sbin/apache2"
MODULES = "/usr/lib/apache2/modules"
SYSTEM_PYTHON = "/usr/bin/python3"
# Outside the checkout, which www-data may not be able to read (under /root, say); kept
# between runs, since building it takes a minute.
SYSTEM_VENV = os.environ.get("WSGIPOOL_SYSTEM_VENV", "/var/tmp/wsgipool-venv-system")
RUN_AS = "www-data"


def missing():
    """What is not installed for the Apache tests, as an install command; or None."""
    needs = []
    if not os.path.exists(HTTPD):
        needs.append("apt-get install apache2 apache2-dev")
    if not os.path.exists(os.path.join(MODULES, "mod_python.so")):
        needs.append("apt-get install libapache2-mod-python")
    if not os.path.exists(SYSTEM_PYTHON):
        needs.append("apt-get install python3 python3-dev python3-venv")
    return "; ".join(needs) or None


def system_venv():
    """The system-Python virtual environment with mod_wsgi and the drivers; made once."""
    python = os.path.join(SYSTEM_VENV, "bin", "python")
    if not os.path.exists(os.path.join(SYSTEM_VENV, "bin", "mod_wsgi-express")):
        subprocess.run([SYSTEM_PYTHON, "-m", "venv", SYSTEM_VENV], check=True, timeout=120)
        # Built here, for this Python: no wheel cached from another Python's build, and
        # no other Python on PATH for mod_wsgi's build to find (it would link to it).
        env = dict(os.environ, PATH="/usr/sbin:/usr/bin:/sbin:/bin")
        pip = [python, "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "psycopg2-binary", "mysqlclient"], check=True, timeout=900,
                       env=env)
        subprocess.run([*pip, "--no-cache-dir", "mod_wsgi"], check=True, timeout=900, env=env)
    return SYSTEM_VENV


def site_packages(venv):
    """The venv's site-packages, for the system Python's version (not this one's)."""
    (found,) = glob.glob(os.path.join(venv, "lib", "python3*", "site-packages"))
    return found


def mod_wsgi_module(venv):
    out = subprocess.run([os.path.join(venv, "bin", "mod_wsgi-express"), "module-config"],
                         check=True, capture_output=True, text=True).stdout
    return out.split('"')[1]  # LoadModule wsgi_module "<path>"


MPM = {
    "prefork": """LoadModule mpm_prefork_module {modules}/mod_mpm_prefork.so
StartServers {processes}
MinSpareServers {processes}
MaxSpareServers {processes}
ServerLimit {processes}
MaxRequestWorkers {processes}
MaxConnectionsPerChild {max_connections_per_child}
""",
    "worker": """LoadModule mpm_worker_module {modules}/mod_mpm_worker.so
StartServers {processes}
ServerLimit {processes}
ThreadsPerChild {threads}
MaxRequestWorkers {workers}
MinSpareThreads {threads}
MaxSpareThreads {workers}
MaxConnectionsPerChild {max_connections_per_child}
""",
    "event": """LoadModule mpm_event_module {modules}/mod_mpm_event.so
StartServers {processes}
ServerLimit {processes}
ThreadsPerChild {threads}
MaxRequestWorkers {workers}
MinSpareThreads {threads}
MaxSpareThreads {workers}
MaxConnectionsPerChild {max_connections_per_child}
""",
}

COMMON = """ServerRoot {dir}
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile {dir}/httpd.pid
ErrorLog {dir}/error.log
LogLevel {log_level}
DefaultRuntimeDir {dir}
Mutex file:{dir} default
User {user}
Group {user}
KeepAlive Off
LoadModule authz_core_module {modules}/mod_authz_core.so
LoadModule env_module {modules}/mod_env.so
"""


# The README's configurations, and what the tests put in place of its example paths
# and values. The lines the README leaves to mod_wsgi-express / a2enmod come first.
SITES = {
    "mod_wsgi_daemon": ("apache-mod-wsgi-daemon", (
        "LoadModule wsgi_module ${mod_wsgi}\nWSGIPythonHome ${venv}\n"
        "WSGISocketPrefix ${dir}/wsgi\n"), [
        ("processes=2 threads=4",
         "processes=2 threads=4 maximum-requests=${maximum_requests} graceful-timeout=5"),
    ]),
    "mod_wsgi_embedded": ("apache-mod-wsgi-embedded", (
        "LoadModule wsgi_module ${mod_wsgi}\nWSGIPythonHome ${venv}\n"), []),
    "mod_python": ("apache-mod-python", (
        "LoadModule python_module ${modules}/mod_python.so\n"), [
        ("/srv/myapp/venv/lib/python3.11/site-packages", "${site_packages}"),
    ]),
}
EXAMPLE_VALUES = [("/srv/myapp", "${apps}"), ("postgresql://app@db/app", "${url}"),
                  ("WSGIPOOL_MAX_SIZE 4", "WSGIPOOL_MAX_SIZE ${max_size}")]


def site_template(site):
    """The configuration for ``site``: a README snippet (see SITES) or, for a variant
    the README only describes, ``tests/apache/<site>.conf``."""
    if site not in SITES:
        with open(os.path.join(HERE, site + ".conf")) as file:
            return file.read()
    name, preamble, replacements = SITES[site]
    from readme import snippet

    text = snippet(name)
    for example, value in replacements + EXAMPLE_VALUES:
        text = text.replace(example, value)
    return preamble + text


class Apache:
    """One Apache, in the foreground under this test: ``with Apache(site, ...) as httpd``.

    ``site``: ``mod_wsgi_daemon``, ``mod_wsgi_embedded``, ``mod_python`` (the README's
    configurations) or a variant in tests/apache/, filled with ``settings`` (``url``,
    ``max_size``...) and the paths.
    """

    def __init__(self, site, mpm="prefork", processes=2, threads=4,
                 max_connections_per_child=0, **settings):
        self.dir = tempfile.mkdtemp(prefix="wsgipool-apache-")
        os.chmod(self.dir, 0o755)
        # What /srv/myapp holds in the README: the app, and here this checkout's
        # wsgipool beside it, copied where www-data can read them.
        apps = os.path.join(self.dir, "myapp")
        shutil.copytree(os.path.join(ROOT, "wsgipool"), os.path.join(apps, "wsgipool"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(os.path.join(HERE, "app.py"), apps)
        for path, dirs, files in os.walk(apps):
            os.chmod(path, 0o755)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        venv = system_venv()
        values = dict(
            dir=self.dir, port=self.port, modules=MODULES, user=RUN_AS, processes=processes,
            threads=threads if mpm != "prefork" else 1,
            workers=processes * (threads if mpm != "prefork" else 1),
            max_connections_per_child=max_connections_per_child, log_level="info",
            venv=venv, site_packages=site_packages(venv), apps=apps,
            mod_wsgi=mod_wsgi_module(venv) if "wsgi" in site else "",
        )
        values.update(settings)
        site_conf = string.Template(site_template(site)).substitute(values)
        self.config = COMMON.format(**values) + MPM[mpm].format(**values) + site_conf
        self.config_path = os.path.join(self.dir, "httpd.conf")
        with open(self.config_path, "w") as file:
            file.write(self.config)
        self.process = None

    def __enter__(self):
        with open(os.path.join(self.dir, "stderr"), "wb") as stderr:
            self.process = subprocess.Popen(
                [HTTPD, "-f", self.config_path, "-DFOREGROUND"],
                env={"PATH": "/usr/sbin:/usr/bin:/bin", "LANG": "C.UTF-8"},
                stdout=subprocess.DEVNULL, stderr=stderr,
                start_new_session=True)  # Apache signals its whole process group
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = self.log()
                    self.stop()
                    raise RuntimeError(f"apache did not start: {log[-3000:]}")
                time.sleep(0.05)

    def __exit__(self, *exc_info):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def signal(self, signum):
        self.process.send_signal(signum)

    def graceful_restart(self):
        """``apachectl -k graceful``: SIGUSR1 to the parent."""
        self.signal(signal.SIGUSR1)

    def stop(self, graceful=False, timeout=20):
        """``-k graceful-stop`` (SIGWINCH) or ``-k stop`` (SIGTERM) to the parent's pid."""
        if self.process is None or self.process.poll() is not None:
            return
        self.signal(signal.SIGWINCH if graceful else signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def log(self):
        text = ""
        for name in ("stderr", "error.log"):
            try:
                with open(os.path.join(self.dir, name), errors="replace") as file:
                    text += file.read()
            except OSError:
                pass
        return text


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
