"""wsgipool against its peers, on the real servers; the report goes to benchmarks/results/latest.md.

    python -m benchmarks [--quick] [--only cycle,middleware,contention,e2e,servers,remote]
    python benchmarks/run.py ...

Sections: ``cycle`` (checkout + return, one thread), ``middleware`` (what PoolMiddleware
adds to a request), ``contention`` (8 and 32 threads on a pool of 4), ``e2e`` (gunicorn
and wrk), ``servers`` (the same app under gunicorn, uWSGI and Apache mod_wsgi), ``remote``
(the pools end to end with 1 ms to the database, through benchmarks/latency_proxy.py),
``django`` (round trips and time per request against Django's own connection handling),
``overload`` (300 clients on a pool of 4 under gevent, refused ones retrying at once).
The report starts with the machine and versions, then every target of the
issue and where this run put wsgipool against it, then each section's figures.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

if __name__ == "__main__" and not __package__:  # run as a script: benchmarks/run.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import (  # noqa: E402
    common, contention, cycle, django, e2e, middleware, overload, remote, servers,
)

SECTIONS = {"cycle": cycle.run, "middleware": middleware.run, "contention": contention.run,
            "e2e": e2e.run, "servers": servers.run, "remote": remote.run, "django": django.run,
            "overload": overload.run}
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="wsgipool's benchmarks against its peers, on the real servers.")
    parser.add_argument("--quick", action="store_true",
                        help="short runs, to check that everything works (under a minute)")
    parser.add_argument("--only", default=",".join(SECTIONS), metavar="SECTIONS",
                        help="comma-separated sections to run, of: " + ", ".join(SECTIONS))
    parser.add_argument("--e2e-rounds", type=int, metavar="N",
                        help="interleaved rounds of the end-to-end section (default 3)")
    parser.add_argument("--e2e-seconds", type=int, metavar="S",
                        help="seconds of each wrk run (default 3)")
    parser.add_argument("--overload-seconds", type=float, metavar="S",
                        help="seconds of load per row of the overload section (default 5)")
    parser.add_argument("--e2e-keep-alive", action="store_true",
                        help="let wrk keep its connections open (noisier with gthread: "
                             "how its 8 connections split between the workers varies)")
    parser.add_argument("--remote-rounds", type=int, metavar="N",
                        help="interleaved rounds of the remote section (default 2)")
    parser.add_argument("--remote-seconds", type=int, metavar="S",
                        help="seconds of each of its wrk runs (default 3)")
    parser.add_argument("--remote-delay", type=float, default=0.5, metavar="MS",
                        help="milliseconds the proxy adds each way (default 0.5)")
    args = parser.parse_args(argv)
    for option in ("e2e_rounds", "e2e_seconds", "remote_rounds", "remote_seconds"):
        if getattr(args, option) is not None and getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1")
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown or not chosen:
        parser.error(f"unknown section(s): {', '.join(unknown) or '(none given)'}; "
                     f"known: {', '.join(SECTIONS)}")
    started = time.monotonic()
    head = common.header()
    sections, targets = [], []
    for name in chosen:
        print(f"running {name}...", file=sys.stderr, flush=True)
        began = time.monotonic()
        if name == "e2e":
            section = e2e.run(args.quick, rounds=args.e2e_rounds, seconds=args.e2e_seconds,
                              keep_alive=args.e2e_keep_alive)
        elif name == "remote":
            section = remote.run(args.quick, rounds=args.remote_rounds,
                                 seconds=args.remote_seconds, delay=args.remote_delay / 1e3,
                                 keep_alive=args.e2e_keep_alive)
        elif name == "overload":
            section = overload.run(args.quick, seconds=args.overload_seconds)
        elif name == "servers":
            section = servers.run(args.quick, keep_alive=args.e2e_keep_alive)
        else:
            section = SECTIONS[name](quick=args.quick)
        print(f"  {name}: {time.monotonic() - began:.0f} s", file=sys.stderr, flush=True)
        sections.append(section.markdown)
        targets += section.targets
    elapsed = time.monotonic() - started
    mode = "quick run (smoke test: too short to quote)" if args.quick else "full run"
    report = "\n\n".join([
        "# wsgipool benchmarks",
        head + f"\n- {mode}, sections: {', '.join(chosen)}; took {elapsed:.0f} s",
        "## Targets\n\nRatios come from the same run, contenders measured in interleaved "
        "rounds.\n\n" + common.targets_table(targets),
        "## Figures",
        *sections,
    ]) + "\n"
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "latest.md"), "w", encoding="utf-8") as out:
        out.write(report)
    print(report)
    print(f"written to {os.path.join(RESULTS, 'latest.md')}", file=sys.stderr)


if __name__ == "__main__":
    main()
