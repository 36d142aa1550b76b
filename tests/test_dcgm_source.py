"""The dcgm-exporter source against recorded exporter output and synthetic edge cases.

Every page is served by a real HTTP server on 127.0.0.1 and scraped by the real source (or
the real `fleetlens agent` command line). Recorded pages are read in place from
../shared/reference/dcgm (third-party data, never copied into the repository); the synthetic
pages in tests/fixtures/dcgm were written for fleetlens. Expected values are worked out by
hand from the page text in the comments next to them.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fleetlens.collectors.dcgm import COUNTER_NAMES, DcgmSource

from fleetlens.schema import parse_line, validate_sample
from tests.conftest import FIXTURES, REFERENCE, run_cli

DCGM_REF = REFERENCE / "dcgm"
DCGM_FX = FIXTURES / "dcgm"
needs_reference = pytest.mark.skipif(
    not DCGM_REF.is_dir(), reason=f"recorded dcgm-exporter pages not found at {DCGM_REF}")

H100 = "NVIDIA H100 80GB HBM3"
# Every recorded page: (samples = physical GPUs + MIG instances, models, node names).
# "127.0.0.1" is the scrape URL's host, used where a page has no Hostname/hostname label.
EXPECTED = {
    "dcgm_8xh100_synthetic.txt": (8, {H100}, {"gpu-h100-017"}),
    "dcgm_8xh100_synthetic_hostname_lowercase.txt": (8, {H100}, {"gpu-h100-017"}),
    # 7 GPUs on 5 "nodes": hpc_job pair and vgpu pair collapse, NvLink/NvSwitch rows are not
    # GPUs, the MIG row with GPU_I_PROFILE="<<<NULL>>>" is an instance of its own.
    "dcgm_edgecases_synthetic.txt": (
        7, {H100, "unknown"},
        {"slurm-gpu-042", "k8s-gpu-007", "a0321111701", "dcgm-exporter-6ldbb", "127.0.0.1"}),
    "dcgm_exporter_sample_1.txt": (1, {"NVIDIA L40S"}, {"gpu1-wl8sg"}),
    "dcgm_exporter_sample_2.txt": (8, {H100}, {"gpu-node-1"}),
    # parent rows + one 1g.5gb instance: one sample (the instance), no modelName label
    "dcgm_exporter_sample_4.txt": (1, {"unknown"}, {"ub20-a100-k8s"}),
    "dcgm_exporter_sample_5.txt": (1, {"NVIDIA L4"}, {"i-030791dc5a37cd257"}),
    "dcgm_exporter_sample_6.txt": (1, {"Tesla T4"}, {"cp-bm14r7"}),
    # only the first template is a GPU row with a UUID; the others are NvSwitch, NvLink,
    # CPU, CPU core, and a row whose uuid label is spelled "test-uuid" (invalid: dropped)
    "dcgm_exporter_sample_7_unittest_strings.txt": (1, {"NVIDIA T400 4GB"}, {"testhost"}),
    # GPU 0: instances 1, 5, 13, 14; GPU 1 whole
    "dcgm_h100_mig_synthetic.txt": (5, {H100}, {"gpu-h100-mig-003"}),
    "simhall_gb300_node1_faults.txt": (3, {"NVIDIA GB300"}, {"node1"}),  # GPU 3 is missing
    "simhall_h100_node1_xid48.txt": (8, {"NVIDIA H100"}, {"node1"}),
}


# -- a real exporter stand-in ------------------------------------------------------------------
class Exporter:
    """An HTTP server on 127.0.0.1 serving whatever page a test puts at a path."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, bytes, float, float]] = {}
        routes = self.routes

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                status, body, delay, trickle = routes.get(self.path, (404, b"no such page",
                                                                      0.0, 0.0))
                time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "text/plain; version=0.0.4")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    if not trickle:
                        self.wfile.write(body)
                        return
                    for i in range(0, len(body), 64):  # a server that dribbles its answer
                        self.wfile.write(body[i:i + 64])
                        self.wfile.flush()
                        time.sleep(trickle)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up, as it should

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    def serve(self, path: str, body: str | bytes, status: int = 200, delay: float = 0.0,
              trickle: float = 0.0) -> str:
        self.routes[path] = (status, body.encode() if isinstance(body, str) else body, delay,
                             trickle)
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    ex = Exporter()
    yield ex
    ex.close()


def scrape(exporter: Exporter, text: str, t: float = 1_800_000_000.0,
           interval_s: float = 30.0) -> tuple[list[dict], DcgmSource]:
    """One tick of a fresh source against one page; every sample checked against schema v1."""
    src = DcgmSource([exporter.serve("/metrics", text)], cluster="lab")
    try:
        samples = flat(src.collect(t, interval_s))
    finally:
        src.close()
    return samples, src


def flat(collected: list[tuple[str, list[dict]]]) -> list[dict]:
    out = []
    for node, samples in collected:
        for s in samples:
            assert s["node"] == node
            assert validate_sample(s) == s  # valid, and already carries every schema field
            out.append(s)
    return out


def by_gpu(samples: list[dict]) -> dict[tuple[int, int | None], dict]:
    keyed = {(s["gpu"], s["mig_instance"]): s for s in samples}
    assert len(keyed) == len(samples), "one sample per GPU or MIG instance"
    return keyed


def ref(name: str) -> str:
    return (DCGM_REF / name).read_text()


def fx(name: str) -> str:
    return (DCGM_FX / name).read_text()


# -- every recorded page -----------------------------------------------------------------------
@needs_reference
def test_every_recorded_page_is_covered():
    assert {p.name for p in DCGM_REF.glob("*.txt")} == set(EXPECTED)


@needs_reference
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recorded_page_gpu_count_models_nodes(exporter, name):
    count, models, nodes = EXPECTED[name]
    samples, _ = scrape(exporter, ref(name), t=1_800_000_030.0, interval_s=15.0)
    assert len(samples) == count
    assert len({(s["uuid"], s["mig_instance"]) for s in samples}) == count  # no duplicates
    assert {s["model"] for s in samples} == models
    assert {s["node"] for s in samples} == nodes
    for s in samples:
        assert (s["v"], s["ts"], s["interval_s"], s["cluster"]) == (1, 1_800_000_030.0, 15.0,
                                                                   "lab")


@needs_reference
@pytest.mark.parametrize("name", ["dcgm_8xh100_synthetic.txt",
                                  "dcgm_8xh100_synthetic_hostname_lowercase.txt"])
def test_8xh100_units_tenants_and_xid(exporter, name):
    s = by_gpu(scrape(exporter, ref(name))[0])
    g0 = s[(0, None)]
    assert g0["uuid"] == "GPU-3f6a1c2e-8b4d-4e71-a9c0-5d2e7f81b6a4"
    assert g0["gpu_util"] == 100.0  # DEV_GPU_UTIL 100: percent stays percent
    assert g0["sm_active"] == pytest.approx(0.913402)  # PROF_SM_ACTIVE, not GR_ENGINE 0.982113
    assert g0["sm_occupancy"] == pytest.approx(0.312877)
    assert g0["tensor_active"] == pytest.approx(0.521904)
    assert g0["dram_active"] == pytest.approx(0.408116)
    assert g0["fp32_active"] == pytest.approx(0.081244)
    assert g0["fp16_active"] == pytest.approx(0.014803)
    assert g0["fp64_active"] == 0.0  # printed 0.000000: measured zero, not null
    assert g0["power_w"] == pytest.approx(681.37)
    assert g0["energy_j"] == pytest.approx(412_345_678.901)  # 412345678901 mJ / 1000
    assert g0["temp_c"] == 62.0 and g0["sm_clock_mhz"] == 1980.0
    assert g0["fb_used_mib"] == 76812.0
    assert g0["fb_total_mib"] == 4218 + 76812 + 529  # free + used + reserved = 81559
    assert s[(1, None)]["sm_clock_mhz"] == 1755.0
    # tenants: GPUs 0-3 one training pod (team-a), 4-5 inference (team-b), 6 idle (team-c),
    # 7 unallocated (no pod labels -> null, never "")
    for gpu, ns in [(0, "team-a"), (3, "team-a"), (4, "team-b"), (5, "team-b"), (6, "team-c")]:
        assert s[(gpu, None)]["namespace"] == ns
    assert s[(0, None)]["pod"] == "llm-pretrain-7f9c4-worker-0"
    assert s[(6, None)]["pod"] == "jupyter-alice-0"
    assert s[(7, None)]["namespace"] is None and s[(7, None)]["pod"] is None
    assert s[(6, None)]["fb_used_mib"] == 2113.0 and s[(6, None)]["gpu_util"] == 0.0
    # XID 31 on GPU 5 (first scrape, non-zero -> reported); err_code="0" elsewhere -> none
    assert {g: x["xid"] for g, x in s.items() if x["xid"] is not None} == {(5, None): 31}
    assert all(x["job_id"] is None and x["mig_instance"] is None for x in s.values())


@needs_reference
def test_hostname_label_spellings_give_identical_samples(exporter):
    upper, _ = scrape(exporter, ref("dcgm_8xh100_synthetic.txt"))
    lower, _ = scrape(exporter, ref("dcgm_8xh100_synthetic_hostname_lowercase.txt"))
    assert upper == lower


@needs_reference
def test_l40s_default_counters(exporter):
    [s], src = scrape(exporter, ref("dcgm_exporter_sample_1.txt"))
    assert s["energy_j"] == pytest.approx(5_551_899.58)  # 5551899580 mJ
    assert s["power_w"] == pytest.approx(35.686)
    assert s["fb_total_mib"] == 45459 + 0 + 608
    # no SM_ACTIVE in the default CSV: GR_ENGINE_ACTIVE 0.000000 stands in
    assert s["sm_active"] == 0.0 and s["tensor_active"] == 0.0
    assert s["dram_active"] == pytest.approx(0.000131)
    assert s["sm_occupancy"] is None and s["fp16_active"] is None  # not exported: null
    assert s["xid"] is None  # no XID rows at all (blank values are omitted)
    assert s["namespace"] is None and s["pod"] is None
    assert src.counters()["parse_fallbacks"] == 0


@needs_reference
def test_h100_excerpt_pod_labels_only_on_gpu0(exporter):
    s = by_gpu(scrape(exporter, ref("dcgm_exporter_sample_2.txt"))[0])
    assert s[(0, None)]["namespace"] == "dynamo-workload"
    assert s[(0, None)]["pod"] == "vllm-agg-0-vllmdecodeworker-s65j5"
    assert all(s[(g, None)]["namespace"] is None for g in range(1, 8))
    assert s[(0, None)]["power_w"] == pytest.approx(113.611)
    assert s[(7, None)]["temp_c"] == 26.0
    # the excerpt has no DCP, energy or framebuffer rows: null, not 0
    for x in s.values():
        assert x["sm_active"] is None and x["energy_j"] is None and x["fb_used_mib"] is None


@needs_reference
def test_l4_and_t4_units(exporter):
    [l4], _ = scrape(exporter, ref("dcgm_exporter_sample_5.txt"))
    assert l4["energy_j"] == pytest.approx(4742.776)  # 4742776 mJ
    assert l4["fb_total_mib"] == 22563 + 0 + 470
    [t4], _ = scrape(exporter, ref("dcgm_exporter_sample_6.txt"))
    assert t4["gpu_util"] == 91.0  # percent, kept as percent
    assert t4["sm_active"] == pytest.approx(0.156205)  # GR_ENGINE ratio, not divided again
    assert t4["tensor_active"] == pytest.approx(0.005822)
    assert t4["energy_j"] == pytest.approx(15_152_422.938)  # 15152422938 mJ
    assert t4["fb_used_mib"] == 5120.0 and t4["fb_total_mib"] == 9791 + 5120 + 447


@needs_reference
def test_mig_docs_example_parent_rows_feed_the_instance(exporter):
    [s], _ = scrape(exporter, ref("dcgm_exporter_sample_4.txt"))
    assert (s["gpu"], s["mig_instance"], s["mig_profile"]) == (0, 13, "1g.5gb")
    assert s["uuid"] == "GPU-34319582-d595-d1c7-d1d2-179bcfa61660"  # the parent's UUID
    # activities are the instance's own (0.995687), not the parent row's (0.995630)
    assert s["sm_active"] == pytest.approx(0.995687)
    assert s["tensor_active"] == pytest.approx(0.930433)
    assert s["dram_active"] == pytest.approx(0.800339)
    # device-level values come from the parent rows, once
    assert s["power_w"] == pytest.approx(409.692)
    assert s["energy_j"] == pytest.approx(319_159.391)
    assert s["temp_c"] == 61.0 and s["sm_clock_mhz"] == 1215.0
    assert s["fb_used_mib"] is None  # the parent's 4845 MiB is the whole GPU's, not GI 13's
    assert s["gpu_util"] is None


@needs_reference
def test_mig_device_level_values_once_per_physical_gpu(exporter):
    s = by_gpu(scrape(exporter, ref("dcgm_h100_mig_synthetic.txt"))[0])
    assert set(s) == {(0, 1), (0, 5), (0, 13), (0, 14), (1, None)}
    instances = [s[(0, gi)] for gi in (1, 5, 13, 14)]
    assert [x["mig_profile"] for x in instances] == ["3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"]
    assert {x["uuid"] for x in instances} == {"GPU-3f6a1c2e-8b4d-4e71-a9c0-5d2e7f81b6a4"}
    # 455.118 W is printed on all four instance rows; summed over samples it counts once
    assert sum(x["power_w"] or 0.0 for x in instances) == pytest.approx(455.118)
    assert s[(0, 1)]["energy_j"] == pytest.approx(412_345_678.901)
    assert (s[(0, 1)]["temp_c"], s[(0, 1)]["sm_clock_mhz"]) == (62.0, 1980.0)
    for x in instances[1:]:
        assert (x["power_w"], x["energy_j"], x["temp_c"], x["sm_clock_mhz"]) == (None,) * 4
    # per-instance values are each instance's own
    assert s[(0, 1)]["fb_total_mib"] == 3346 + 37102 + 0
    assert s[(0, 5)]["fb_used_mib"] == 18010.0 and s[(0, 5)]["fb_total_mib"] == 2086 + 18010
    assert s[(0, 1)]["sm_active"] == pytest.approx(0.903)
    assert all(x["gpu_util"] is None for x in instances)  # GPU_UTIL does not exist on MIG
    assert [x["namespace"] for x in instances] == ["team-a", "team-b", None, "team-c"]
    assert s[(0, 14)]["pod"] == "jupyter-bob-0"
    whole = s[(1, None)]
    assert whole["mig_profile"] is None and whole["gpu_util"] == 87.0
    assert whole["power_w"] == pytest.approx(421.226)
    assert whole["energy_j"] == pytest.approx(298_112_360.057)


@needs_reference
def test_edge_case_page(exporter):
    samples, src = scrape(exporter, ref("dcgm_edgecases_synthetic.txt"))
    s = {(x["node"], x["gpu"], x["mig_instance"]): x for x in samples}
    # hpc_job fan-out: two identical rows, one sample, both job ids
    assert s[("slurm-gpu-042", 0, None)]["job_id"] == "4711,4712"
    assert s[("slurm-gpu-042", 0, None)]["gpu_util"] == 97.0
    # vgpu copies (time-slicing): one sample, both tenants kept
    shared = s[("k8s-gpu-007", 2, None)]
    assert (shared["namespace"], shared["pod"]) == ("team-a,team-b", "ts-pod-a,ts-pod-b")
    assert shared["gpu_util"] == 55.0
    assert s[("k8s-gpu-007", 3, None)]["namespace"] == "team-a"  # DRA row
    # GPU_I_PROFILE="<<<NULL>>>": the instance is kept, its profile unknown
    mig = s[("a0321111701", 0, 6)]
    assert mig["mig_profile"] is None and mig["sm_clock_mhz"] is None  # MEM_CLOCK only
    # 1.x names and labels: dcgm_gpu_temp, uuid=..., pod_name="" -> no pod
    old = s[("dcgm-exporter-6ldbb", 0, None)]
    assert old["temp_c"] == 54.0 and old["pod"] is None and old["namespace"] is None
    # old spacing, no hostname: node from the URL; MEMORY_TEMP sentinel is not a schema field
    assert s[("127.0.0.1", 0, None)]["sm_clock_mhz"] == 139.0
    c = src.counters()
    assert c["parse_fallbacks"] == 1 and c["parse_errors"] == 1  # the blob "ERROR - ..." line
    assert c["rows_skipped"] == 3  # two NvLink rows, one NvSwitch row


@needs_reference
def test_unit_test_strings_page(exporter):
    [s], src = scrape(exporter, ref("dcgm_exporter_sample_7_unittest_strings.txt"))
    assert (s["node"], s["uuid"]) == ("testhost", "GPU-00000000-0000-0000-0000-000000000000")
    c = src.counters()
    assert c["parse_fallbacks"] == 1 and c["parse_errors"] == 1  # label name "test-uuid"
    assert c["rows_skipped"] == 4  # NvSwitch, NvLink, CPU, CPU core


@needs_reference
def test_simhall_emulator_pages(exporter):
    gb300 = by_gpu(scrape(exporter, ref("simhall_gb300_node1_faults.txt"))[0])
    assert set(gb300) == {(0, None), (1, None), (2, None)}  # the missing GPU is not invented
    assert gb300[(2, None)]["xid"] == 79
    assert gb300[(0, None)]["fb_total_mib"] == 294912.0  # FB_TOTAL printed: used as is
    assert gb300[(0, None)]["power_w"] == pytest.approx(125.3)
    assert gb300[(0, None)]["gpu_util"] is None  # the emulator has no utilization field
    h100 = by_gpu(scrape(exporter, ref("simhall_h100_node1_xid48.txt"))[0])
    assert {g: x["xid"] for g, x in h100.items() if x["xid"]} == {(5, None): 48}


# -- synthetic edge cases ----------------------------------------------------------------------
def test_sentinels_nan_and_non_numeric_values_become_null(exporter):
    [s], src = scrape(exporter, fx("sentinels.txt"))
    assert s["sm_clock_mhz"] is None  # 9223372036854775794 = DCGM_INT64_NOT_SUPPORTED
    assert s["power_w"] is None  # 140737488355328.000000 = DCGM_FP64_BLANK
    assert s["temp_c"] is None  # NaN
    assert s["tensor_active"] is None  # +Inf
    assert s["dram_active"] is None  # negative ratio
    assert s["fb_used_mib"] is None  # "ERROR - FAILED TO CONVERT TO STRING"
    assert s["sm_active"] == 1.0  # 1.02 clamped into the schema's 0-1
    assert s["gpu_util"] == 42.0 and s["energy_j"] == pytest.approx(123_456.789)
    c = src.counters()
    assert (c["parse_fallbacks"], c["parse_errors"]) == (1, 1)
    assert (c["values_nulled"], c["values_clamped"]) == (5, 1)


def test_strict_and_line_by_line_parsing_agree(exporter):
    text = "\n".join(line for line in fx("sentinels.txt").splitlines() if "ERROR" not in line)
    [strict], src = scrape(exporter, text)
    [tolerant], _ = scrape(exporter, fx("sentinels.txt"))
    assert src.counters()["parse_fallbacks"] == 0
    assert strict == tolerant


def test_time_sliced_gpu_is_one_sample_with_the_device_values(exporter):
    samples, src = scrape(exporter, fx("timeslicing.txt"))
    s = by_gpu(samples)
    assert set(s) == {(0, None), (1, None)}
    shared = s[(0, None)]
    # the device row (90 %, 50000 MiB), not a pod's share (60/30/0) nor a sum of copies
    assert shared["gpu_util"] == 90.0 and shared["fb_used_mib"] == 50000.0
    assert shared["power_w"] == 350.5 and shared["tensor_active"] == 0.25
    assert shared["namespace"] == "team-a,team-b"
    assert shared["pod"] == "chat-a-0,chat-a-1,embed-b-0"
    assert (s[(1, None)]["namespace"], s[(1, None)]["pod"]) == ("team-c", "train-c-0")
    c = src.counters()
    assert c["duplicate_rows_merged"] == 4 * 3  # 4 fields x 3 copies beside the device row
    assert c["duplicate_conflicts"] == 0


def test_hpc_job_fan_out_keeps_every_job_id(exporter):
    samples, src = scrape(exporter, fx("hpc_jobs.txt"))
    s = by_gpu(samples)
    assert set(s) == {(0, None), (1, 1), (1, 2), (2, None)}
    assert s[(0, None)]["job_id"] == "9001,9002,9003"
    assert s[(0, None)]["power_w"] == 612.0 and s[(0, None)]["sm_active"] == 0.95
    assert s[(1, 1)]["job_id"] == "9101,9102" and s[(1, 2)]["job_id"] == "9200"
    assert s[(1, 1)]["power_w"] == 300.0 and s[(1, 2)]["power_w"] is None  # once per GPU
    assert s[(1, 2)]["sm_active"] == 0.2 and s[(1, 2)]["xid"] == 13  # the instance's own XID
    assert s[(2, None)]["job_id"] is None and s[(2, None)]["power_w"] == 70.0
    # GPU 0: 3 fields x 2 extra copies; GI 1: 3 fields x 1 extra copy
    assert src.counters()["duplicate_rows_merged"] == 3 * 2 + 3 * 1


def test_old_label_and_metric_names(exporter):
    src = DcgmSource([f"127.0.0.1:{exporter.port}"])  # host:port form: /metrics is implied
    exporter.serve("/metrics", fx("old_labels.txt"))
    s = by_gpu(flat(src.collect(1_800_000_000.0, 60.0)))
    free, busy = s[(0, None)], s[(1, None)]
    assert free["node"] == busy["node"] == "127.0.0.1"  # no hostname label: the URL's host
    assert free["uuid"] == "GPU-01d1ab00-0000-4000-8000-000000000000"  # lower-case `uuid`
    assert free["model"] == "unknown" and free["cluster"] is None
    assert free["pod"] is None and free["namespace"] is None  # pod_name="" is no pod
    assert (busy["namespace"], busy["pod"]) == ("research", "bert-finetune-0")
    assert busy["energy_j"] == pytest.approx(7_200_000.5)  # dcgm_total_energy_consumption mJ
    assert busy["power_w"] == 380.5 and busy["gpu_util"] == 98.0
    assert busy["sm_active"] == 0.87 and busy["tensor_active"] == 0.45
    assert busy["sm_clock_mhz"] == 1410.0 and busy["temp_c"] == 71.0
    assert busy["fb_total_mib"] == 2000 + 38000  # no FB_RESERVED row: free + used
    src.close()


def test_dashes_in_model_name_are_kept_and_still_match_the_catalog(exporter):
    from fleetlens.pipeline.catalog import lookup

    s = by_gpu(scrape(exporter, fx("model_dashes.txt"))[0])
    assert s[(0, None)]["model"] == "NVIDIA-H100-80GB-HBM3"
    assert s[(1, None)]["model"] == "NVIDIA-A100-SXM4-40GB"
    assert lookup(s[(0, None)]["model"]).model_key.startswith("h100")
    assert lookup(s[(1, None)]["model"]).model_key == "a100_sxm4_40gb"


def test_xid_is_reported_when_the_sticky_value_changes(exporter):
    # scrape:        1     2     3     4     5     6
    # GPU 0 gauge:   0     13    13    13    0     13     (5: exporter restarted)
    # GPU 1 gauge:   43    43    -     43    0     43     (3: row missing)
    # reported:     -/43  13/-  -/-   -/-   -/-   13/43
    src = DcgmSource([exporter.serve("/metrics", "")])
    seen = []
    for tick in range(1, 7):
        exporter.serve("/metrics", fx(f"xid_{tick}.txt"))
        s = by_gpu(flat(src.collect(1_800_000_000.0 + 30 * tick, 30.0)))
        seen.append((s[(0, None)]["xid"], s[(1, None)]["xid"]))
    assert seen == [(None, 43), (13, None), (None, None), (None, None), (None, None), (13, 43)]
    assert src.counters()["xid_events"] == 4
    src.close()


# -- failures ----------------------------------------------------------------------------------
def test_http_500_on_one_url_does_not_stop_the_other_and_is_retried(exporter):
    good = exporter.serve("/good/metrics", fx("timeslicing.txt"))
    bad = exporter.serve("/bad/metrics", "exporter is restarting", status=500)
    src = DcgmSource([bad, good])
    samples = flat(src.collect(1_800_000_000.0, 30.0))
    assert {s["node"] for s in samples} == {"fx-shared"} and len(samples) == 2
    c = src.counters()
    assert (c["scrape_http_errors"], c["scrapes_ok"]) == (1, 1)
    exporter.serve("/bad/metrics", fx("model_dashes.txt"))  # back next tick
    samples = flat(src.collect(1_800_000_030.0, 30.0))
    assert {s["node"] for s in samples} == {"fx-shared", "fx-dashes"}
    c = src.counters()
    assert (c["scrape_http_errors"], c["scrapes_ok"]) == (1, 3)
    src.close()


def test_timeout_on_one_url_does_not_stop_the_other(exporter):
    slow = exporter.serve("/slow/metrics", fx("model_dashes.txt"), delay=15.0)
    good = exporter.serve("/good/metrics", fx("timeslicing.txt"))
    src = DcgmSource([slow, good], timeout_s=0.5)
    t0 = time.monotonic()
    samples = flat(src.collect(1_800_000_000.0, 30.0))
    assert time.monotonic() - t0 < 8.0  # bounded by the timeout (0.5 s), not the 15-s server
    assert {s["node"] for s in samples} == {"fx-shared"}
    assert (src.counters()["scrape_timeouts"], src.counters()["scrapes_ok"]) == (1, 1)
    src.close()


def test_a_trickling_server_is_cut_off_at_the_timeout(exporter):
    # 64 bytes every 0.2 s: each read succeeds, the whole page would take minutes
    url = exporter.serve("/metrics", fx("timeslicing.txt"), trickle=0.2)
    src = DcgmSource([url], timeout_s=0.6)
    t0 = time.monotonic()
    assert src.collect(1_800_000_000.0, 30.0) == []
    assert time.monotonic() - t0 < 8.0  # the timeout (0.6 s) cut it; the page takes minutes
    assert src.counters()["scrape_timeouts"] == 1


def test_connection_refused_is_counted(exporter):
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    src = DcgmSource([f"http://127.0.0.1:{port}/metrics",
                      exporter.serve("/metrics", fx("model_dashes.txt"))])
    assert len(flat(src.collect(1_800_000_000.0, 30.0))) == 2
    assert src.counters()["scrape_connection_errors"] == 1
    src.close()


def test_the_same_gpu_behind_two_urls_is_reported_once(exporter):
    a = exporter.serve("/a/metrics", fx("timeslicing.txt"))
    b = exporter.serve("/b/metrics", fx("timeslicing.txt"))
    src = DcgmSource([a, b])
    assert len(flat(src.collect(1_800_000_000.0, 30.0))) == 2
    c = src.counters()
    assert (c["duplicate_gpus_dropped"], c["samples"], c["scrapes_ok"]) == (2, 2, 2)
    src.close()


def test_counters_start_at_zero_and_bad_urls_are_refused_at_start():
    src = DcgmSource(["http://127.0.0.1:9/metrics"])
    assert src.counters() == dict.fromkeys(COUNTER_NAMES, 0)
    with pytest.raises(ValueError):
        DcgmSource([])
    for bad in ("http://gpu-node:port/metrics", "ftp://gpu-node/metrics", "http:///metrics"):
        with pytest.raises(ValueError, match="not a dcgm-exporter URL"):
            DcgmSource([bad])


# -- the real command line ---------------------------------------------------------------------
@needs_reference
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_cli_agent_prints_one_line_per_gpu_or_mig_instance(exporter, name):
    url = exporter.serve("/metrics", ref(name))
    proc = run_cli("agent", "--source", "dcgm", "--dcgm-url", url, "--stdout", "--once",
                   timeout=60)
    lines = [parse_line(line) for line in proc.stdout.splitlines()]  # each valid schema v1
    count, models, nodes = EXPECTED[name]
    assert len(lines) == count
    assert len({(s["uuid"], s["mig_instance"]) for s in lines}) == count
    assert {s["model"] for s in lines} == models and {s["node"] for s in lines} == nodes
    # the command line prints exactly what the source produces for that tick
    first = lines[0]
    src = DcgmSource([url], cluster=first["cluster"])
    expected = flat(src.collect(first["ts"], first["interval_s"]))
    assert sorted(lines, key=_order) == sorted(expected, key=_order)


def _order(s: dict) -> tuple:
    return (s["node"], s["gpu"], s["mig_instance"] or -1)


def test_cli_agent_keeps_going_when_one_exporter_fails(exporter):
    good = exporter.serve("/good/metrics", fx("hpc_jobs.txt"))
    bad = exporter.serve("/bad/metrics", "boom", status=500)
    proc = run_cli("agent", "--source", "dcgm", "--dcgm-url", bad, "--dcgm-url", good,
                   "--stdout", "--once", timeout=60)
    lines = [parse_line(line) for line in proc.stdout.splitlines()]
    assert len(lines) == 4 and {s["node"] for s in lines} == {"fx-slurm"}
    assert "HTTP 500" in proc.stderr


def test_dcgm_source_imports_neither_polars_nor_duckdb():
    code = ("import sys, json, fleetlens.collectors.dcgm, fleetlens.collectors.agent; "
            "print(json.dumps([m for m in ('polars', 'duckdb') if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert json.loads(out.stdout) == []



# -- keep-alive connections --------------------------------------------------------------------
class KeepAliveExporter:
    """An HTTP/1.1 server that counts the connections it accepts. close_after: hang up after
    each response without saying so (as an exporter's idle timeout does), so the client's
    next request on that connection meets a closed socket."""

    def __init__(self, body: str, close_after: bool = False) -> None:
        self.connections = 0
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                outer.connections += 1

            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                outer.requests += 1
                if self.path == "/old":
                    self.send_response(302)
                    self.send_header("Location", "/metrics")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                self.close_connection = close_after

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_scrapes_reuse_one_connection():
    ex = KeepAliveExporter(fx("timeslicing.txt"))
    src = DcgmSource([ex.url + "/metrics"])
    try:
        first = flat(src.collect(1_800_000_000.0, 1.0))
        for tick in range(1, 4):
            assert flat(src.collect(1_800_000_000.0 + tick, 1.0)) == [
                {**s, "ts": 1_800_000_000.0 + tick} for s in first]
        assert (ex.requests, ex.connections) == (4, 1)
        assert src.counters()["scrapes_ok"] == 4
    finally:
        src.close()
        ex.close()


def test_a_connection_the_exporter_closed_is_replaced_without_an_error():
    ex = KeepAliveExporter(fx("timeslicing.txt"), close_after=True)
    src = DcgmSource([ex.url + "/metrics"])
    try:
        for tick in range(3):
            assert len(flat(src.collect(1_800_000_000.0 + tick, 1.0))) == 2
            time.sleep(0.05)  # let the server's hang-up arrive
        c = src.counters()
        errors = c["scrape_connection_errors"] + c["scrape_http_errors"]
        assert (c["scrapes_ok"], errors) == (3, 0)
        assert ex.connections == 3
    finally:
        src.close()
        ex.close()


def test_a_redirect_is_followed():
    ex = KeepAliveExporter(fx("model_dashes.txt"))
    src = DcgmSource([ex.url + "/old"])
    try:
        assert len(flat(src.collect(1_800_000_000.0, 1.0))) == 2
        assert src.counters()["scrapes_ok"] == 1
    finally:
        src.close()
        ex.close()


def test_an_integer_beyond_float_range_is_null_not_a_crash(exporter):
    page = ('DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-big-0",Hostname="fx-big"} -' + "9" * 400
            + '\nDCGM_FI_DEV_GPU_UTIL{gpu="1",UUID="GPU-big-1",Hostname="fx-big"} 7\n')
    s = by_gpu(scrape(exporter, page)[0])
    assert (s[(0, None)]["gpu_util"], s[(1, None)]["gpu_util"]) == (None, 7.0)
