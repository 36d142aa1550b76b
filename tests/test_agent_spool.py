"""The agent's on-disk spool: order, the size cap, restart and crash recovery, torn tails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fleetlens.collectors.spool import HEADER_SIZE, Spool, SpoolError, encode_record

ROOT = Path(__file__).resolve().parents[1]


def msg(i: int) -> tuple[bytes, bytes]:
    return f"node-{i % 3}".encode(), f'{{"i":{i:04d}}}\n'.encode() * 10


def values(records) -> list[bytes]:
    return [r.value for r in records]


def segments(path) -> list[str]:
    return sorted(p.name for p in path.glob("*.seg"))


def test_messages_come_out_in_order_and_leave_once_acknowledged(tmp_path):
    sp = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=1024)
    for i in range(50):
        assert sp.append(*msg(i)) == 0
    assert len(segments(tmp_path)) > 3  # several segments were written
    got = sp.take(20) + sp.take(100)
    assert [(r.key, r.value) for r in got] == [msg(i) for i in range(50)]
    assert sp.take(10) == []
    assert sp.backlog[0] == 50
    for r in got[:30]:
        sp.ack(r)
    assert sp.backlog == (20, sum(r.size for r in got[30:]))
    for r in got[30:]:
        sp.ack(r)
    assert sp.backlog == (0, 0)
    assert len(segments(tmp_path)) <= 1  # fully acknowledged segments are deleted
    sp.close()


def test_out_of_order_acks_release_only_the_acknowledged_prefix(tmp_path):
    sp = Spool(tmp_path, max_bytes=1 << 20)
    for i in range(5):
        sp.append(*msg(i))
    recs = sp.take(5)
    sp.ack(recs[2])
    sp.ack(recs[1])
    assert sp.backlog[0] == 5  # record 0 still unacknowledged holds the cursor
    sp.close()
    sp = Spool(tmp_path, max_bytes=1 << 20)
    # 0 was never acknowledged; 1 and 2 were, but are behind it: re-sent (at-least-once)
    assert values(sp.take(10)) == [msg(i)[1] for i in range(5)]
    sp.close()


def test_full_spool_drops_the_oldest_and_counts_each_exactly(tmp_path):
    one = len(encode_record(*msg(0)))
    cap = 10 * one + one // 2  # room for 10 messages
    sp = Spool(tmp_path, max_bytes=cap, segment_bytes=3 * one)
    dropped = [sp.append(*msg(i)) for i in range(37)]
    assert sum(dropped) == sp.stats.dropped == 27
    assert dropped[:10] == [0] * 10 and dropped[10:] == [1] * 27
    assert sp.backlog == (10, 10 * one)
    assert values(sp.take(100)) == [msg(i)[1] for i in range(27, 37)]
    # On disk: at most one segment beyond what the cap needs.
    on_disk = sum(p.stat().st_size for p in tmp_path.glob("*.seg"))
    assert on_disk <= cap + 3 * one
    sp.close()


def test_messages_in_flight_are_never_dropped_and_dropped_ones_never_come_back(tmp_path):
    one = len(encode_record(*msg(0)))
    sp = Spool(tmp_path, max_bytes=6 * one, segment_bytes=2 * one)
    for i in range(4):
        sp.append(*msg(i))
    inflight = sp.take(2)  # 0, 1 handed to Kafka, not acknowledged
    for i in range(4, 10):
        sp.append(*msg(i))
    # 6 fit: 0 and 1 stay (in flight), the oldest pending (2, 3, 4, 5) were dropped
    assert sp.stats.dropped == 4
    assert sp.backlog[0] == 6
    sp.close()  # as after a SIGTERM whose flush deadline passed: 0 and 1 unacknowledged
    sp = Spool(tmp_path, max_bytes=6 * one, segment_bytes=2 * one)
    assert values(sp.take(100)) == [msg(i)[1] for i in (0, 1, 6, 7, 8, 9)]
    assert sp.stats.dropped == 0  # counted once, in the run that dropped them
    sp.close()
    assert [r.value for r in inflight] == [msg(0)[1], msg(1)[1]]


def test_a_message_larger_than_the_spool_is_dropped_on_arrival(tmp_path):
    sp = Spool(tmp_path, max_bytes=4096)
    sp.append(*msg(0))
    assert sp.append(b"n", b"x" * 5000) == 1
    assert sp.stats.dropped == 1
    assert values(sp.take(10)) == [msg(0)[1]]
    sp.close()


def test_restart_resumes_after_the_last_acknowledged_message(tmp_path):
    sp = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=2048)
    for i in range(30):
        sp.append(*msg(i))
    for r in sp.take(12):
        sp.ack(r)
    sp.take(5)  # in flight at shutdown: must come back
    sp.close()
    sp = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=2048)
    assert sp.stats.recovered == 18
    sp.append(*msg(30))
    got = sp.take(100)
    assert values(got) == [msg(i)[1] for i in range(12, 31)]
    for r in got:
        sp.ack(r)
    sp.close()
    # Everything acknowledged and all segments gone: positions must still move forward, or
    # the next run's messages would sit "behind" the cursor and be lost.
    assert segments(tmp_path) == []
    sp = Spool(tmp_path, max_bytes=1 << 20)
    sp.append(*msg(99))
    sp.close()
    sp = Spool(tmp_path, max_bytes=1 << 20)
    assert values(sp.take(10)) == [msg(99)[1]]
    sp.close()


def test_crash_without_close_loses_nothing_unacknowledged(tmp_path):
    """A real crash: a child process appends and acknowledges, then dies by SIGKILL."""
    code = textwrap.dedent("""
        import os, signal, sys
        from fleetlens.collectors.spool import Spool
        from tests.test_agent_spool import msg
        sp = Spool(sys.argv[1], max_bytes=1 << 20, segment_bytes=2048, cursor_interval_s=0.0)
        for i in range(40):
            sp.append(*msg(i))
        for r in sp.take(25):
            sp.ack(r)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                          text=True, cwd=ROOT)
    assert proc.returncode == -9, proc.stderr
    sp = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=2048)  # the lock died with it
    assert values(sp.take(100)) == [msg(i)[1] for i in range(25, 40)]
    sp.close()


def test_torn_tail_is_cut_off_and_the_spool_keeps_working(tmp_path):
    sp = Spool(tmp_path, max_bytes=1 << 20)
    for i in range(5):
        sp.append(*msg(i))
    sp.close()
    seg = tmp_path / segments(tmp_path)[-1]
    size = seg.stat().st_size
    with open(seg, "r+b") as f:  # half of the last record was written when the power went
        f.truncate(size - len(encode_record(*msg(4))) // 2)
    sp = Spool(tmp_path, max_bytes=1 << 20)
    assert sp.stats.corrupt_bytes > 0
    sp.append(*msg(5))
    sp.close()
    sp = Spool(tmp_path, max_bytes=1 << 20)
    assert values(sp.take(100)) == [msg(i)[1] for i in (0, 1, 2, 3, 5)]
    sp.close()


def test_corrupt_record_ends_its_segment_only(tmp_path):
    one = len(encode_record(*msg(0)))
    sp = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=3 * one)
    for i in range(9):  # three segments of three
        sp.append(*msg(i))
    sp.close()
    first = tmp_path / segments(tmp_path)[0]
    data = bytearray(first.read_bytes())
    data[one + HEADER_SIZE + 5] ^= 0xFF  # flip a byte in record 1's body: CRC mismatch
    first.write_bytes(bytes(data))
    sp = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=3 * one)
    assert sp.stats.corrupt_bytes == 2 * one
    assert values(sp.take(100)) == [msg(i)[1] for i in (0, 3, 4, 5, 6, 7, 8)]
    sp.close()


def test_unreadable_cursor_means_resending_not_losing(tmp_path):
    sp = Spool(tmp_path, max_bytes=1 << 20)
    for i in range(6):
        sp.append(*msg(i))
    for r in sp.take(3):
        sp.ack(r)
    sp.close()
    assert json.loads((tmp_path / "cursor.json").read_text())["pos"] > 0
    (tmp_path / "cursor.json").write_text("{not json")
    sp = Spool(tmp_path, max_bytes=1 << 20)
    assert values(sp.take(100)) == [msg(i)[1] for i in range(6)]
    sp.close()


def test_one_agent_per_spool_directory(tmp_path):
    sp = Spool(tmp_path, max_bytes=1 << 20)
    with pytest.raises(SpoolError, match="in use"):
        Spool(tmp_path, max_bytes=1 << 20)
    sp.close()
    Spool(tmp_path, max_bytes=1 << 20).close()


def test_fsync_policy_is_time_based(tmp_path, monkeypatch):
    now = [0.0]
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    sp = Spool(tmp_path, max_bytes=1 << 20, fsync_interval_s=1.0, clock=lambda: now[0])
    sp.append(*msg(0))  # creates the segment (and fsyncs the directory entry)
    synced.clear()
    sp.append(*msg(1))
    assert synced == []  # within the interval: written, not yet fsync'ed
    now[0] = 1.5
    sp.append(*msg(2))
    assert len(synced) == 1
    now[0] = 3.0
    sp.maybe_sync()  # the sender thread's periodic call: nothing written since
    assert len(synced) == 1
    sp.append(*msg(3))
    sp.close()  # close always fsyncs the segment (and the cursor, and the directory)
    assert len(synced) >= 3
