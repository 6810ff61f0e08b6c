"""Fork safety: a child never uses, closes or finalizes its parent's connections.

Each scenario runs as a real program (tests/scripts/fork_child.py) whose child exits
through ``sys.exit``, so atexit handlers and finalizers run as in a gunicorn worker:
MySQLdb sends ``COM_QUIT`` from a finalizer, which would end the parent's session.
"""

import json
import os
import subprocess
import sys

import pytest

import wsgipool
from test_gunicorn import aborted_mark, assert_none_aborted, wait_gone

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "fork_child.py")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(scenario, url):
    env = dict(os.environ, PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, SCRIPT, scenario, url], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("scenario", [
    pytest.param("use", id="child-uses-the-pool"),
    pytest.param("nohooks-use", id="child-uses-the-pool-without-fork-hooks"),
])
def test_child_opens_its_own_and_the_parent_keeps_its_own(any_server_db, scenario):
    seen = run(scenario, any_server_db.url)
    assert seen["child_exit"] == 0
    assert seen["child"]["sid"] != seen["parent_sid"]
    before = seen["child"]["stats_before"]  # read before the child's first checkout
    assert (before["connects"], before["size"], before["in_use"]) == (0, 0, 0)
    assert before["checkouts"] == before["returns"] == 0
    stats = seen["child"]["stats"]
    assert stats["connects"] == 1  # the child's figures start from zero
    assert stats["discard_reasons"]["fork"] == 1  # it forgot the one it inherited
    assert seen["after_sid"] == seen["parent_sid"]  # the parent's session survived
    assert seen["parent_connects"] == 1


@pytest.mark.parametrize("scenario", [
    pytest.param("idle", id="with-fork-hooks"),
    pytest.param("nohooks-idle", id="without-fork-hooks"),
])
def test_child_that_only_exits_leaves_the_parent_alone(any_server_db, scenario):
    """The MySQLdb trap: merely finalizing an inherited connection sends COM_QUIT."""
    seen = run(scenario, any_server_db.url)
    assert seen["child_exit"] == 0
    assert seen["after_sid"] == seen["parent_sid"]
    assert seen["parent_connects"] == 1


def test_connection_held_across_fork_stays_the_parents(any_server_db):
    seen = run("held", any_server_db.url)
    assert seen["child_exit"] == 0
    assert seen["child"]["sid"] not in (seen["parent_sid"], seen["held_sid"])
    assert seen["child"]["stats"]["returns"] == 1  # its own checkout; not the parent's
    assert seen["held_sid"] is not None and seen["after_sid"] == seen["parent_sid"]


def test_sqlite_child_uses_its_own_connection(sqlite):
    seen = run("use", sqlite.url)
    assert seen["child_exit"] == 0
    assert seen["child"]["stats"]["connects"] == 1
    assert seen["parent_connects"] == 1


def test_pool_made_before_fork_holds_nothing(any_server_db, pools):
    from wsgipool import Pool

    pool = pools(any_server_db.url)
    pid = os.fork()
    if pid == 0:
        os._exit(0)  # the point is what the parent holds, not how the child leaves
    os.waitpid(pid, 0)
    assert pool.stats()["connects"] == 0 and pool.stats()["size"] == 0
    assert isinstance(pool, Pool)


DROP_SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "fork_drop.py")
# The wsgipool this test run imported (the checkout, unless PYTHONPATH says otherwise).
UNDER_TEST = os.path.dirname(os.path.dirname(os.path.abspath(wsgipool.__file__)))


def run_drop(scenario, url, cwd):
    env = dict(os.environ, PYTHONPATH=UNDER_TEST)
    done = subprocess.run([sys.executable, DROP_SCRIPT, scenario, url], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_child_whose_first_act_is_a_checkout_opens_its_own(any_server_db, tmp_path):
    """No stats() first, which would adopt the process: the checkout itself must."""
    seen = run_drop("checkout", any_server_db.url, tmp_path)
    assert (seen["child_exit"], seen["error"]) == (0, None)
    assert seen["child"]["sid"] != seen["parent_sid"]
    assert seen["child"]["stats"]["connects"] == 1
    assert seen["after_sid"] == seen["parent_sid"]
    assert seen["parent_connects"] == 1


def test_child_that_drops_the_inherited_pool_leaves_the_parents_session(any_server_db,
                                                                        tmp_path):
    """The child only lets go of the pool (del, gc): finalizing the inherited connection
    must say nothing on the parent's socket (psycopg2 would send Terminate)."""
    aborted = aborted_mark(any_server_db)
    seen = run_drop("drop-pool", any_server_db.url, tmp_path)
    assert (seen["child_exit"], seen["error"]) == (0, None)
    assert seen["after_sid"] == seen["parent_sid"]
    assert seen["parent_connects"] == 1
    assert wait_gone(any_server_db, [seen["parent_sid"]]) == set()  # the parent closed it
    assert_none_aborted(any_server_db, aborted, [seen["parent_sid"]])


def test_child_finalizing_a_mysqldb_connection_no_pool_detached(mariadb, tmp_path):
    """A tracked MySQLdb connection made directly: the fork hook never saw it, so its
    finalizer must blind the socket before mysqlclient says COM_QUIT on it."""
    aborted = aborted_mark(mariadb)
    seen = run_drop("drop-connection", mariadb.url, tmp_path)
    assert (seen["child_exit"], seen["error"]) == (0, None)
    assert seen["after_sid"] == seen["parent_sid"]
    assert_none_aborted(mariadb, aborted, [seen["parent_sid"]])


def test_child_giving_back_a_checkout_held_across_the_fork_leaves_its_transaction(
        any_server_db, tmp_path):
    """The forking thread's checkout, given back in the child first thing: the fork hook
    made it the parent's, so the pool must not roll it back on the parent's socket."""
    seen = run_drop("checkin-held", any_server_db.url, tmp_path)
    assert (seen["child_exit"], seen["error"]) == (0, None)
    assert seen["rows"] == 1  # the parent's transaction committed its row
    assert seen["after_sid"] == seen["parent_sid"]
