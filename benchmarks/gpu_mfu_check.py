"""Does the NVML source's MFU estimate match real work? A one-minute check on a Hopper GPU.

    .venv/bin/pip install torch            # any CUDA build of PyTorch
    .venv/bin/python benchmarks/gpu_mfu_check.py [--device 0] [--seconds 18] \
        [--sizes 2048,4096,8192]

While the fleetlens NvmlSource samples the GPU once a second in a background thread (GPM
profiling metrics between consecutive samples), the main thread runs a bf16 matrix-multiply
loop of known FLOPs (2 n^3 per n x n @ n x n product) at three sizes, `--seconds` each. Per
size it prints

* the agent's mean `tensor_active` and `sm_clock_mhz` over the samples whose whole GPM
  interval lies inside the loop (the first second of each size is left out as ramp-up);
* the agent's MFU estimate: the mean over those samples of tensor_active x sm_clock_mhz /
  spec_clock_mhz, clamped to [0, 1] (README "Definitions"; spec clock from the GPU catalog);
* the true MFU: achieved TFLOPS (matmuls completed x 2 n^3 / elapsed seconds, with the GPU
  synchronised at both ends) / the catalog's dense BF16 peak.

Without PyTorch, a CUDA device, NVML, GPM support (pre-Hopper) or a catalog entry for the GPU
it prints one line saying which, and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

EXIT_UNAVAILABLE = 2


def fail(msg: str) -> int:
    print(f"gpu_mfu_check: {msg}", file=sys.stderr)
    return EXIT_UNAVAILABLE


class Sampler(threading.Thread):
    """Calls source.collect every interval_s; keeps (window_start, window_end, sample) for
    one GPU, the window being the time the sample's GPM figures cover (previous collect ->
    this one, on the monotonic clock)."""

    def __init__(self, source, uuid: str, interval_s: float, last_collect: float):
        super().__init__(daemon=True)
        self.source, self.uuid, self.interval_s = source, uuid, interval_s
        self.last_collect = last_collect  # when the source was last asked (its GPM sample)
        self.stop = threading.Event()
        self.records: list[tuple[float, float, dict]] = []

    def run(self) -> None:
        prev = self.last_collect
        next_at = time.monotonic() + self.interval_s
        while not self.stop.wait(max(0.0, next_at - time.monotonic())):
            next_at += self.interval_s
            [(_node, samples)] = self.source.collect(time.time(), self.interval_s)
            now = time.monotonic()
            for s in samples:
                if s["uuid"] == self.uuid and s["mig_instance"] is None:
                    self.records.append((prev, now, s))
            prev = now


def matmul_phase(torch, device, n: int, seconds: float) -> tuple[float, float, float]:
    """Run bf16 n x n matmuls for `seconds`; returns (start, end, achieved TFLOPS) with start
    and end on the monotonic clock."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    c = torch.empty(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(10):  # cuBLAS heuristics, clocks up
        torch.matmul(a, b, out=c)
    torch.cuda.synchronize(device)
    batch = max(1, int(10e12 // (2 * n**3)))  # ~10 TFLOP between synchronisations (~15 ms)
    done = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        for _ in range(batch):
            torch.matmul(a, b, out=c)
        torch.cuda.synchronize(device)
        done += batch
    end = time.monotonic()
    return start, end, done * 2 * n**3 / (end - start) / 1e12


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", type=int, default=0, help="CUDA device index")
    p.add_argument("--seconds", type=float, default=18.0, help="seconds per matrix size")
    p.add_argument("--sizes", default="2048,4096,8192", help="matrix sizes, comma separated")
    p.add_argument("--interval", type=float, default=1.0, help="agent sampling interval (s)")
    args = p.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]

    try:
        import torch
    except ImportError:
        return fail("PyTorch is not installed (pip install torch); nothing was measured")
    if not torch.cuda.is_available():
        return fail("no CUDA GPU is visible to PyTorch; nothing was measured")
    device = torch.device("cuda", args.device)

    from fleetlens.collectors.nvml import NvmlSource
    from fleetlens.pipeline.catalog import lookup

    try:
        source = NvmlSource(node="gpu-mfu-check")
    except RuntimeError as exc:
        return fail(str(exc))
    try:
        return run(torch, device, source, lookup, sizes, args)
    finally:
        source.close()


def run(torch, device, source, lookup, sizes: list[int], args) -> int:
    # Match the CUDA device to its NVML GPU by UUID (indices can differ between the two).
    props = torch.cuda.get_device_properties(device)
    cuda_uuid = getattr(props, "uuid", None)
    [(_node, first)] = source.collect(time.time(), args.interval)  # also primes GPM
    last_collect = time.monotonic()
    whole = [s for s in first if s["mig_instance"] is None]
    if cuda_uuid is not None:
        mine = [s for s in whole if s["uuid"] == f"GPU-{cuda_uuid}"]
    else:  # old PyTorch: fall back to the index, which is right unless CUDA reorders GPUs
        mine = [s for s in whole if s["gpu"] == args.device]
    if not mine:
        return fail(f"CUDA device {args.device} ({props.name}) is not a whole GPU seen by NVML "
                    "(MIG mode, or CUDA_VISIBLE_DEVICES reorders GPUs?)")
    gpu = mine[0]
    spec = lookup(gpu["model"])
    if spec is None or not spec.bf16_dense_tflops or not spec.spec_clock_mhz:
        return fail(f"{gpu['model']!r} has no dense BF16 peak / spec clock in the GPU catalog")
    print(f"GPU {gpu['gpu']} {gpu['model']} ({gpu['uuid']}): catalog {spec.model_key}, dense "
          f"BF16 peak {spec.bf16_dense_tflops:g} TFLOPS at spec clock {spec.spec_clock_mhz:g} "
          f"MHz", flush=True)

    sampler = Sampler(source, gpu["uuid"], args.interval, last_collect)
    sampler.start()
    phases = []
    try:
        for n in sizes:
            print(f"  running {n}x{n} bf16 matmuls for {args.seconds:g} s ...", flush=True)
            phases.append((n, *matmul_phase(torch, device, n, args.seconds)))
            time.sleep(2 * args.interval)  # let the sample covering the end arrive
    finally:
        sampler.stop.set()
        sampler.join()

    print()
    print(f"{'size':>6} {'samples':>7} {'tensor_active':>13} {'sm_clock_mhz':>12} "
          f"{'MFU est (agent)':>15} {'TFLOPS':>8} {'MFU true':>8} {'est/true':>8}")
    no_gpm = True
    for n, start, end, tflops in phases:
        inside = [s for (w0, w1, s) in sampler.records if w0 >= start + 1.0 and w1 <= end]
        tensor = [s["tensor_active"] for s in inside if s["tensor_active"] is not None]
        clocks = [s["sm_clock_mhz"] for s in inside if s["sm_clock_mhz"] is not None]
        ests = [min(1.0, max(0.0, s["tensor_active"] * (
            s["sm_clock_mhz"] / spec.spec_clock_mhz if s["sm_clock_mhz"] is not None else 1.0)))
            for s in inside if s["tensor_active"] is not None]
        true_mfu = tflops / spec.bf16_dense_tflops
        no_gpm &= not tensor
        fmt = lambda xs, f: f.format(sum(xs) / len(xs)) if xs else "n/a"  # noqa: E731
        est = sum(ests) / len(ests) if ests else None
        ratio = f"{est / true_mfu:8.2f}" if est is not None and true_mfu > 0 else f"{'n/a':>8}"
        print(f"{n:>6} {len(inside):>7} {fmt(tensor, '{:.3f}'):>13} {fmt(clocks, '{:.0f}'):>12} "
              f"{fmt(ests, '{:.3f}'):>15} {tflops:8.1f} {true_mfu:8.3f} {ratio}")
    if no_gpm:
        print("\nno tensor_active from the agent: GPM is Hopper+ only (or not enabled here)",
              file=sys.stderr)
    counters = {k: v for k, v in source.counters().items() if k.startswith(("nvml_errors", "gpm"))}
    print(f"\nagent counters: {counters}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
