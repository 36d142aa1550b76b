"""A simulated GPU fleet: deterministic from a seed, fast enough to backfill a week in seconds.

Why a simulator: the pipeline, reports and alerts must be exercised on realistic fleet shapes
(training at 30-55 % tensor activity, bursty inference, GPUs allocated but idle with or without
memory held, free GPUs, XIDs, thermal throttling) on machines without GPUs.

Every value is a pure function of (seed, node, gpu, time): the same query gives the same
sample in live mode and in backfill, and the allocation ledger the simulator exports agrees
with the samples it emits. Time is cut into UTC days; each node's day is split into segments
(whole-node training job, per-GPU mixed use, or free), drawn from a RNG seeded by
(seed, node, day).
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterator
from dataclasses import dataclass

DAY = 86400

# (NVML name, framebuffer MiB, TDP W, max SM clock MHz). The last entry is a model that the
# GPU catalog does not know, so that unknown-model handling is exercised end to end.
MODELS = {
    "h100": ("NVIDIA H100 80GB HBM3", 81559.0, 700.0, 1980.0),
    "a100": ("NVIDIA A100-SXM4-80GB", 81920.0, 400.0, 1410.0),
    "h200": ("NVIDIA H200", 143771.0, 700.0, 1980.0),
    "unknown": ("NVIDIA RTX PRO 6000 Blackwell Server Edition", 97887.0, 600.0, 2617.0),
}

TENANT_NAMES = ["acme-ai", "borealis-labs", "cobalt-research", "delta-vision", "ember-inference",
                "fjord-ml", "granite-llm", "harbor-bio", "iris-robotics", "juniper-speech"]

# XID codes the simulator emits, with weights: application errors are common, hardware rare.
XIDS = [(13, 5), (31, 5), (43, 4), (48, 1), (79, 1)]

THROTTLE_SW_THERMAL = 0x20
THROTTLE_HW_THERMAL = 0x40


def _mix(*parts: int) -> int:
    """SplitMix64 over a tuple of ints: cheap, stateless, stable across processes."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (p & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 27)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x


def _unit(*parts: int) -> float:
    return _mix(*parts) / 2**64


def _noise(h: int, k: int) -> float:
    """The k-th uniform number derived from hash h (one multiply instead of a full mix)."""
    x = (h + k * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    return (x ^ (x >> 27)) / 2**64


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    kind: str  # train | infer | idle_held | idle_empty | free
    tenant: str | None
    via_ledger: bool  # False: the tenant is only known from the sample's namespace
    level: float  # job-specific activity level (tensor activity for training)
    job: str | None


@dataclass(frozen=True)
class Node:
    index: int
    name: str
    model_key: str


class FleetSim:
    def __init__(self, seed: int = 42, nodes: int = 32, gpus_per_node: int = 8,
                 tenants: int = 5, cluster: str = "sim-1"):
        if tenants > len(TENANT_NAMES):
            raise ValueError(f"the simulator knows at most {len(TENANT_NAMES)} tenants")
        self.seed = seed
        self.gpus_per_node = gpus_per_node
        self.cluster = cluster
        self.tenants = TENANT_NAMES[:tenants]
        # The last tenant runs on Kubernetes without a ledger: known through `namespace` only.
        self.namespace_tenant = self.tenants[-1] if tenants >= 2 else None
        self.nodes = [self._make_node(i, nodes) for i in range(nodes)]
        self._by_name = {n.name: n for n in self.nodes}
        self._day_cache: dict[tuple[int, int], list[list[Segment]]] = {}
        self._starts_cache: dict[tuple[int, int], list[float]] = {}
        self._node_hash = [_mix(self.seed, 14, n.index) for n in self.nodes]
        self._gpu_hash = {(n.index, g): _mix(self.seed, 15, n.index, g) for n in self.nodes
                          for g in range(gpus_per_node)}
        self._uuids = {(n.index, g): self._make_uuid(n, g) for n in self.nodes
                       for g in range(gpus_per_node)}

    # -- fleet shape -------------------------------------------------------------------------
    def _make_node(self, i: int, total: int) -> Node:
        if total >= 16 and i == total - 1:
            key = "unknown"
        else:
            u = _unit(self.seed, 1, i)
            key = "h100" if u < 0.5 else "a100" if u < 0.8 else "h200"
        return Node(i, f"gpu-node-{i:03d}", key)

    def uuid(self, node: Node, gpu: int) -> str:
        return self._uuids[(node.index, gpu)]

    def _make_uuid(self, node: Node, gpu: int) -> str:
        h = f"{_mix(self.seed, 2, node.index, gpu):016x}{_mix(self.seed, 3, node.index, gpu):016x}"
        return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"

    # -- timelines ---------------------------------------------------------------------------
    def _segments(self, node: Node, day: int) -> list[list[Segment]]:
        """Per GPU, the ordered segments covering UTC day `day` on this node."""
        key = (node.index, day)
        cached = self._day_cache.get(key)
        if cached is not None:
            return cached
        rng = random.Random(_mix(self.seed, 4, node.index, day))
        per_gpu: list[list[Segment]] = [[] for _ in range(self.gpus_per_node)]
        t = float(day * DAY)
        end_of_day = t + DAY
        seq = 0
        while t < end_of_day:
            dur = rng.choice([2, 3, 4, 6, 8, 10]) * 3600.0
            end = min(t + dur, end_of_day)
            r = rng.random()
            if r < 0.45:  # one training job over the whole node
                tenant = rng.choice(self.tenants)
                level = rng.uniform(0.30, 0.55)
                job = f"{day}{node.index:03d}{seq:02d}"
                for g in range(self.gpus_per_node):
                    per_gpu[g].append(self._seg(t, end, "train", tenant, level, job))
            elif r < 0.80:  # GPUs used one by one
                for g in range(self.gpus_per_node):
                    kind = rng.choices(["infer", "idle_held", "idle_empty", "free"],
                                       [0.5, 0.2, 0.1, 0.2])[0]
                    tenant = None if kind == "free" else rng.choice(self.tenants)
                    level = rng.uniform(0.05, 0.25)
                    per_gpu[g].append(self._seg(t, end, kind, tenant, level, None))
            else:
                for g in range(self.gpus_per_node):
                    per_gpu[g].append(self._seg(t, end, "free", None, 0.0, None))
            t = end
            seq += 1
        if len(self._day_cache) > 4 * len(self.nodes):
            self._day_cache.clear()
            self._starts_cache.clear()
        self._day_cache[key] = per_gpu
        self._starts_cache[key] = [s.start for s in per_gpu[0]]
        return per_gpu

    def _seg(self, start: float, end: float, kind: str, tenant: str | None, level: float,
             job: str | None) -> Segment:
        via_ledger = tenant is not None and tenant != self.namespace_tenant
        return Segment(start, end, kind, tenant, via_ledger, level, job)

    def segment_at(self, node: Node, gpu: int, t: float) -> Segment:
        day = int(t // DAY)
        segs = self._segments(node, day)[gpu]
        i = bisect.bisect_right(self._starts_cache[(node.index, day)], t) - 1
        return segs[max(i, 0)]

    # -- samples -----------------------------------------------------------------------------
    def sample(self, node: Node, gpu: int, t: float, interval_s: float) -> dict:
        name, fb_total, tdp, max_clock = MODELS[node.model_key]
        seg = self.segment_at(node, gpu, t)
        ti = int(t)
        gh = self._gpu_hash[(node.index, gpu)]
        h = _mix(gh, ti)
        n = lambda k: _noise(h, k)  # noqa: E731
        minute = ti // 60
        clock = max_clock
        throttle = 0
        temp = 32 + 6 * n(1)
        if seg.kind == "train":
            # A checkpoint pause of ~2 minutes every ~40 minutes: the job holds the GPU idle.
            pausing = _noise(self._node_hash[node.index] ^ (minute // 2), 6) < 0.05
            if pausing:
                util, sm, tensor = 0.0, 0.0, 0.0
                power = 0.18 * tdp + 15 * n(2)
            else:
                tensor = min(0.95, max(0.0, seg.level + 0.03 * (n(3) - 0.5)))
                sm = min(1.0, 0.25 + tensor * 1.2 + 0.04 * n(4))
                util = 96 + 4 * n(5)
                power = tdp * (0.72 + 0.22 * n(6))
                temp = 62 + 12 * n(7)
            fb = fb_total * (0.78 + 0.15 * _noise(gh ^ int(seg.start), 7))
            # Rare sustained thermal episodes (~1 % of node-hours) clamp the SM clock.
            if not pausing and _noise(self._node_hash[node.index] ^ (ti // 3600), 8) < 0.01:
                clock = max_clock * 0.76
                throttle = THROTTLE_SW_THERMAL | THROTTLE_HW_THERMAL
                temp = 86 + 4 * n(8)
        elif seg.kind == "infer":
            busy = _noise(gh ^ minute, 9) < 0.6
            fb = fb_total * 0.35
            if busy:
                tensor = min(1.0, seg.level * (0.6 + 0.8 * n(3)))
                # Small-batch serving leaves most SMs empty: some minutes are busy but
                # low-efficiency (sm_active < 0.15).
                sm = min(1.0, 0.04 + tensor * 1.5)
                util = 30 + 60 * n(5)
                power = tdp * (0.35 + 0.3 * n(6))
                temp = 45 + 15 * n(7)
            else:
                util, sm, tensor = 0.0, 0.0, 0.0
                power = 0.12 * tdp + 10 * n(2)
        else:
            util, sm, tensor = 0.0, 0.0, 0.0
            power = 0.1 * tdp + 10 * n(2)
            if seg.kind == "idle_held":
                fb = fb_total * (0.25 + 0.5 * _noise(gh ^ int(seg.start), 10))
            else:
                fb = 0.0 if n(9) < 0.5 else 4.0  # driver context only
        if util == 0:
            clock = 345.0  # idle GPUs drop to their lowest P-state clock
        xid = None
        hour = ti // 3600
        if _noise(gh ^ hour, 11) < 0.002:
            # One XID in that hour, at a sample chosen by the hash.
            at = int(_noise(gh ^ hour, 12) * 3600 // interval_s)
            if int((ti - hour * 3600) // interval_s) == at:
                codes, weights = zip(*XIDS, strict=True)
                xid = random.Random(_mix(self.seed, 13, node.index, gpu, hour)).choices(
                    codes, weights)[0]
        namespace = seg.tenant if (seg.tenant and not seg.via_ledger) else None
        return {
            "v": 1, "ts": float(ti), "interval_s": float(interval_s), "node": node.name,
            "gpu": gpu, "uuid": self.uuid(node, gpu), "model": name, "cluster": self.cluster,
            "mig_profile": None, "mig_instance": None,
            "gpu_util": round(util, 2), "sm_active": round(sm, 4),
            "sm_occupancy": round(sm * 0.45, 4), "tensor_active": round(tensor, 4),
            "dram_active": round(min(1.0, tensor * 0.9 + 0.02 * n(10)) if util else 0.0, 4),
            "fp64_active": 0.0, "fp32_active": round(sm * 0.1, 4),
            "fp16_active": round(sm * 0.05, 4),
            # No energy counter: integrating the simulated power statelessly is not possible,
            # and a counter that disagreed with power_w would be worse than none (the
            # pipeline then uses power x time).
            "power_w": round(power, 1), "energy_j": None, "temp_c": round(temp, 1),
            "sm_clock_mhz": round(clock), "fb_used_mib": round(fb, 1), "fb_total_mib": fb_total,
            "xid": xid, "throttle": throttle,
            "namespace": namespace, "pod": f"{seg.job or 'svc'}-{gpu}" if seg.tenant else None,
            "job_id": seg.job if seg.kind == "train" else None, "tenant": None,
            "power_limit_w": tdp,
        }

    def node_samples(self, node: Node, t: float, interval_s: float) -> list[dict]:
        return [self.sample(node, g, t, interval_s) for g in range(self.gpus_per_node)]

    def collect(self, t: float, interval_s: float) -> list[tuple[str, list[dict]]]:
        """The Source interface (collectors/source.py): every node's samples for tick t."""
        return [(node.name, self.node_samples(node, t, interval_s)) for node in self.nodes]

    def close(self) -> None:
        pass

    def ticks(self, start: float, end: float, interval_s: float) -> Iterator[float]:
        """Sample times on the interval grid in [start, end)."""
        k = int(-(-start // interval_s))
        while k * interval_s < end:
            yield k * interval_s
            k += 1

    # -- ledger ------------------------------------------------------------------------------
    def ledger(self, start: float, end: float) -> list[tuple[str, str, str, float, float]]:
        """Allocation rows (tenant, node, gpu or '*', start, end) overlapping [start, end),
        clipped to it. Whole-node training jobs become one '*' row; namespace-only tenants
        are left out, as a Kubernetes cluster without a ledger would be."""
        rows = []
        for node in self.nodes:
            for day in range(int(start // DAY), int(-(-end // DAY))):
                per_gpu = self._segments(node, day)
                for i, seg in enumerate(per_gpu[0]):
                    s, e = max(seg.start, start), min(seg.end, end)
                    if s >= e:
                        continue
                    if seg.kind == "train":
                        if seg.via_ledger:
                            rows.append((seg.tenant, node.name, "*", s, e))
                        continue
                    for g in range(self.gpus_per_node):
                        gs = per_gpu[g][i]
                        if gs.via_ledger:
                            rows.append((gs.tenant, node.name, str(g), s, e))
        return rows
