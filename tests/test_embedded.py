"""Outside any embedding server, wsgipool imports nothing of theirs and installs nothing."""

import subprocess
import sys


def test_plain_python_imports_no_server_module_and_installs_nothing():
    code = (
        "import sys, wsgipool, wsgipool.pool as p, wsgipool.embedded as e\n"
        "pool = wsgipool.Pool('sqlite://')\n"
        "with pool.connection() as conn: conn.execute('SELECT 1')\n"
        "found = {'mod_wsgi', 'mod_python', '_apache', 'uwsgi', 'gunicorn'} & set(sys.modules)\n"
        "hooks = [f for f in p.ON_POOL_CREATED if f.__module__ == 'wsgipool.embedded']\n"
        "print(sorted(found), e.running_in(), e._installed, len(hooks))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]", "None", "False", "0"]
