"""Run the benchmarks and write the report: ``python -m benchmarks [--quick] [--only ...]``."""

import argparse
import os
import sys

from . import common, contention, cycle, e2e, middleware

SECTIONS = {"cycle": cycle.run, "middleware": middleware.run, "contention": contention.run,
            "e2e": e2e.run}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs, for a smoke test")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help="comma-separated sections: " + ", ".join(SECTIONS))
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s): {', '.join(unknown)}")
    parts = ["# wsgipool benchmarks", common.header()]
    for name in chosen:
        print(f"running {name}...", file=sys.stderr, flush=True)
        parts.append(SECTIONS[name](quick=args.quick))
    report = "\n\n".join(parts) + "\n"
    out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "latest.md"), "w") as handle:
        handle.write(report)
    print(report)


if __name__ == "__main__":
    main()
