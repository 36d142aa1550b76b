"""The decode fast path gives exactly what the general (line by line) path gives.

decode() tries `_decode_fast` first and falls back to `_decode_lines` when the fast path
declines (returns None). These tests pin that the fast path, whenever it answers, answers
frame-equal to the general path with the same dead letters, and that it declines on every
kind of irregularity the general path handles differently.
"""

from __future__ import annotations

import json

import polars as pl
import pytest
from fleetlens.pipeline.decode import Record, _decode_fast, _decode_lines, decode
from polars.testing import assert_frame_equal

T0 = 1794787200.0


def line(**over) -> bytes:
    s = {"v": 1, "ts": T0, "interval_s": 1.0, "node": "n1", "gpu": 0, "uuid": "GPU-1",
         "model": "NVIDIA H100 80GB HBM3", "gpu_util": 50.0, "sm_active": 0.4,
         "energy_j": 1000.0, "xid": None, "namespace": "ns", "power_limit_w": 700.0}
    s.update(over)
    return json.dumps(s).encode()


def message(node: str, tick: int, gpus: int = 4, **over) -> bytes:
    return b"".join(line(node=node, gpu=g, uuid=f"GPU-{node}-{g}", ts=T0 + tick, **over)
                    + b"\n" for g in range(gpus))


def clean_batch() -> list[Record]:
    return [Record(p, 10 * p + t, f"n{p}".encode(), message(f"n{p}", t, gpus=1 + p))
            for t in range(3) for p in range(3)]


def assert_same(records: list[Record]) -> None:
    """decode() equals the general path; and so does the fast path wherever it answers."""
    general = _decode_lines(records)
    got = decode(records)
    assert_frame_equal(got[0], general[0])
    assert got[1] == general[1]
    fast = _decode_fast(records)
    if fast is not None:
        assert_frame_equal(fast[0], general[0])
        assert fast[1] == general[1]


def test_fast_path_answers_clean_batches_like_the_general_path():
    records = clean_batch()
    fast = _decode_fast(records)
    assert fast is not None
    general = _decode_lines(records)
    assert_frame_equal(fast[0], general[0])
    assert fast[1] == general[1] == []
    # Source columns follow each message's line count.
    assert fast[0].select("_partition", "_offset").rows()[:4] == [(0, 0), (1, 10), (1, 10),
                                                                   (2, 20)]


def test_fast_path_keeps_empty_messages_as_dead_letters():
    records = clean_batch()
    records.insert(2, Record(1, 99, b"nx", b""))
    records.append(Record(2, 100, None, None))
    fast = _decode_fast(records)
    assert fast is not None
    assert [(d.offset, d.reason) for d in fast[1]] == [(99, "empty message"),
                                                        (100, "empty message")]
    assert_same(records)


IRREGULAR = {
    "crlf": message("n1", 0).replace(b"\n", b"\r\n"),
    "no final newline": message("n1", 0)[:-1],
    "leading blank line": b"\n" + message("n1", 0),
    "blank line inside": message("n1", 0, gpus=1) + b"\n" + message("n1", 1, gpus=1),
    "whitespace line": message("n1", 0, gpus=1) + b"   \n" + message("n1", 1, gpus=1),
    "bad json": message("n1", 0, gpus=2) + b"{oops\n",
    "wrong type": line(gpu_util="x") + b"\n",
    "number for a string": line(namespace=7) + b"\n",
    "above range": line(sm_active=1.5) + b"\n",
    "below range": line(power_w=-1.0) + b"\n",
    "missing required": json.dumps({"v": 1, "ts": T0, "interval_s": 1.0}).encode() + b"\n",
    "null required": line(uuid=None) + b"\n",
    "wrong version": line(v=7) + b"\n",
    "zero interval": line(interval_s=0.0) + b"\n",
    "not finite": line(gpu_util=float("nan")) + b"\n",
    "invalid utf-8": line()[:-2] + b',"pod":"\xff\xfe"}\n',
    "unknown field": line(extra_field=1) + b"\n",
    "empty object": b"{}\n",
    "array": b"[1,2]\n",
    "only newline": b"\n",
}


@pytest.mark.parametrize("name", sorted(IRREGULAR))
def test_every_irregularity_gives_the_general_paths_answer(name):
    records = clean_batch()
    records.insert(4, Record(1, 50, b"n1", IRREGULAR[name]))
    assert_same(records)


def test_all_irregularities_in_one_batch():
    records = clean_batch()
    for i, value in enumerate(IRREGULAR.values()):
        records.append(Record(i % 3, 1000 + i, b"n1", value))
    assert_same(records)
    frame, dead = decode(records)
    assert frame.height > 0 and dead


def test_fast_path_declines_rows_that_break_a_rule():
    records = [Record(0, 1, b"n1", line(sm_active=1.5) + b"\n")]
    assert _decode_fast(records) is None
    frame, dead = decode(records)
    assert frame.height == 0 and dead[0].reason == "field 'sm_active' is above 1"


def test_empty_poll():
    frame, dead = decode([])
    assert frame.height == 0 and dead == []
    assert frame.schema == _decode_lines([Record(0, 0, None, b"")])[0].schema
    assert isinstance(frame, pl.DataFrame)
