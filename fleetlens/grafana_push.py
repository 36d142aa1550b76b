"""`fleetlens grafana push`: upload the datasources and dashboards through Grafana's HTTP API.

For Grafanas that are not provisioned from files (docker-compose.yml provisions them). Uses
grafana-client; the token is a service-account token (`glsa_...`), sent as a Bearer token.

What it does, in order (every step an upsert, so running it twice changes nothing):

1. each datasource of dashboards/provisioning/datasources/*.yaml, keyed by its fixed uid:
   `GET /api/datasources/uid/<uid>`, then `PUT` the same path if it exists, else
   `POST /api/datasources`. `${VAR}`s in the YAML are filled from the flags
   (--prometheus-url, --api-url, --api-token) or else the environment, as Grafana would;
2. the folder of the dashboard provider: `GET /api/folders/<uid>`, `POST /api/folders` if
   missing;
3. each dashboards/json/*.json: `POST /api/dashboards/db` with `folderUid` and overwrite.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

DEFAULT_DIR = Path(__file__).resolve().parents[1] / "dashboards"
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_]\w*)\}|\$([A-Za-z_]\w*)")
# Keys of a provisioning entry that the datasource API does not take.
_PROVISIONING_ONLY = {"orgId", "editable", "version"}


class PushError(ValueError):
    """Bad input (missing files or values); one line for the operator."""


@dataclass
class PushResult:
    datasources_created: list[str]
    datasources_updated: list[str]
    folder_created: bool
    dashboards: list[str]


def expand(value, variables: dict[str, str]):
    """Fill ${VAR}/$VAR in every string of `value` ($$ is a literal $), as Grafana does."""
    if isinstance(value, str):
        def sub(m: re.Match) -> str:
            if m.group(0) == "$$":
                return "$"
            name = m.group(1) or m.group(2)
            if name not in variables:
                raise PushError(f"${{{name}}} has no value: set it in the environment "
                                "or with the matching flag")
            return variables[name]
        return _VAR.sub(sub, value)
    if isinstance(value, list):
        return [expand(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: expand(v, variables) for k, v in value.items()}
    return value


def load_datasources(directory: Path, variables: dict[str, str]) -> list[dict]:
    files = sorted((directory / "provisioning" / "datasources").glob("*.yaml"))
    if not files:
        raise PushError(f"no datasource provisioning files under {directory}/provisioning")
    out = []
    for f in files:
        doc = yaml.safe_load(f.read_text()) or {}
        for ds in doc.get("datasources", []):
            body = {k: v for k, v in expand(ds, variables).items()
                    if k not in _PROVISIONING_ONLY}
            if not body.get("uid"):
                raise PushError(f"{f}: datasource {body.get('name')!r} has no fixed uid")
            out.append(body)
    return out


def load_folder(directory: Path) -> tuple[str, str]:
    files = sorted((directory / "provisioning" / "dashboards").glob("*.yaml"))
    for f in files:
        for p in (yaml.safe_load(f.read_text()) or {}).get("providers", []):
            if p.get("folderUid"):
                return p["folderUid"], p.get("folder") or p["folderUid"]
    raise PushError(f"no dashboard provider with a folderUid under {directory}/provisioning")


def load_dashboards(directory: Path) -> list[dict]:
    files = sorted((directory / "json").glob("*.json"))
    if not files:
        raise PushError(f"no dashboards under {directory}/json (run `make dashboards`)")
    return [json.loads(f.read_text()) for f in files]


def push(url: str, token: str, directory: Path = DEFAULT_DIR,
         variables: dict[str, str] | None = None, timeout: float = 30.0) -> PushResult:
    from grafana_client import GrafanaApi
    from grafana_client.client import GrafanaClientError

    variables = dict(os.environ if variables is None else variables)
    datasources = load_datasources(directory, variables)
    folder_uid, folder_title = load_folder(directory)
    dashboards = load_dashboards(directory)

    api = GrafanaApi.from_url(url, credential=token, timeout=timeout)
    result = PushResult([], [], False, [])
    for ds in datasources:
        try:
            api.datasource.get_datasource_by_uid(ds["uid"])
        except GrafanaClientError as exc:
            if exc.status_code != 404:
                raise
            api.datasource.create_datasource(ds)
            result.datasources_created.append(ds["uid"])
        else:
            api.datasource.update_datasource_by_uid(ds["uid"], ds)
            result.datasources_updated.append(ds["uid"])
    try:
        api.folder.get_folder(folder_uid)
    except GrafanaClientError as exc:
        if exc.status_code != 404:
            raise
        api.folder.create_folder(folder_title, uid=folder_uid)
        result.folder_created = True
    for board in dashboards:
        api.dashboard.update_dashboard({
            "dashboard": {**board, "id": None}, "folderUid": folder_uid, "overwrite": True,
            "message": "fleetlens grafana push"})
        result.dashboards.append(board["uid"])
    return result
