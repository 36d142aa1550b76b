"""Schema v1 and configuration: the two contracts every process starts from."""

from __future__ import annotations

import json

import pytest

from fleetlens import config, schema
from tests.conftest import run_cli


def good(**over):
    s = {"v": 1, "ts": 1794787200.0, "interval_s": 10.0, "node": "n1", "gpu": 0,
         "uuid": "GPU-1", "model": "NVIDIA H100 80GB HBM3"}
    s.update(over)
    return s


def test_validate_fills_missing_optionals_with_null_not_zero():
    out = schema.validate_sample(good())
    assert out["gpu_util"] is None and out["power_w"] is None
    assert list(out) == list(schema.FIELD_NAMES)


@pytest.mark.parametrize("over, fragment", [
    ({"uuid": None}, "missing required field 'uuid'"),
    ({"gpu": "0x"}, "'gpu' must be an integer"),
    ({"gpu": 1.5}, "'gpu' must be an integer"),
    ({"ts": True}, "'ts' must be a number, got bool"),
    ({"gpu_util": 101}, "'gpu_util'=101 is above 100"),
    ({"tensor_active": -0.1}, "'tensor_active'=-0.1 is below 0"),
    ({"v": 2}, "unsupported schema version"),
    ({"interval_s": 0}, "'interval_s' must be > 0"),
    ({"power_w": float("nan")}, "must be finite"),
])
def test_validate_names_the_problem(over, fragment):
    with pytest.raises(schema.InvalidSample, match=fragment.replace("(", r"\(")):
        schema.validate_sample(good(**over))


def test_parse_line_rejects_non_objects_and_bad_json():
    with pytest.raises(schema.InvalidSample, match="not valid JSON"):
        schema.parse_line(b'{"v": 1,')
    with pytest.raises(schema.InvalidSample, match="must be a JSON object"):
        schema.parse_line(b"[1, 2]")


def test_encode_message_round_trips_in_schema_order():
    value = schema.encode_message([good(gpu=1), good(gpu=0, tenant="t")])
    lines = schema.split_lines(value)
    assert [json.loads(x)["gpu"] for x in lines] == [1, 0]
    assert list(json.loads(lines[0])) == list(schema.FIELD_NAMES)
    assert schema.parse_line(lines[1])["tenant"] == "t"


def test_group_by_node_tick_keeps_order():
    samples = [good(node="a", gpu=0), good(node="a", gpu=1), good(node="b"),
               good(node="a", ts=1794787210.0)]
    groups = list(schema.group_by_node_tick(samples))
    assert [(n, len(b)) for n, b in groups] == [("a", 2), ("b", 1), ("a", 1)]


def test_config_file_env_and_validation(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[kafka]\nbootstrap = "k:9092"\npartitions = 8\n[definitions]\n'
                 'idle_gpu_util_max = 2\n')
    cfg = config.load(f, environ={"FLEETLENS_PIPELINE_LATENESS_S": "30"})
    assert cfg.kafka.bootstrap == "k:9092" and cfg.kafka.partitions == 8
    assert cfg.definitions.idle_gpu_util_max == 2.0  # int accepted for a float
    assert cfg.pipeline.lateness_s == 30.0  # env overrides the file


@pytest.mark.parametrize("text, environ, fragment", [
    ("[kafka]\nbootstrapp = 'x:1'\n", {}, "unknown key [kafka] bootstrapp"),
    ("[kafkaa]\n", {}, "unknown section [kafkaa]"),
    ("[kafka]\npartitions = 'four'\n", {}, "[kafka] partitions = 'four' is not a valid int"),
    ("[kafka]\nbootstrap = 'nohostport'\n", {}, "bootstrap must be HOST:PORT"),
    ("[definitions]\nidle_sm_active_max = 3\n", {}, "idle_sm_active_max must be within 0..1"),
    ("", {"FLEETLENS_NOPE_X": "1"}, "FLEETLENS_NOPE_X names no config section"),
    ("[kafka\n", {}, "is not valid TOML"),
    ("[pipeline]\ncompact_min_files = 0\n", {}, "compact_min_files must be >= 1"),
])
def test_bad_config_is_one_clear_error(tmp_path, text, environ, fragment):
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(config.ConfigError) as err:
        config.load(f, environ=environ)
    assert fragment in str(err.value)


def test_cli_reports_bad_config_in_one_line_with_status_2(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[pipeline]\nwindow_s = 30\n")
    proc = run_cli("--config", str(f), "report", "range", "--store", str(tmp_path),
                   "--from", "2026-11-16", "--to", "2026-11-17", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "fleetlens report: [pipeline] window_s: only 60-second windows are supported in v1"]


def test_example_config_is_the_defaults():
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "fleetlens.example.toml"
    assert config.load(example, environ={}) == config.Config()
