"""Where a pool cycle's time goes: wsgipool's ``with pool.connection()`` and raw
checkout + checkin beside psycopg2's pool.

    python -m benchmarks.profile_cycle                 # cProfile, every loop, by own time
    valgrind --tool=callgrind --callgrind-out-file=cycle.cg -- \\
        python -m benchmarks.profile_cycle --loop wsgipool --seconds 2

cProfile inflates every Python call alike, so read its figures as proportions.
callgrind counts instructions, which the other processes on a shared machine do not
change: run a loop for two lengths and subtract to get instructions per cycle (system
calls count for nothing there: wsgipool makes none per cycle).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from typing import Any, Callable, Dict, Tuple

from .common import URLS, connect_args

Pair = Tuple[Callable[[], Any], Callable[[Any], None]]


def pools() -> Dict[str, Pair]:
    import psycopg2.pool

    from wsgipool import Pool

    ours = Pool(URLS["postgresql"], max_size=4)
    theirs = psycopg2.pool.ThreadedConnectionPool(4, 4, **connect_args("postgresql"))
    return {"wsgipool": (ours.checkout, ours.checkin),
            "wsgipool-with": (ours.connection, None),
            "psycopg2": (theirs.getconn, theirs.putconn)}


def cycles(pair: Pair, n: int) -> None:
    get, put = pair
    if put is None:  # a context manager's factory: the documented with-statement
        for _ in range(n):
            with get():
                pass
        return
    for _ in range(n):
        put(get())


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_cycle",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--loop", choices=("wsgipool", "wsgipool-with", "psycopg2"),
                        help="only cycle this pool for --seconds (for py-spy), no cProfile")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--cycles", type=int, default=200_000, help="cycles under cProfile")
    args = parser.parse_args()
    found = pools()
    if args.loop:
        pair, done = found[args.loop], 0
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            cycles(pair, 10_000)
            done += 10_000
        print(f"{args.loop}: {done} cycles, {args.seconds * 1e6 / done:.2f} µs each")
        return
    for name, pair in found.items():
        cycles(pair, 1000)  # warm up
        profile = cProfile.Profile()
        profile.enable()
        cycles(pair, args.cycles)
        profile.disable()
        print(f"=== {name}: {args.cycles} cycles")
        pstats.Stats(profile).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
