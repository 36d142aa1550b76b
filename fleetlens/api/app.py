"""The fleetlens HTTP API (FastAPI): report tables and time series over the store, for Grafana's
Infinity datasource (JSON arrays of flat objects, or CSV) and for people (HTML).

Every /v1 route needs a token (see auth.py). A tenant token is confined to its tenant on the
server, whatever the parameters say: `tenant=<another>` is 403, no `tenant` means its own, and
the one fleet-wide table (/v1/fleet) is 403. Routes, parameters and examples: docs/api.md.
"""


import html
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import duckdb
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from fleetlens.api import params as P
from fleetlens.api.auth import Principal, TokenTable
from fleetlens.api.data import StoreReader, Table
from fleetlens.api.render import html_table, iso, page, respond

MAX_ROWS = 200_000  # rows one response may hold (series by GPU over long ranges)
SERIES_GROUPS = {  # route suffix -> (group in sql/api_series.sql, key column name)
    "tenant": ("tenant", "tenant"), "model": ("model", "model"),
    "cluster": ("cluster", "cluster"), "gpu": ("gpu", "uuid"), "fleet": ("fleet", None),
}

_bearer = HTTPBearer(auto_error=False, description=(
    "A token from the [api] tokens config (its SHA-256 is stored there). HTTP Basic with any "
    "user name and the token as the password works too (for browsers)."))

# -- parameters shared by the routes -----------------------------------------------------------
_TIME_DOC = "RFC 3339 time, YYYY-MM-DD (UTC midnight) or epoch milliseconds"
From = Annotated[str, Query(alias="from", description=f"Range start (inclusive): {_TIME_DOC} "
                                                      "(Grafana: ${__timeFrom})",
                            examples=["2026-11-16T00:00:00Z", "1794787200000"])]
To = Annotated[str, Query(alias="to", description=f"Range end (exclusive): {_TIME_DOC} "
                                                "(Grafana: ${__timeTo})",
                          examples=["2026-11-18T00:00:00Z", "1794960000000"])]
Tenant = Annotated[str | None, Query(
    description="Only this tenant. Admin: any known tenant (unknown -> 404). Tenant token: its "
                "own (the default); any other -> 403.", examples=["acme-ai"])]
Format = Annotated[str, Query(alias="format", description="json (default), csv or html",
                              examples=["json", "csv", "html"])]
Step = Annotated[str, Query(description="Bucket width: a whole number of minutes, e.g. 5m, 1h, "
                                        "1d, 1w, 3600s", examples=["1h", "5m", "1d"])]
Metric = Annotated[list[str] | None, Query(
    description="Metrics to return, repeated or comma-separated (default: all): "
                + ", ".join(P.SERIES_METRICS), examples=[["gpu_hours_busy,mfu_allocated"]])]

ERROR_SCHEMA = {"type": "object", "properties": {"error": {"type": "string"}},
                "required": ["error"]}
_err = {"content": {"application/json": {"schema": ERROR_SCHEMA}}}
TABLE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "JSON array of flat objects (default), CSV or an HTML table",
          "content": {"application/json": {"schema": {"type": "array",
                                                      "items": {"type": "object"}}},
                      "text/csv": {"schema": {"type": "string"}},
                      "text/html": {"schema": {"type": "string"}}}},
    400: {"description": "Bad parameter", **_err},
    401: {"description": "Missing or invalid token", **_err},
    403: {"description": "The token may not read this", **_err},
    404: {"description": "Unknown tenant", **_err},
}


def create_app(store_dir: str, tokens: list[dict], max_points: int = 10_000,
               max_rows: int = MAX_ROWS, gpus_per_node: int = 8) -> FastAPI:
    reader = StoreReader(store_dir)
    table = TokenTable(tokens)
    app = FastAPI(title="fleetlens API", version="1",
                  description="GPU fleet utilization reports and time series from the "
                              "fleetlens store. See docs/api.md.")
    app.state.reader = reader

    def principal(request: Request, _: Annotated[Any, Depends(_bearer)] = None) -> Principal:
        return table.authenticate(request.headers.get("authorization"))

    Auth = Annotated[Principal, Depends(principal)]

    def scoped(p: Principal, tenant: str | None) -> str | None:
        """The tenant to filter on: 403 for a tenant token asking for another; 404 for an admin
        asking for a tenant that neither has data nor a token."""
        scope = p.scope(P.parse_name(tenant, "tenant"))
        if (p.is_admin and scope is not None and scope not in table.tenants
                and scope not in reader.known_tenants(scope)):
            raise P.ApiError(404, f"unknown tenant {scope[:80]!r}")
        return scope

    def rng(start: str, end: str) -> P.TimeRange:
        return P.TimeRange(*P.parse_range(start, end))

    def subtitle(r: P.TimeRange, scope: str | None) -> str:
        who = f"tenant {scope}" if scope else "whole fleet"
        return f"{iso(r.start)} .. {iso(r.end)}, {who}"

    access: dict[str, str] = {}  # route -> who may read what (shown on the index page)
    route = _router(app, access)

    # -- tables --------------------------------------------------------------------------------
    @route("/v1/tenants", "Tenants with data in the store",
           "Each tenant with the first and last minute of its data.",
           "admin: every tenant; tenant token: its own row (if it has data)")
    def tenants(p: Auth, fmt: Format = "json"):
        f = P.parse_format(fmt)
        t = reader.run("api_tenants", {"tenant": p.tenant})
        return respond(t, f, "Tenants", "tenants with data in the store")

    @route("/v1/summary", "Per-tenant summary for a range",
           "The per-tenant table of `fleetlens report range` (same SQL, same numbers).",
           "admin: all tenants or `tenant`; tenant token: its own row, another tenant -> 403")
    def summary(p: Auth, start: From, end: To, tenant: Tenant = None, fmt: Format = "json"):
        scope = scoped(p, tenant)
        f, r = P.parse_format(fmt), rng(start, end)
        t = reader.run("report_range_tenants", {**r.bind(), "tenant": scope,
                                                "gpus_per_node": gpus_per_node})
        return respond(t, f, "GPU utilization by tenant", subtitle(r, scope))

    @route("/v1/fleet", "Fleet totals for a range (admin only)",
           "GPU-hours observed, unallocated and unavailable over the whole fleet, as in "
           "`fleetlens report range`.",
           "admin only; a tenant token gets 403 (fleet-wide by definition)")
    def fleet(p: Auth, start: From, end: To, fmt: Format = "json"):
        p.require_admin("/v1/fleet")
        f, r = P.parse_format(fmt), rng(start, end)
        t = reader.run("report_range_fleet", {**r.bind(), "gpus_per_node": gpus_per_node})
        return respond(t, f, "Fleet totals", subtitle(r, None))

    @route("/v1/idle-allocations", "Top idle allocations",
           "Per (tenant, GPU): allocated, idle and idle-held GPU-hours in the range, most idle "
           "first.", "admin: all tenants or `tenant`; tenant token: its own GPU time only, "
           "another tenant -> 403")
    def idle_allocations(p: Auth, start: From, end: To, tenant: Tenant = None,
                         limit: Annotated[int, Query(ge=1, le=10_000,
                                                     description="rows (1..10000)")] = 20,
                         fmt: Format = "json"):
        scope = scoped(p, tenant)
        f, r = P.parse_format(fmt), rng(start, end)
        t = reader.run("api_idle_allocations", {**r.bind(), "tenant": scope, "limit": limit})
        return respond(t, f, "Top idle allocations", subtitle(r, scope))

    @route("/v1/unknown-models", "GPU models the catalog does not know",
           "Models with no MFU estimate, with GPUs and GPU-hours observed.",
           "admin: the fleet (as in the report) or `tenant`; tenant token: its own GPU time "
           "only, another tenant -> 403")
    def unknown_models(p: Auth, start: From, end: To, tenant: Tenant = None,
                       fmt: Format = "json"):
        scope = scoped(p, tenant)
        f, r = P.parse_format(fmt), rng(start, end)
        t = reader.run("report_range_unknown_models", {**r.bind(), "tenant": scope})
        return respond(t, f, "Unknown GPU models", subtitle(r, scope))

    @route("/v1/coverage", "Data coverage: observed vs expected GPU-hours",
           "Per node (by=node) or tenant (by=tenant): observed GPU-hours against GPUs seen x "
           "the range's hours (up to now).", "admin: all or `tenant`; tenant token: its own "
           "GPU time only, another tenant -> 403")
    def coverage(p: Auth, start: From, end: To,
                 by: Annotated[str, Query(description="node (default) or tenant")] = "node",
                 tenant: Tenant = None, fmt: Format = "json"):
        scope = scoped(p, tenant)
        f, r = P.parse_format(fmt), rng(start, end)
        key = P.parse_choice(by, "by", ("node", "tenant"), "node")
        upto = min(r.end, datetime.now(UTC))
        hours = max((upto - r.start).total_seconds(), 0.0) / 3600.0
        t = reader.run("api_coverage", {**r.bind(), "tenant": scope, "by": key,
                                        "expected_hours": hours})
        t = t.select(t.columns, rename={"key": key})
        return respond(t, f, f"Data coverage by {key}", subtitle(r, scope))

    # -- time series ---------------------------------------------------------------------------
    def make_series(suffix: str, group: str, key: str | None) -> Callable:
        def series(p: Auth, start: From, end: To, step: Step, metric: Metric = None,
                   tenant: Tenant = None,
                   node: Annotated[str | None, Query(description="only this node")] = None,
                   uuid: Annotated[str | None, Query(description="only this GPU")] = None,
                   fmt: Format = "json"):
            scope = scoped(p, tenant)
            f, r = P.parse_format(fmt), rng(start, end)
            width = P.parse_step(step)
            P.check_points(r.start, r.end, width, max_points)
            metrics = P.parse_metrics(metric)
            t = reader.run("api_series", {
                **r.bind(), "step": width, "group": group, "tenant": scope,
                "node": P.parse_name(node, "node"), "uuid": P.parse_name(uuid, "uuid"),
                "max_rows": max_rows + 1})
            if len(t.rows) > max_rows:
                raise P.ApiError(400, f"more than {max_rows} rows: raise 'step', shorten the "
                                      "range or filter by node/uuid")
            keys = [] if key is None else ["key", "node", "gpu", "model"] if group == "gpu" \
                else ["key"]
            t = t.select(["time", *keys, *metrics], rename={"key": key} if key else None)
            return respond(t, f, f"Time series by {suffix}",
                           f"{subtitle(r, scope)}, step {step}")
        return series

    for suffix, (group, key) in SERIES_GROUPS.items():
        by = "for the whole fleet" if key is None else f"per {suffix}"
        route(f"/v1/series/{suffix}", f"Time series {by}",
              f"Metrics per bucket of `step` starting at `from`, {by}: one object per (time"
              f"{', ' + key if key else ''}); empty buckets are left out.",
              "admin: all or `tenant`; tenant token: its own GPU time only, another tenant "
              "-> 403")(make_series(suffix, group, key))

    # -- index ---------------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse, summary="Index page: routes and store status",
             description="For people: what the API serves and how fresh the store is. "
                         "Public (no tenant data).")
    def index():
        st = reader.status()
        status = Table(["store", "rollup files", "newest minute", "oldest minute",
                        "rollup rows"],
                       [(st["store"], st["rollup_files"], st["newest_minute"],
                         st["oldest_minute"], st["rollup_rows"])])
        routes = Table(["route", "what", "access"], [
            (r.path, r.summary, access[r.path])
            for r in app.routes if getattr(r, "path", "") in access])
        body = ("<h1>fleetlens API</h1>\n<h2>Store status</h2>\n"
                + html_table(status, "status")
                + "\n<h2>Routes</h2>\n<p>All <code>/v1</code> routes need "
                  "<code>Authorization: Bearer &lt;token&gt;</code>; JSON by default, "
                  "<code>format=csv</code> or <code>format=html</code>. Spec: "
                  '<a href="/openapi.json">/openapi.json</a>.</p>\n'
                + html_table(routes, "routes")
                + f"\n<p>server time {html.escape(iso(datetime.now(UTC)))}</p>")
        return HTMLResponse(page("fleetlens API", body))

    _error_handlers(app)
    return app


def _router(app: FastAPI, access: dict[str, str]) -> Callable:
    def route(path: str, summary: str, description: str, who: str) -> Callable:
        access[path] = who
        return app.get(path, summary=summary, description=f"{description}\n\nAccess: {who}",
                       responses=TABLE_RESPONSES, response_model=None,
                       name=path.strip("/").replace("/", "_").replace("-", "_"))
    return route


def _error(status: int, message: str) -> JSONResponse:
    resp = JSONResponse({"error": message}, status_code=status)
    if status == 401:
        resp.headers.append("WWW-Authenticate", 'Bearer realm="fleetlens"')
        resp.headers.append("WWW-Authenticate", 'Basic realm="fleetlens"')
    return resp


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(P.ApiError)
    async def api_error(_: Request, exc: P.ApiError):
        return _error(exc.status, exc.message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(x) for x in first.get("loc", ()) if x not in ("query", "path", "header")]
        name = ".".join(loc) or "request"
        msg = "is required" if first.get("type") == "missing" else first.get("msg", "invalid")
        return _error(400, f"'{name}' {msg}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(duckdb.IOException)
    async def store_busy(_: Request, exc: duckdb.IOException):
        return _error(503, f"reading the store failed, retry: {str(exc)[:200]}")
