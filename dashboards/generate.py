"""Generate fleetlens' Grafana dashboards (classic dashboard JSON) with grafana-foundation-sdk.

    .venv/bin/python dashboards/generate.py            # (re)write dashboards/json/*.json
    .venv/bin/python dashboards/generate.py --check    # exit 1 if a committed file differs

`make dashboards` runs the first form. The JSON is committed; tests/test_dashboards.py checks
that it equals what this script produces, validates it against Grafana's dashboard JSON
schema, and checks every datasource uid, Infinity route and PromQL metric name it uses.

SDK pin: grafana-foundation-sdk==0.0.21 (the Grafana 12 build; see pyproject.toml). The SDK
writes schemaVersion 42; we write 41, which every Grafana from 11.6 on loads (Grafana migrates
older dashboards forward on load, never backward), so the dashboards also load on the
Grafana 12.1 image of docker-compose.yml.

Two datasources, both provisioned with fixed uids (dashboards/provisioning/datasources):

* Prometheus (`fleetlens-prometheus`): live metrics of the pipeline (pipeline/metrics.py) and,
  where the GPU profile of the compose stack runs, of dcgm-exporter (deploy/dcgm/).
* Infinity (`fleetlens-reports`): the report API (`fleetlens serve`), JSON read with the
  backend parser, time range passed as `${__timeFrom}`/`${__timeTo}` (epoch ms).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import bargauge, stat, table, timeseries
from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import prometheus as prom_b
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.runtime import UnknownDataquery
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dash_m

OUT = Path(__file__).resolve().parent / "json"
SCHEMA_VERSION = 41

PROM_UID = "fleetlens-prometheus"
INFINITY_UID = "fleetlens-reports"
PROM = common.DataSourceRef(type_val="prometheus", uid=PROM_UID)
INFINITY = common.DataSourceRef(type_val="yesoreyeram-infinity-datasource", uid=INFINITY_UID)
FOLDER_TAGS = ["fleetlens"]

TIME_RANGE = [("from", "${__timeFrom}"), ("to", "${__timeTo}")]


# -- queries ------------------------------------------------------------------------------------
def prom(expr: str, legend: str = "", ref: str = "A", instant: bool = False):
    q = prom_b.Dataquery().expr(expr).ref_id(ref).editor_mode("code")
    if legend:
        q = q.legend_format(legend)
    return q.instant() if instant else q.range()


class Raw(cogbuilder.Builder):
    """A query for a datasource the SDK has no types for (Infinity): passed through as is."""

    def __init__(self, data: dict):
        self.data = data

    def build(self):
        return UnknownDataquery(self.data)


def infinity(path: str, params: list[tuple[str, str]], columns: list[tuple[str, str, str]],
             root: str = "", ref: str = "A", fmt: str = "table") -> Raw:
    """An Infinity target: GET `path` on the report API, which answers a JSON array of flat
    objects (`root` "": the array itself).

    columns: (selector in the API's JSON, display name, Infinity type).
    """
    return Raw({
        "refId": ref, "datasource": {"type": INFINITY.type_val, "uid": INFINITY.uid},
        "type": "json", "source": "url", "parser": "backend", "format": fmt,
        "url": path,
        "url_options": {"method": "GET", "data": "", "body_type": "", "body_content_type": "",
                        "headers": [],
                        "params": [{"key": k, "value": v} for k, v in params]},
        "root_selector": root,
        "columns": [{"selector": s, "text": t, "type": ty} for s, t, ty in columns],
        "filters": [], "computed_columns": [],
    })


SERIES_KEYS = {"tenant": ["tenant"], "model": ["model"], "cluster": ["cluster"],
               "gpu": ["uuid", "node", "gpu", "model"], "fleet": []}


def series(metrics: list[str], group: str, extra: list[tuple[str, str]] = (), **kw) -> Raw:
    """Bucketed time series from /v1/series/<group>: one row per (bucket, key)."""
    cols = [("time", "Time", "timestamp")]
    cols += [(k, k, "number" if k == "gpu" else "string") for k in SERIES_KEYS[group]]
    cols += [(m, m, "number") for m in metrics]
    return infinity(f"/v1/series/{group}", [*TIME_RANGE, ("step", "$step"),
                                            ("metric", ",".join(metrics)), *extra], cols, **kw)


# -- panels -------------------------------------------------------------------------------------
def thresholds(*steps: tuple[float | None, str]):
    return dash_b.ThresholdsConfig().mode(dash_m.ThresholdsMode.ABSOLUTE).steps(
        [dash_m.Threshold(value=v, color=c) for v, c in steps])


RATIO_STEPS = thresholds((None, "red"), (0.3, "orange"), (0.6, "green"))


def stat_panel(title: str, target, unit: str = "short", w: int = 6, h: int = 5,
               desc: str = "", steps=None, ds=PROM, calc: str = "lastNotNull"):
    p = (stat.Panel().title(title).datasource(ds).with_target(target).unit(unit)
         .span(w).height(h).graph_mode(common.BigValueGraphMode.NONE)
         .color_mode(common.BigValueColorMode.VALUE)
         .reduce_options(common_b.ReduceDataOptions().calcs([calc]).values(False)))
    if steps is not None:
        p = p.thresholds(steps)
    return p.description(desc) if desc else p


def ts_panel(title: str, targets: list, unit: str = "short", w: int = 12, h: int = 8,
             desc: str = "", ds=PROM, stack: bool = False, long_to_wide: bool = False,
             min_val: float | None = None, max_val: float | None = None):
    p = (timeseries.Panel().title(title).datasource(ds).targets(targets).unit(unit)
         .span(w).height(h)
         .legend(common_b.VizLegendOptions().display_mode(common.LegendDisplayMode.LIST)
                 .placement(common.LegendPlacement.BOTTOM).show_legend(True))
         .tooltip(common_b.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI)
                  .sort(common.SortOrder.DESCENDING)))
    if stack:
        p = p.stacking(common_b.StackingConfig().mode(common.StackingMode.NORMAL)) \
            .fill_opacity(40)
    if long_to_wide:
        # The API answers in long form (time, key, value...); one series per key.
        p = p.with_transformation(dash_m.DataTransformerConfig(
            id_val="prepareTimeSeries", options={"format": "multi"}))
    if min_val is not None:
        p = p.min(min_val)
    if max_val is not None:
        p = p.max(max_val)
    return p.description(desc) if desc else p


def table_panel(title: str, target, w: int = 12, h: int = 8, desc: str = "", ds=INFINITY):
    # No per-column overrides: the dashboard JSON schema types matcher options and override
    # values as objects, while Grafana's byName matcher takes a string.
    p = (table.Panel().title(title).datasource(ds).with_target(target).span(w).height(h)
         .cell_height(common.TableCellHeight.SM).decimals(3)
         .footer(common_b.TableFooterOptions().show(False).reducer(["sum"])))
    return p.description(desc) if desc else p


def bar_panel(title: str, target, unit: str = "percentunit", w: int = 12, h: int = 8,
              desc: str = "", ds=PROM, max_val: float | None = 1.0):
    p = (bargauge.Panel().title(title).datasource(ds).with_target(target).unit(unit)
         .span(w).height(h).display_mode(common.BarGaugeDisplayMode.GRADIENT)
         .orientation(common.VizOrientation.HORIZONTAL).min(0)
         .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]).values(False)))
    if max_val is not None:
        p = p.max(max_val).thresholds(RATIO_STEPS)
    return p.description(desc) if desc else p


# -- variables ----------------------------------------------------------------------------------
def step_variable():
    return (dash_b.IntervalVariable("step").label("Bucket")
            .description("Bucket of the report API's time series (whole minutes, >= 1m)")
            .values("1h,6h,1d,1w")
            .current(dash_m.VariableOption(selected=True, text="1h", value="1h")))


def tenant_variable():
    """Tenants with live GPUs; any other name can be typed (reports reach further back).

    Written in the string form: the dashboard JSON schema only takes string queries (an
    Infinity variable, which needs the object form, would not validate)."""
    return prom_variable("tenant", "Tenant", "label_values(fleetlens_tenant_gpus, tenant)",
                         multi=False).allow_custom_value(True)


def prom_variable(name: str, label: str, query: str, multi: bool = True):
    v = (dash_b.QueryVariable(name).label(label).datasource(PROM).query(query)
         .definition(query).refresh(dash_m.VariableRefresh.ON_TIME_RANGE_CHANGED)
         .sort(dash_m.VariableSort.ALPHABETICAL_ASC).multi(multi).include_all(multi))
    return v.all_value(".*") if multi else v


# -- dashboards ---------------------------------------------------------------------------------
class Board:
    """A dashboard builder that numbers panels (stable `viewPanel=` links) and adds rows."""

    def __init__(self, uid: str, title: str, description: str):
        self.b = (dash_b.Dashboard(title).uid(uid).description(description).tags(FOLDER_TAGS)
                  .timezone("utc").time("now-24h", "now").refresh("1m").editable()
                  .tooltip(dash_m.DashboardCursorSync.CROSSHAIR))
        self.next_id = 1

    def row(self, title: str) -> Board:
        self.b = self.b.with_row(dash_b.Row(title).id(self.next_id))
        self.next_id += 1
        return self

    def add(self, *panels) -> Board:
        for p in panels:
            self.b = self.b.with_panel(p.id(self.next_id))
            self.next_id += 1
        return self

    def var(self, *variables) -> Board:
        for v in variables:
            self.b = self.b.with_variable(v)
        return self

    def build(self):
        d = self.b.build()
        d.schema_version = SCHEMA_VERSION
        return d


STATE_EXPR = 'sum by (state) (fleetlens_tenant_gpus{tenant=~"%s"})'
UTIL = "fleetlens_gpu_utilization_ratio"
MFU = "fleetlens_gpu_mfu_ratio"


def fleet_overview():
    d = Board("fleetlens-fleet", "fleetlens / Fleet overview",
              "The whole fleet: live GPU states and utilization (Prometheus), and GPU-hours, "
              "MFU and idle time by tenant, model and cluster from the report API.")
    d.var(step_variable())
    d.row("Now (live, newest closed minute per GPU)")
    for state, color in (("busy", "green"), ("idle", "orange"), ("idle_held", "red"),
                         ("unavailable", "purple")):
        d.add(stat_panel(f"GPUs {state.replace('_', '-')}",
                         prom(f'sum(fleetlens_gpu_state{{state="{state}"}})', instant=True),
                         w=4, steps=thresholds((None, color))))
    d.add(stat_panel("Fleet utilization", prom(f"avg({UTIL})", instant=True), "percentunit",
                     w=4, steps=RATIO_STEPS, desc="Mean gpu_util of every GPU's newest minute."),
          stat_panel("Fleet MFU", prom(f"avg({MFU})", instant=True), "percentunit", w=4,
                     steps=RATIO_STEPS,
                     desc="Mean MFU estimate; GPUs of models the catalog does not know are "
                          "left out."))
    d.add(ts_panel("GPUs by state", [prom("sum by (state) (fleetlens_gpu_state)", "{{state}}")],
                   stack=True, desc="Number of GPUs in each state (one-hot fleetlens_gpu_state)."),
          ts_panel("Utilization and MFU by model",
                   [prom(f"avg by (model) ({UTIL})", "util {{model}}"),
                    prom(f"avg by (model) ({MFU})", "MFU {{model}}", ref="B")],
                   "percentunit", min_val=0, max_val=1))
    d.add(bar_panel("MFU by tenant (now)",
                    prom(f'avg by (tenant) ({MFU}{{tenant!=""}})', "{{tenant}}", instant=True)),
          bar_panel("Idle-held GPUs by tenant (now)",
                    prom('sum by (tenant) (fleetlens_tenant_gpus{state="idle_held"})',
                         "{{tenant}}", instant=True), unit="short", max_val=None,
                    desc="GPUs holding memory without compute in their newest minute; "
                         'tenant "" is unallocated.'))
    d.row("Reports (report API, selected time range)")
    d.add(stat_panel("GPU-hours observed", infinity("/v1/fleet", TIME_RANGE, [
        ("gpu_hours_observed", "GPU-hours observed", "number")]), "h", w=12, h=4,
        ds=INFINITY, desc="All GPU time the store holds for the range (admin token)."),
          stat_panel("GPU-hours unallocated", infinity("/v1/fleet", TIME_RANGE, [
              ("gpu_hours_unallocated", "GPU-hours unallocated", "number")]), "h", w=12, h=4,
              ds=INFINITY, steps=thresholds((None, "green"), (1, "orange")),
              desc="GPU time no tenant was attributed: capacity nobody paid for."))
    d.add(ts_panel("Fleet GPU-hours: busy, idle, idle-held",
                   [series(["gpu_hours_busy", "gpu_hours_idle", "gpu_hours_idle_held"],
                           "fleet")], "h", ds=INFINITY, long_to_wide=True,
                   desc="Per bucket of $step. Idle-held is part of idle."),
          ts_panel("MFU (allocated time) by tenant", [series(["mfu_allocated"], "tenant")],
                   "percentunit", ds=INFINITY, long_to_wide=True, min_val=0, max_val=1))
    d.add(ts_panel("GPU-hours observed by model", [series(["gpu_hours_observed"], "model")],
                   "h", ds=INFINITY, stack=True, long_to_wide=True),
          ts_panel("Busy GPU-hours by cluster", [series(["gpu_hours_busy"], "cluster")], "h",
                   ds=INFINITY, stack=True, long_to_wide=True))
    d.add(table_panel(
        "Tenants: GPU-hours, MFU, energy",
        infinity("/v1/summary", TIME_RANGE, [
            ("tenant", "Tenant", "string"),
            ("gpu_hours_allocated", "Allocated (h)", "number"),
            ("gpu_hours_busy", "Busy (h)", "number"),
            ("gpu_hours_idle", "Idle (h)", "number"),
            ("gpu_hours_idle_held", "Idle-held (h)", "number"),
            ("mfu_allocated", "MFU allocated", "number"),
            ("mfu_busy", "MFU busy", "number"),
            ("energy_kwh", "Energy (kWh)", "number")]),
        w=24,
        desc="Same figures as `fleetlens report range`; the largest allocations show how "
             "concentrated usage is."))
    d.add(table_panel("Top idle allocations", idle_allocations([]), w=16),
          table_panel("GPU models without MFU (not in the catalog)",
                      infinity("/v1/unknown-models", TIME_RANGE, [
                          ("model", "Model", "string"), ("gpus", "GPUs", "number"),
                          ("gpu_hours_observed", "GPU-hours", "number")]), w=8))
    return d.build()


def idle_allocations(extra: list[tuple[str, str]]) -> Raw:
    return infinity("/v1/idle-allocations", [*TIME_RANGE, ("limit", "20"), *extra], [
        ("tenant", "Tenant", "string"), ("node", "Node", "string"), ("gpu", "GPU", "number"),
        ("model", "Model", "string"), ("gpu_hours_allocated", "Allocated (h)", "number"),
        ("gpu_hours_idle", "Idle (h)", "number"),
        ("gpu_hours_idle_held", "Idle-held (h)", "number"),
        ("idle_ratio", "Idle share", "number")])


def tenant_board():
    t = "$tenant"
    d = Board("fleetlens-tenant", "fleetlens / Tenant",
              "One tenant's GPUs: live states, utilization and MFU per GPU, and its report "
              "figures. The tenant list comes from the report API (a tenant token sees only "
              "its own tenant).")
    d.var(tenant_variable(), step_variable())
    d.row("Now (live)")
    for state, color in (("busy", "green"), ("idle", "orange"), ("idle_held", "red"),
                         ("unavailable", "purple")):
        d.add(stat_panel(f"GPUs {state.replace('_', '-')}",
                         prom(f'sum(fleetlens_tenant_gpus{{tenant="{t}",state="{state}"}})',
                              instant=True), w=6, h=4, steps=thresholds((None, color))))
    d.add(ts_panel("Utilization per GPU",
                   [prom(f'{UTIL}{{tenant="{t}"}}', "{{node}}/{{gpu}}")], "percentunit",
                   min_val=0, max_val=1),
          ts_panel("MFU per GPU", [prom(f'{MFU}{{tenant="{t}"}}', "{{node}}/{{gpu}}")],
                   "percentunit", min_val=0, max_val=1))
    d.add(ts_panel("GPUs by state", [prom(STATE_EXPR % t, "{{state}}")], stack=True),
          ts_panel("Tensor activity per GPU",
                   [prom(f'fleetlens_gpu_tensor_active_ratio{{tenant="{t}"}}',
                         "{{node}}/{{gpu}}")], "percentunit", min_val=0, max_val=1))
    d.row("Reports (report API)")
    d.add(ts_panel("GPU-hours: busy, idle, idle-held",
                   [series(["gpu_hours_busy", "gpu_hours_idle", "gpu_hours_idle_held"],
                           "tenant", [("tenant", t)])], "h", ds=INFINITY, long_to_wide=True),
          ts_panel("MFU: allocated and busy time",
                   [series(["mfu_allocated", "mfu_busy"], "tenant", [("tenant", t)])],
                   "percentunit", ds=INFINITY, long_to_wide=True, min_val=0, max_val=1))
    d.add(ts_panel("Energy", [series(["energy_kwh"], "tenant", [("tenant", t)])], "kwatth",
                   ds=INFINITY, long_to_wide=True),
          table_panel("Summary", infinity("/v1/summary", [*TIME_RANGE, ("tenant", t)], [
              ("tenant", "Tenant", "string"),
              ("gpu_hours_allocated", "Allocated (h)", "number"),
              ("gpu_hours_busy", "Busy (h)", "number"),
              ("gpu_hours_idle", "Idle (h)", "number"),
              ("gpu_hours_idle_held", "Idle-held (h)", "number"),
              ("mfu_allocated", "MFU allocated", "number"),
              ("mfu_busy", "MFU busy", "number"),
              ("energy_kwh", "Energy (kWh)", "number")])))
    d.add(table_panel("Idle allocations", idle_allocations([("tenant", t)]), w=16),
          table_panel("Data coverage", infinity(
              "/v1/coverage", [*TIME_RANGE, ("by", "tenant"), ("tenant", t)], [
                  ("tenant", "Tenant", "string"), ("gpus", "GPUs", "number"),
                  ("gpu_hours_observed", "Observed (h)", "number"),
                  ("coverage", "Coverage", "number")]), w=8))
    return d.build()


def gpu_board():
    sel = 'node=~"$node",uuid=~"$uuid"'
    d = Board("fleetlens-gpu", "fleetlens / GPU and node drill-down",
              "One node or GPU: the pipeline's per-minute view, the raw dcgm-exporter "
              "counters where the exporter is scraped, and the report API's series per GPU.")
    d.var(prom_variable("node", "Node", "label_values(fleetlens_gpu_state, node)"),
          prom_variable("uuid", "GPU", 'label_values(fleetlens_gpu_state{node=~"$node"}, uuid)'),
          step_variable())
    d.row("Pipeline view (newest closed minute per GPU)")
    d.add(table_panel("GPUs now", prom(f"fleetlens_gpu_state{{{sel}}} == 1", instant=True)
                      .format("table"), w=24, h=6, ds=PROM,
                      desc="One row per GPU: labels and its current state."))
    d.add(ts_panel("Utilization", [prom(f"{UTIL}{{{sel}}}", "{{node}}/{{gpu}}")],
                   "percentunit", min_val=0, max_val=1),
          ts_panel("SM and tensor activity",
                   [prom(f"fleetlens_gpu_sm_active_ratio{{{sel}}}", "SM {{node}}/{{gpu}}"),
                    prom(f"fleetlens_gpu_tensor_active_ratio{{{sel}}}",
                         "tensor {{node}}/{{gpu}}", ref="B")],
                   "percentunit", min_val=0, max_val=1))
    d.add(ts_panel("MFU estimate", [prom(f"{MFU}{{{sel}}}", "{{node}}/{{gpu}}")],
                   "percentunit", min_val=0, max_val=1, w=8),
          ts_panel("Power", [prom(f"fleetlens_gpu_power_watts{{{sel}}}", "{{node}}/{{gpu}}")],
                   "watt", w=8),
          ts_panel("Memory used",
                   [prom(f"fleetlens_gpu_memory_used_bytes{{{sel}}}", "{{node}}/{{gpu}}")],
                   "bytes", w=8))
    d.row("dcgm-exporter (GPU profile of the compose stack)")
    dsel = 'Hostname=~"$node",UUID=~"$uuid"'
    d.add(ts_panel("Graphics engine and tensor pipe (DCGM)",
                   [prom(f"DCGM_FI_PROF_GR_ENGINE_ACTIVE{{{dsel}}}", "engine GPU {{gpu}}"),
                    prom(f"DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{{{dsel}}}", "tensor GPU {{gpu}}",
                         ref="B")], "percentunit", min_val=0, max_val=1,
                   desc="Ratios 0-1 straight from the exporter (MIG rows: relative to the "
                        "instance)."),
          ts_panel("SM clock and temperature (DCGM)",
                   [prom(f"DCGM_FI_DEV_SM_CLOCK{{{dsel}}}", "clock MHz GPU {{gpu}}"),
                    prom(f"DCGM_FI_DEV_GPU_TEMP{{{dsel}}}", "temp C GPU {{gpu}}", ref="B")]))
    d.add(ts_panel("Power (DCGM)", [prom(f"DCGM_FI_DEV_POWER_USAGE{{{dsel}}}",
                                         "GPU {{gpu}}")], "watt", w=8),
          ts_panel("Framebuffer used (DCGM, MiB)",
                   [prom(f"DCGM_FI_DEV_FB_USED{{{dsel}}}", "GPU {{gpu}}")], "decmbytes", w=8),
          stat_panel("Last XID (DCGM)", prom(f"max by (gpu) (DCGM_FI_DEV_XID_ERRORS{{{dsel}}})",
                                             "GPU {{gpu}}", instant=True), w=8, h=8,
                     steps=thresholds((None, "green"), (1, "red")),
                     desc="The last XID number (sticky), not a count; 0 = none since start."))
    d.row("Reports (report API)")
    d.add(ts_panel("Utilization and MFU per GPU (per $step)",
                   [series(["gpu_util_mean", "mfu_busy"], "gpu", [("node", "$node")])],
                   ds=INFINITY, long_to_wide=True),
          ts_panel("XIDs per GPU", [series(["xid_count"], "gpu", [("node", "$node")])],
                   ds=INFINITY, long_to_wide=True))
    d.add(table_panel("Data coverage by node", infinity(
        "/v1/coverage", [*TIME_RANGE, ("by", "node")], [
            ("node", "Node", "string"), ("gpus", "GPUs", "number"),
            ("gpu_hours_observed", "Observed (h)", "number"),
            ("gpu_hours_expected", "Expected (h)", "number"),
            ("coverage", "Coverage", "number"),
            ("last_minute", "Newest minute", "timestamp")]), w=24))
    return d.build()


def pipeline_board():
    d = Board("fleetlens-pipeline", "fleetlens / Pipeline health",
              "The stream job: consumer lag, throughput, flush time, dead letters and late "
              "samples; the store's newest minute from the report API.")
    p = "fleetlens_pipeline_"
    rate = "[$__rate_interval]"
    d.row("Now")
    d.add(stat_panel("Consumer lag (records)", prom(f"sum({p}consumer_lag_records)",
                                                    instant=True), w=4,
                     steps=thresholds((None, "green"), (10000, "orange"), (100000, "red"))),
          stat_panel("Since last flush", prom(f"time() - max({p}last_flush_timestamp_seconds)",
                                              instant=True), "s", w=4,
                     steps=thresholds((None, "green"), (60, "orange"), (300, "red"))),
          stat_panel("Samples / s", prom(f"sum(rate({p}samples_total{rate}))", instant=True),
                     "short", w=4),
          stat_panel("Dead letters / s", prom(f"sum(rate({p}dead_letters_total{rate}))",
                                              instant=True), "short", w=4,
                     steps=thresholds((None, "green"), (0.01, "red"))),
          stat_panel("Scrape targets up", prom('sum(up{job=~"fleetlens.*"})', instant=True),
                     w=4, desc="Prometheus' own `up` for the fleetlens scrape jobs."),
          stat_panel("Newest minute in the store", infinity(
              "/v1/coverage", [*TIME_RANGE, ("by", "node")],
              [("last_minute", "Newest minute", "timestamp")]), "dateTimeFromNow", w=4,
              ds=INFINITY, calc="max",
              desc="Newest rollup minute of any node, as the report API sees it over the "
                   "dashboard's range; it should trail now by a minute or two."))
    d.row("Throughput and latency")
    d.add(ts_panel("Consumer lag per partition",
                   [prom(f"{p}consumer_lag_records", "p{{partition}}"),
                    prom(f"{p}uncommitted_records", "not durable p{{partition}}", ref="B")],
                   desc="Lag: end offset - position. Not durable: end offset - the offset a "
                        "restart resumes from (samples waiting in open windows)."),
          ts_panel("Samples and messages per second",
                   [prom(f"sum(rate({p}samples_total{rate}))", "samples/s"),
                    prom(f"sum(rate({p}messages_total{rate}))", "messages/s", ref="B"),
                    prom(f"sum(rate({p}rollup_rows_total{rate}))", "rollup rows/s", ref="C")]))
    d.add(ts_panel("Flush duration",
                   [prom(f"histogram_quantile(0.5, sum by (le) (rate({p}flush_duration_seconds"
                         f"_bucket{rate})))", "p50"),
                    prom(f"histogram_quantile(0.99, sum by (le) (rate({p}flush_duration_"
                         f"seconds_bucket{rate})))", "p99", ref="B")], "s"),
          ts_panel("Time per stage (share of wall clock)",
                   [prom(f"sum by (stage) (rate({p}stage_seconds_total{rate}))", "{{stage}}")],
                   "percentunit", stack=True))
    d.row("Data quality")
    d.add(ts_panel("Dead letters by reason",
                   [prom(f"sum by (reason) (rate({p}dead_letters_total{rate}))", "{{reason}}")],
                   w=8),
          ts_panel("Late samples and replays skipped",
                   [prom(f"sum(rate({p}late_samples_total{rate}))", "late/s"),
                    prom(f"sum(rate({p}replayed_samples_skipped_total{rate}))", "skipped/s",
                         ref="B")], w=8),
          ts_panel("Open window rows", [prom(f"sum({p}open_window_rows)", "rows")], w=8))
    d.add(table_panel("Rollup rows of unknown GPU models",
                      prom(f"sum by (model) ({p}unknown_model_rollup_rows_total)",
                           instant=True).format("table"), w=24, h=6, ds=PROM))
    return d.build()


DASHBOARDS = {
    "fleet-overview.json": fleet_overview,
    "tenant.json": tenant_board,
    "gpu-node.json": gpu_board,
    "pipeline-health.json": pipeline_board,
}


def render() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    enc = JSONEncoder(sort_keys=True, indent=2)
    return {name: enc.encode(make()) + "\n" for name, make in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="compare with the committed files instead of writing them")
    args = ap.parse_args(argv)
    rendered = render()
    if args.check:
        stale = [n for n, text in rendered.items()
                 if not (OUT / n).is_file() or (OUT / n).read_text() != text]
        if stale:
            print(f"out of date: {', '.join(stale)} (run `make dashboards`)", file=sys.stderr)
            return 1
        return 0
    OUT.mkdir(exist_ok=True)
    for name, text in rendered.items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
