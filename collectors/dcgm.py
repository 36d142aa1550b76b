"""The dcgm-exporter source: scrape ``/metrics`` pages and turn them into schema-v1 samples.

No maintained Python client for dcgm-exporter exists, so this module is that client. It uses
only the standard library (``http.client``, one kept-alive connection per URL) and
``collectors/exposition.py``, a purpose-built text-format parser; ``prometheus_client``'s parser
is no longer used (it cost ~40 ms of CPU per 8-GPU page, most of the agent's budget at 1 Hz).
It must stay importable without Polars or DuckDB (the agent runs on GPU nodes).

What real exporters print, and why each rule below exists, is described in
``../shared/reference/dcgm-exporter.md``; the rules as implemented are in
``docs/collectors-dcgm.md``. In short:

* A page is parsed line by line: one malformed line (a blob field rendered as
  ``ERROR - FAILED TO CONVERT TO STRING``, an invalid label name), which would make Prometheus
  or ``prometheus_client`` reject the whole page, loses only itself; the parser accepts the
  same lines ``prometheus_client`` did (tests/test_exposition.py compares them).
* A sample is one physical GPU, or one MIG GPU instance: the entity key is
  (node, parent UUID, ``GPU_I_ID``). Rows copied per ``hpc_job`` or per time-slicing ``vgpu``
  collapse into that one sample; their job ids, namespaces and pods are kept (sorted,
  comma-joined when there are several).
* Device-level values (power, energy, temperature, SM clock, throttle reasons) are repeated on
  every MIG instance row. They are reported once per physical GPU, on the instance with the
  lowest ``GPU_I_ID``, and are null on its sibling instances, so that no sum over samples
  counts them twice.
* Sentinels, NaN and infinities become null (counted); nothing unmeasured becomes 0.
* ``DCGM_FI_DEV_XID_ERRORS`` is a sticky last-value gauge: an ``xid`` is reported only when
  the value of that GPU (instance) changes to a non-zero code, or is non-zero on the first
  scrape this process sees of it.
* Every URL is scraped every tick; a timeout or HTTP error is counted and the URL is simply
  tried again next tick (on a new connection), while the other URLs' samples are returned.
* Per-tick work is kept to what changes: label sets are parsed once per distinct label text
  (the parser's cache) and resolved to an entity once per label set of a page.
"""

from __future__ import annotations

import functools
import http.client
import logging
import math
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.client import HTTPException
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from fleetlens.collectors.dcgm_fields import FIELDS, DcgmField, lookup
from fleetlens.collectors.exposition import ExpositionParser, ParsedPage, Row, parse_exposition

from fleetlens.schema import SCHEMA_VERSION
from fleetlens.schema import field as schema_field

log = logging.getLogger(__name__)

UNKNOWN_MODEL = "unknown"  # the oldest exporters print no modelName; the catalog lists it
MAX_PAGE_BYTES = 64 * 1024 * 1024  # time-sliced nodes make big pages; bound the agent's memory
NULL_PROFILE = "<<<NULL>>>"  # DCGM_STR_BLANK in GPU_I_PROFILE
XID_FIELDS = tuple(f for f in FIELDS if f.target == "xid")
_UNSEEN = object()
_FLOAT_MAX = int(sys.float_info.max)

COUNTER_NAMES = (
    "scrapes_ok",  # pages fetched with HTTP 2xx
    "scrape_timeouts",  # connect or read took longer than timeout_s
    "scrape_http_errors",  # non-2xx status or a broken HTTP response
    "scrape_connection_errors",  # refused, reset, unresolvable host
    "scrape_too_large",  # page over MAX_PAGE_BYTES
    "parse_fallbacks",  # pages a strict parser would reject (a bad line; a bad HELP/TYPE line)
    "parse_errors",  # lines dropped (each malformed data line)
    "rows_skipped",  # rows that are not GPU rows (NvLink/NvSwitch/CPU) or lack gpu/UUID
    "values_nulled",  # sentinel, NaN, infinite or negative values turned into null
    "values_clamped",  # values above the schema's range clamped to it (e.g. SM_ACTIVE 1.02)
    "duplicate_rows_merged",  # hpc_job / vgpu copies collapsed into one sample
    "duplicate_conflicts",  # copies that disagreed (the device row, else the largest, wins)
    "duplicate_gpus_dropped",  # the same GPU served by two URLs in one tick
    "xid_events",  # xid values reported (a change of the sticky XID gauge)
    "samples",  # samples returned
)


def normalize_url(url: str) -> str:
    """Accept ``host:port``, ``http://host:port`` or a full URL; default the path to /metrics.

    Raises ValueError for something that can never be scraped, so that a typo stops the agent
    at start instead of failing every tick.
    """
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:  # a port that is not a number
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise ValueError(f"not a dcgm-exporter URL: {url!r} (expected http://HOST:PORT[/path])")
    if parts.path in ("", "/"):
        parts = parts._replace(path="/metrics")
    return urlunsplit(parts)


# -- fetching ----------------------------------------------------------------------------------
@dataclass
class _Fetch:
    url: str
    text: str | None = None
    error: str | None = None  # a counter name from COUNTER_NAMES
    detail: str = ""


_HEADERS = {"Accept": "text/plain", "User-Agent": "fleetlens-agent"}
# A request sent on a kept-alive connection that the server had already closed (idle timeout,
# exporter restart) fails with one of these before any response arrives: not an error of the
# exporter, so the request is repeated once on a new connection.
_STALE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


class _Endpoint:
    """One exporter URL: a kept-alive HTTP connection and the page parser (with its label cache).

    Why not urllib per scrape: it opens a new connection per request (it sends
    ``Connection: close``) and builds a handler chain each time; at 1 Hz that was ~2 ms of CPU
    per tick. ``http.client`` on one connection is a fraction of that. Environment proxies are
    not used either way: exporters are scraped directly. Redirects, rare for an exporter, are
    followed by urllib as before (``_fetch_urllib``).
    """

    def __init__(self, url: str, timeout_s: float):
        self.url = url
        parts = urlsplit(url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port
        self.target = parts.path + (f"?{parts.query}" if parts.query else "")
        self.node = parts.hostname or url  # names the node when a page has no hostname label
        self.timeout_s = timeout_s
        self.parser = ExpositionParser()
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def fetch(self) -> _Fetch:
        """GET the page. timeout_s bounds the connect, each read, and (checked between reads)
        the whole download, so a server that trickles bytes cannot hold a tick for long."""
        deadline = time.monotonic() + self.timeout_s
        try:
            result = self._get(deadline)
        except _StaleConnection:
            self.close()
            result = self._get(deadline, allow_retry=False)
        if result.text is None:
            self.close()  # start clean next tick
        return result

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            self._conn = cls(self.host, self.port, timeout=self.timeout_s)
        return self._conn

    def _get(self, deadline: float, allow_retry: bool = True) -> _Fetch:
        conn = self._connection()
        reused = allow_retry and conn.sock is not None
        url = self.url
        try:
            if conn.sock is None:
                conn.connect()
            conn.request("GET", self.target, headers=_HEADERS)
        except TimeoutError as exc:
            return _Fetch(url, error="scrape_timeouts", detail=str(exc) or "timed out")
        except _STALE as exc:
            if reused:
                raise _StaleConnection from exc
            return _Fetch(url, error="scrape_connection_errors", detail=str(exc))
        except HTTPException as exc:
            return _Fetch(url, error="scrape_http_errors", detail=f"{type(exc).__name__}: {exc}")
        except OSError as exc:  # refused, unresolvable, TLS
            return _Fetch(url, error="scrape_connection_errors", detail=str(exc))
        try:
            try:
                resp = conn.getresponse()
            except _STALE as exc:  # includes RemoteDisconnected
                if reused:
                    raise _StaleConnection from exc
                raise
            if 300 <= resp.status < 400:
                self.close()
                return _fetch_urllib(url, deadline - time.monotonic())
            if not 200 <= resp.status < 300:
                return _Fetch(url, error="scrape_http_errors", detail=f"HTTP {resp.status}")
            page = _read_page(resp, url, deadline)
            if page.error:
                return page
            # read1 does not mark a Content-Length body as done; until the response is closed
            # the connection refuses the next request. The socket itself stays open.
            resp.close()
        except TimeoutError as exc:
            return _Fetch(url, error="scrape_timeouts", detail=str(exc) or "timed out")
        except HTTPException as exc:  # a broken response, a server that hung up
            return _Fetch(url, error="scrape_http_errors", detail=f"{type(exc).__name__}: {exc}")
        except OSError as exc:
            return _Fetch(url, error="scrape_connection_errors", detail=str(exc))
        return page


def _read_page(resp: http.client.HTTPResponse, url: str, deadline: float) -> _Fetch:
    """The body of an HTTP response, bounded by MAX_PAGE_BYTES and the scrape's deadline
    (raises TimeoutError past it)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := resp.read1(1 << 16):  # returns after each socket read
        size += len(chunk)
        if size > MAX_PAGE_BYTES:
            return _Fetch(url, error="scrape_too_large", detail=f"> {MAX_PAGE_BYTES} B")
        chunks.append(chunk)
        if time.monotonic() > deadline:
            raise TimeoutError("page download exceeded the timeout")
    return _Fetch(url, text=b"".join(chunks).decode("utf-8", errors="replace"))


class _StaleConnection(Exception):
    """A kept-alive connection turned out closed before the response: retry on a new one."""


# Scrape exporters directly: an http_proxy meant for the internet must not capture node-local
# exporter addresses.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _fetch_urllib(url: str, timeout_s: float) -> _Fetch:
    """GET one page with urllib, following redirects (used only when the exporter redirects)."""
    if timeout_s <= 0:
        return _Fetch(url, error="scrape_timeouts", detail="timed out")
    deadline = time.monotonic() + timeout_s
    req = urllib.request.Request(url, headers=_HEADERS)
    try:
        with _OPENER.open(req, timeout=timeout_s) as resp:
            return _read_page(resp, url, deadline)
    except urllib.error.HTTPError as exc:
        return _Fetch(url, error="scrape_http_errors", detail=f"HTTP {exc.code}")
    except TimeoutError as exc:
        return _Fetch(url, error="scrape_timeouts", detail=str(exc) or "timed out")
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            return _Fetch(url, error="scrape_timeouts", detail=str(exc.reason) or "timed out")
        return _Fetch(url, error="scrape_connection_errors", detail=str(exc.reason))
    except HTTPException as exc:
        return _Fetch(url, error="scrape_http_errors", detail=f"{type(exc).__name__}: {exc}")
    except OSError as exc:
        return _Fetch(url, error="scrape_connection_errors", detail=str(exc))


# -- grouping rows into entities ---------------------------------------------------------------
@dataclass
class _Entity:
    """Everything one page says about one GPU (gi None) or one MIG GPU instance."""

    node: str
    gpu: int
    uuid: str
    gi: int | None
    profile: str | None = None
    model: str | None = None
    # field -> [(raw value, is a time-slicing copy)]
    values: dict[DcgmField, list[tuple[float, bool]]] = field(default_factory=dict)
    namespaces: set[str] = field(default_factory=set)
    pods: set[str] = field(default_factory=set)
    jobs: set[str] = field(default_factory=set)
    merged: dict[str, str] | None = field(default=None, repr=False)  # labels merged last


def _merge_labels(ent: _Entity, labels: dict[str, str]) -> None:
    """What one row's labels add to its entity: MIG profile (the last one printed), model
    (the first), and every namespace, pod and job id."""
    profile = labels.get("GPU_I_PROFILE")
    if profile and profile != NULL_PROFILE:
        ent.profile = profile
    ent.model = ent.model or labels.get("modelName") or None
    if ns := _first(labels, "namespace", "pod_namespace"):
        ent.namespaces.add(ns)
    if pod := _first(labels, "pod", "pod_name"):
        ent.pods.add(pod)
    if job := labels.get("hpc_job"):
        ent.jobs.add(job)
    ent.merged = labels


def _first(labels: dict[str, str], *names: str) -> str | None:
    """The first non-empty label among names (old and new spellings of one label)."""
    for name in names:
        value = labels.get(name)
        if value:
            return value
    return None


def _joined(values: set[str]) -> str | None:
    """Several workloads on one GPU (time-slicing, several Slurm jobs) are kept, not picked:
    sorted so that the value is stable from tick to tick."""
    return ",".join(sorted(values)) if values else None


class DcgmSource:
    """Source (collectors/source.py) reading one or more dcgm-exporter endpoints."""

    def __init__(self, urls: list[str], cluster: str | None = None, timeout_s: float = 5.0):
        if not urls:
            raise ValueError("DcgmSource needs at least one URL")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self.urls = [normalize_url(u) for u in urls]
        self.cluster = cluster
        self.timeout_s = timeout_s
        self._endpoints = [_Endpoint(u, timeout_s) for u in self.urls]
        self._counters = dict.fromkeys(COUNTER_NAMES, 0)
        self._xid_last: dict[tuple[str, str, int | None], int] = {}
        self._failing: dict[str, str] = {}  # url -> last error, for log-on-change
        self._fields: dict[str, DcgmField | None] = {}  # metric name -> lookup(name)
        self._pool: ThreadPoolExecutor | None = None

    # -- Source protocol ---------------------------------------------------------------------
    def collect(self, t: float, interval_s: float) -> list[tuple[str, list[dict]]]:
        """Scrape every URL (concurrently) and return the samples of each node found."""
        by_node: dict[str, list[dict]] = {}
        seen: set[tuple[str, int | None]] = set()
        for endpoint, fetched in zip(self._endpoints, self._fetch_all(), strict=True):
            if fetched.text is None:
                self._note_failure(fetched)
                continue
            self._note_success(fetched.url)
            for sample in self._page_samples(endpoint.parser.parse(fetched.text), endpoint.node,
                                             t, interval_s):
                key = (sample["uuid"], sample["mig_instance"])
                if key in seen:
                    self._counters["duplicate_gpus_dropped"] += 1
                    continue
                seen.add(key)
                by_node.setdefault(sample["node"], []).append(sample)
        out = list(by_node.items())
        self._counters["samples"] += sum(len(s) for _, s in out)
        return out

    def close(self) -> None:
        for endpoint in self._endpoints:
            endpoint.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def counters(self) -> dict[str, int]:
        """Monotonic counters since start (the agent exports them as Prometheus metrics)."""
        return dict(self._counters)

    # -- scraping ----------------------------------------------------------------------------
    def _fetch_all(self) -> list[_Fetch]:
        if len(self._endpoints) == 1:
            return [self._endpoints[0].fetch()]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=min(16, len(self._endpoints)),
                                            thread_name_prefix="dcgm-scrape")
        return list(self._pool.map(_Endpoint.fetch, self._endpoints))

    def _note_failure(self, fetched: _Fetch) -> None:
        self._counters[fetched.error or "scrape_connection_errors"] += 1
        if self._failing.get(fetched.url) != fetched.error:  # log changes, not every tick
            log.warning("dcgm-exporter %s: %s (%s); retrying every tick", fetched.url,
                        fetched.error, fetched.detail)
        self._failing[fetched.url] = fetched.error or ""

    def _note_success(self, url: str) -> None:
        self._counters["scrapes_ok"] += 1
        if self._failing.pop(url, None) is not None:
            log.warning("dcgm-exporter %s: scraping again", url)

    # -- one page -> samples -----------------------------------------------------------------
    def samples_from_text(self, text: str, url: str, t: float, interval_s: float) -> list[dict]:
        """Schema-v1 samples for one page (updates the counters and the XID state).

        ``url`` names the node when the page has no ``Hostname``/``hostname`` label.
        """
        fallback_node = urlsplit(normalize_url(url)).hostname or url
        return self._page_samples(parse_exposition(text), fallback_node, t, interval_s)

    def _page_samples(self, page: ParsedPage, fallback_node: str, t: float,
                      interval_s: float) -> list[dict]:
        if page.malformed:
            self._counters["parse_fallbacks"] += 1
        self._counters["parse_errors"] += page.bad_lines
        entities = self._group(page.rows, fallback_node)

        # Physical GPU -> its whole-GPU entity (gi None) and its MIG instances.
        gpus: dict[tuple[str, str], dict[int | None, _Entity]] = {}
        for ent in entities.values():
            gpus.setdefault((ent.node, ent.uuid), {})[ent.gi] = ent
        samples: list[dict] = []
        for parts in gpus.values():
            samples.extend(self._gpu_samples(parts, t, interval_s))
        samples.sort(key=lambda s: (s["node"], s["gpu"], s["mig_instance"] is not None,
                                    s["mig_instance"] or 0))
        return samples

    def _group(self, rows: list[Row], fallback_node: str) -> dict[tuple, _Entity]:
        """Rows -> entities (GPUs, MIG instances) with their raw values.

        What a row's labels say (its entity, model, workload) is worked out once per label set
        of the page, not once per row: an exporter prints the same label set on every family,
        and the parser hands out one shared dict per distinct label text, so a dict's identity
        stands for its content. (``rows`` keeps every dict alive during the call, so ids are
        not reused.)
        """
        entities: dict[tuple, _Entity] = {}
        by_labels: dict[int, tuple[_Entity, bool] | None] = {}  # id(labels) -> (entity, copy)
        fields = self._fields
        skipped = 0
        for name, labels, value in rows:
            found = by_labels.get(id(labels), _UNSEEN)
            if found is _UNSEEN:
                found = by_labels[id(labels)] = self._entity_of(labels, fallback_node, entities)
            if found is None:
                skipped += 1
                continue
            ent, copy = found
            if ent.merged is not labels:  # merging the same labels again changes nothing
                _merge_labels(ent, labels)
            f = fields.get(name, _UNSEEN)
            if f is _UNSEEN:
                if len(fields) > 4096:  # bounded against pages that invent names
                    fields.clear()
                f = fields[name] = lookup(name)
            if f is not None:
                ent.values.setdefault(f, []).append((value, copy))
        self._counters["rows_skipped"] += skipped
        return entities

    @staticmethod
    def _entity_of(labels: dict[str, str], fallback_node: str,
                   entities: dict[tuple, _Entity]) -> tuple[_Entity, bool] | None:
        """The entity a label set belongs to (created on first sight) and whether its rows are
        time-slicing copies; None for rows that are not GPU or MIG-instance rows."""
        uuid = _first(labels, "UUID", "uuid")
        gpu_text = labels.get("gpu", "")
        gi_text = labels.get("GPU_I_ID", "").strip()
        # NvLink rows name their GPU in gpu_uuid, NvSwitch and CPU rows have no GPU at
        # all: requiring UUID/uuid keeps exactly the GPU and MIG-instance rows.
        if not uuid or not gpu_text.strip().isdigit() or (gi_text and not gi_text.isdigit()):
            return None
        node = _first(labels, "hostname", "Hostname") or fallback_node
        gi = int(gi_text) if gi_text else None
        key = (node, uuid, gi)
        ent = entities.get(key)
        if ent is None:
            ent = entities[key] = _Entity(node, int(gpu_text), uuid, gi)
        return ent, "vgpu" in labels

    def _gpu_samples(self, parts: dict[int | None, _Entity], t: float,
                     interval_s: float) -> list[dict]:
        """One sample for a whole GPU, or one per MIG instance of it.

        With MIG, a whole-GPU row set (printed next to the instance rows by older exporters)
        is not a sample of its own: its time is the instances' time. It only supplies the
        device-level values and the model name.
        """
        parent = parts.get(None)
        instances = sorted((e for gi, e in parts.items() if gi is not None), key=lambda e: e.gi)
        model = next((e.model for e in parts.values() if e.model), None) or UNKNOWN_MODEL
        if not instances:
            assert parent is not None
            values = self._resolve_all(parent, FIELDS)
            sample = self._sample(parent, values, model, t, interval_s)
            sample["xid"] = self._xid_event(parent, values.get("xid"))
            return [sample]

        own_fields = [f for f in FIELDS if not f.device_level]
        # Device-level values: from the whole-GPU rows when printed, else from the instances'
        # copies (identical by construction). Reported on the lowest instance only.
        sources = ([parent] if parent else []) + instances
        device: dict[str, Any] = {}
        for f in FIELDS:
            if not f.device_level or f.target in device:
                continue
            for source in sources:
                if f in source.values and (value := self._resolve(f, source.values[f])) is not None:
                    device[f.target] = value
                    break
        parent_xid = None
        if parent is not None:
            parent_xid = self._xid_event(parent, self._resolve_all(parent, XID_FIELDS).get("xid"))
        out = []
        for i, ent in enumerate(instances):
            values = self._resolve_all(ent, own_fields)
            if i == 0:
                values.update(device)
            sample = self._sample(ent, values, model, t, interval_s)
            sample["xid"] = self._xid_event(ent, values.get("xid"))
            if i == 0 and sample["xid"] is None:
                sample["xid"] = parent_xid  # a whole-GPU XID lands on the same carrier
            out.append(sample)
        return out

    def _resolve_all(self, ent: _Entity, fields: Iterable[DcgmField]) -> dict[str, Any]:
        """target -> value for the fields this entity has (first field per target wins)."""
        out: dict[str, Any] = {}
        for f in fields:
            if f.target in out or f not in ent.values:
                continue
            value = self._resolve(f, ent.values[f])
            if value is not None:
                out[f.target] = value
        return out

    def _resolve(self, f: DcgmField, rows: list[tuple[float, bool]]) -> float | None:
        """One value from the rows of one field of one entity, in schema units."""
        if len(rows) == 1:  # the common case: one row, no copies to reconcile
            raw = rows[0][0]
            if not _usable(raw) or f.is_blank(raw):
                self._counters["values_nulled"] += 1
                return None
        else:
            self._counters["duplicate_rows_merged"] += len(rows) - 1
            valid = [(v, copy) for v, copy in rows if _usable(v) and not f.is_blank(v)]
            if not valid:
                self._counters["values_nulled"] += 1
                return None
            # Since exporter 4.8.2, time-sliced GPUs keep one device row next to per-pod rows
            # whose GPU_UTIL / FB_USED are per-process shares: the device row is the GPU's value.
            candidates = {v for v, copy in valid if not copy} or {v for v, _ in valid}
            if len(candidates) > 1:
                self._counters["duplicate_conflicts"] += 1
            raw = max(candidates)
        value = raw / f.divisor
        lo, hi = _bounds(f)
        if lo is not None and value < lo:
            self._counters["values_nulled"] += 1
            return None
        if hi is not None and value > hi:
            self._counters["values_clamped"] += 1
            value = hi
        return value

    def _sample(self, ent: _Entity, values: dict[str, Any], model: str, t: float,
                interval_s: float) -> dict:
        fb_total = values.get("fb_total_mib")
        free, used = values.get("_fb_free"), values.get("fb_used_mib")
        if fb_total is None and free is not None and used is not None:
            # FB_TOTAL is off by default; NVML's total is used + free + reserved.
            fb_total = free + used + values.get("_fb_reserved", 0.0)
        sm_active = values.get("sm_active")
        if sm_active is None:
            # SM_ACTIVE is off by default; GR_ENGINE_ACTIVE (on by default, and the MIG-safe
            # busy signal) stands in for it, as the reference advises.
            sm_active = values.get("_gr_engine_active")
        throttle = values.get("throttle")
        return {
            "v": SCHEMA_VERSION, "ts": float(t), "interval_s": float(interval_s),
            "node": ent.node, "gpu": ent.gpu, "uuid": ent.uuid, "model": model,
            "cluster": self.cluster, "mig_profile": ent.profile, "mig_instance": ent.gi,
            "gpu_util": _float(values.get("gpu_util")), "sm_active": _float(sm_active),
            "sm_occupancy": _float(values.get("sm_occupancy")),
            "tensor_active": _float(values.get("tensor_active")),
            "dram_active": _float(values.get("dram_active")),
            "fp64_active": _float(values.get("fp64_active")),
            "fp32_active": _float(values.get("fp32_active")),
            "fp16_active": _float(values.get("fp16_active")),
            "power_w": _float(values.get("power_w")), "energy_j": _float(values.get("energy_j")),
            "temp_c": _float(values.get("temp_c")),
            "sm_clock_mhz": _float(values.get("sm_clock_mhz")),
            "fb_used_mib": _float(used), "fb_total_mib": _float(fb_total),
            "xid": None, "throttle": int(throttle) if throttle is not None else None,
            "namespace": _joined(ent.namespaces), "pod": _joined(ent.pods),
            "job_id": _joined(ent.jobs), "tenant": None,
            "power_limit_w": _float(values.get("power_limit_w")),
        }

    def _xid_event(self, ent: _Entity, value: float | None) -> int | None:
        """The XID to report for this scrape, from the sticky last-XID gauge.

        Reported: a non-zero value that differs from the previous scrape of the same GPU
        (instance), and a non-zero value on the first scrape this process sees (it may be
        old, but dropping it could hide a fault that happened while the agent was down).
        A missing row keeps the previous value; 0 (exporter restarted) just resets it.
        A repeat of the same XID is invisible in this gauge; that is DCGM's limit.
        """
        if value is None:
            return None
        key = (ent.node, ent.uuid, ent.gi)
        code = int(value)
        previous = self._xid_last.get(key)
        self._xid_last[key] = code
        if code == 0 or code == previous:
            return None
        self._counters["xid_events"] += 1
        return code


def _usable(raw: float) -> bool:
    """False for NaN, ±Inf, and integers a float cannot hold (a page may print any digits)."""
    if isinstance(raw, float):
        return math.isfinite(raw)
    return -_FLOAT_MAX < raw < _FLOAT_MAX


@functools.cache
def _bounds(f: DcgmField) -> tuple[float | None, float | None]:
    """The schema's (lo, hi) for a field's target; none for helpers and xid. Cached: asked for
    every value of every tick."""
    if f.target.startswith("_") or f.target == "xid":
        return None, None
    spec = schema_field(f.target)
    return spec.lo, spec.hi


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
