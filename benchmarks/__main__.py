"""Run the benchmark suite and print one table of figures with the machine description.

    python -m benchmarks                     # every stage
    python -m benchmarks ingest query        # a subset
    python -m benchmarks --quick             # smaller sizes, < 3 minutes
    python -m benchmarks --markdown          # the table as Markdown (docs/benchmarks.md)

Stages: ingest, decode, query, agent, freshness, prometheus. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import traceback

from benchmarks.common import load, machine
from benchmarks.stages import STAGES, Sizes, timestamp_note


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("stages", nargs="*", metavar="STAGE",
                   help=f"subset of: {', '.join(STAGES)} (default: all)")
    p.add_argument("--quick", action="store_true", help="smaller sizes (< 3 minutes)")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = p.parse_args(argv)
    unknown = [s for s in args.stages if s not in STAGES]
    if unknown:
        p.error(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    selected = args.stages or list(STAGES)
    sz = Sizes.quick() if args.quick else Sizes()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)

    m = machine()
    header = (f"fleetlens benchmarks{' (quick)' if args.quick else ''}: {m['cores']} cores "
              f"({m['cpu']}), {m['ram_gib']} GiB RAM, Python {m['python']}, Linux "
              f"{m['kernel']}; start {timestamp_note()}")
    print(header, file=sys.stderr, flush=True)
    rows: list[tuple[str, str, str, str, str]] = []
    fleetlens_cpu = None
    t_all = time.monotonic()
    background = None
    if args.quick and "freshness" in selected and len(selected) > 1:
        # --quick: freshness is mostly waiting for minutes to close; run it alongside the
        # others (it adds a few % of one core to their figures) to stay under 3 minutes.
        import threading

        selected.remove("freshness")
        background = {"load": load()}

        def _fresh() -> None:
            try:
                background["rows"] = STAGES["freshness"](sz)
            except Exception as exc:  # noqa: BLE001
                background["rows"] = [("freshness", "FAILED", "-", repr(exc)[:200])]

        thread = threading.Thread(target=_fresh, daemon=True)
        thread.start()
    for name in selected:
        t0 = time.monotonic()
        load_before = load()
        try:
            args_ = (sz, fleetlens_cpu) if name == "prometheus" else (sz,)
            out = STAGES[name](*args_)
        except Exception as exc:  # noqa: BLE001 - one broken stage must not hide the others
            traceback.print_exc()
            out = [(name, "FAILED", "-", f"{type(exc).__name__}: {exc}"[:200])]
        for stage, figure, value, note in out:
            rows.append((stage, figure, value, note, load_before))
            if stage == "ingest 1 proc" and figure.endswith("pipeline + broker"):
                fleetlens_cpu = float(value)
        print(f"  {name}: {time.monotonic() - t0:.0f} s (load before: {load_before})",
              file=sys.stderr, flush=True)

    if background is not None:
        thread.join()
        rows += [(*r[:3], r[3] + " (ran alongside the other stages)", background["load"])
                 for r in background["rows"]]
    print(header)
    print(f"finished {timestamp_note()}, {time.monotonic() - t_all:.0f} s in all")
    if args.markdown:
        print("\n| stage | figure | value | notes | load avg (1/5/15 min) before |")
        print("|---|---|---|---|---|")
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        w = [max(len(r[i]) for r in rows) if rows else 0 for i in range(3)]
        print(f"{'stage':<{w[0]}}  {'figure':<{w[1]}}  {'value':>{w[2]}}  load before | notes")
        for s, f, v, n, ld in rows:
            print(f"{s:<{w[0]}}  {f:<{w[1]}}  {v:>{w[2]}}  {ld} | {n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
