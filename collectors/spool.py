"""The agent's bounded on-disk spool: every message passes through it on its way to Kafka.

The sampling loop appends each message here and returns at once; the sender thread
(collectors/publish.py) takes the oldest messages, hands them to the Kafka client and
acknowledges them back once the broker has acknowledged them. So the order on disk is the
order of delivery, a broker outage only makes the spool longer, and what was not yet
acknowledged survives an agent restart.

Layout of the spool directory::

    <base:020d>.seg   append-only segment files; <base> is the global byte position of the
                      segment's first byte (positions never repeat within a spool directory)
    cursor.json       {"version": 1, "pos": P, "skip": [[a, b], ...]}: P is the position of
                      the oldest message not yet acknowledged or dropped, and each [a, b) is a
                      run of messages after P that were dropped while older ones were in flight
    LOCK              flock()ed by the agent that owns the spool (one agent per directory)

A record is ``magic (0xF1) | u32 body length | u32 CRC-32 of the body | body`` (little
endian), with body = ``u16 key length | key | value``. A record that is cut short or fails
its CRC ends the readable part of its segment (a torn write at a crash); what follows it in
that segment is discarded with a warning and the next segment is read as usual.

Durability. Each append is one write() to the active segment, so it survives the agent
process crashing; the segment is fsync()ed at most every ``fsync_interval_s`` (on an append
or from the sender thread calling ``maybe_sync``), when it is full, and on close. A power loss
can therefore lose up to ``fsync_interval_s`` of the newest messages. The cursor is rewritten
(temporary file + rename, no fsync except at close) at most every ``cursor_interval_s`` and
whenever messages are dropped behind in-flight ones: after a crash the agent re-sends at most
that much already-acknowledged data (at-least-once). A missing or unreadable cursor makes the
spool start from its oldest segment (more re-sends, never a loss).

Size cap. ``max_bytes`` bounds the bytes of messages not yet acknowledged or dropped. An append
that would exceed it first drops the oldest messages that are not in flight (handed to the
Kafka client and awaiting its acknowledgement); each dropped message is counted once in
``dropped``. Messages in flight are never dropped (they may already be in the broker), so with
a broker that accepted a connection and then stalled, the spool can exceed the cap by the
sender's in-flight window. A message larger than the cap is dropped on arrival. On disk the
spool uses at most one segment (``max_bytes / 8``, 4 KiB .. 16 MiB) more than the cap, because a
segment is deleted only when none of its messages is still pending.

Thread safety: one lock guards all state; ``append`` is called by the sampling thread, ``take``,
``ack`` and ``maybe_sync`` by the sender thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MAGIC = 0xF1
_HEADER = struct.Struct("<BII")  # magic, body length, crc32(body)
_KEYLEN = struct.Struct("<H")
HEADER_SIZE = _HEADER.size
SEGMENT_SUFFIX = ".seg"
CURSOR = "cursor.json"
MAX_KEY = 0xFFFF


class SpoolError(RuntimeError):
    """The spool directory cannot be used (locked by another agent, not writable)."""


@dataclass
class Record:
    """One spooled message. ``pos`` is its global position; ``size`` its bytes on disk."""

    pos: int
    size: int
    key: bytes = b""
    value: bytes = b""
    acked: bool = False


@dataclass
class _Entry:  # a pending message: where it is, not what it holds (the payload stays on disk)
    pos: int
    size: int


@dataclass
class _Segment:
    base: int
    path: Path
    size: int = 0  # bytes written (or found) in the file
    live: int = 0  # messages in it not yet acknowledged or dropped
    rfd: int | None = None


@dataclass
class SpoolStats:
    appended: int = 0  # messages appended in this process
    acked: int = 0  # messages acknowledged (removed) in this process
    dropped: int = 0  # messages dropped because the spool was full (in this process)
    recovered: int = 0  # messages found in the spool at start (left by an earlier run)
    corrupt_bytes: int = 0  # bytes discarded at start because a record was torn or corrupt
    bytes: int = 0  # bytes of messages pending (not yet acknowledged or dropped)
    messages: int = 0  # messages pending


def encode_record(key: bytes, value: bytes) -> bytes:
    if len(key) > MAX_KEY:
        raise ValueError(f"spool key longer than {MAX_KEY} bytes")
    body = _KEYLEN.pack(len(key)) + key + value
    return _HEADER.pack(MAGIC, len(body), zlib.crc32(body)) + body


def _decode_body(body: bytes) -> tuple[bytes, bytes]:
    (klen,) = _KEYLEN.unpack_from(body)
    return body[2:2 + klen], body[2 + klen:]


def segment_bytes_for(max_bytes: int) -> int:
    return max(4096, min(16 * 1024 * 1024, max_bytes // 8))


class Spool:
    def __init__(self, directory: str | os.PathLike[str], max_bytes: int,
                 segment_bytes: int | None = None, fsync_interval_s: float = 1.0,
                 cursor_interval_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        if max_bytes <= 0:
            raise ValueError("spool max_bytes must be > 0")
        self.dir = Path(directory)
        self.max_bytes = int(max_bytes)
        self.segment_bytes = segment_bytes or segment_bytes_for(self.max_bytes)
        self.fsync_interval_s = fsync_interval_s
        self.cursor_interval_s = cursor_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._segments: dict[int, _Segment] = {}  # by base, in insertion (= position) order
        self._pending: deque[_Entry] = deque()  # not yet handed out, oldest first
        self._out: deque[Record] = deque()  # handed out, not yet acknowledged, oldest first
        self._skip: list[list[int]] = []  # dropped runs after the first pending message
        self._active: _Segment | None = None
        self._wfd: int | None = None
        self._end = 0  # position the next record gets
        self._dirty = False  # the active segment has unsynced writes
        self._last_sync = clock()
        self._cursor_dirty = False
        self._drop_dirty = False  # messages were dropped: write the cursor before returning
        self._last_cursor = clock()
        self._closed = False
        self.stats = SpoolStats()
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._lockfd = os.open(self.dir / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise SpoolError(f"spool directory {self.dir}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(self._lockfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lockfd)
            raise SpoolError(f"spool directory {self.dir} is in use by another agent") from None
        os.ftruncate(self._lockfd, 0)
        os.write(self._lockfd, f"{os.getpid()}\n".encode())
        self._recover()

    # -- recovery ----------------------------------------------------------------------------
    def _read_cursor(self) -> tuple[int, list[list[int]]]:
        try:
            data = json.loads((self.dir / CURSOR).read_text())
            pos = int(data["pos"])
            skip = [[int(a), int(b)] for a, b in data.get("skip", [])]
            return pos, skip
        except FileNotFoundError:
            return 0, []
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("spool cursor %s unreadable (%s): re-sending from the oldest segment",
                        self.dir / CURSOR, exc)
            return 0, []

    def _recover(self) -> None:
        pos, skip = self._read_cursor()
        bases = []
        for p in self.dir.glob("*" + SEGMENT_SUFFIX):
            try:
                bases.append((int(p.name[:-len(SEGMENT_SUFFIX)]), p))
            except ValueError:
                log.warning("spool: ignoring unexpected file %s", p)
        bases.sort()
        end = 0
        for base, path in bases:
            seg = _Segment(base, path, size=path.stat().st_size)
            end = max(end, base + seg.size)
            if base + seg.size <= pos:
                path.unlink()  # wholly acknowledged in an earlier run
                continue
            self._segments[base] = seg
            self._scan(seg, pos, skip)
            if seg.live == 0:
                self._forget(seg)
        # Positions never go back, even when every segment is gone: the cursor may be ahead.
        self._end = max(end, pos)
        self._skip = [[a, b] for a, b in skip if b > self._first_pos()]
        self.stats.recovered = len(self._pending)
        if self.stats.recovered:
            log.info("spool %s: %d message(s), %d bytes left by an earlier run", self.dir,
                     self.stats.recovered, self.stats.bytes)
        self._write_cursor()

    def _scan(self, seg: _Segment, pos: int, skip: list[list[int]]) -> None:
        with open(seg.path, "rb") as f:
            data = f.read()
        off = 0
        while off < len(data):
            if len(data) - off < HEADER_SIZE:
                break
            magic, blen, crc = _HEADER.unpack_from(data, off)
            body = data[off + HEADER_SIZE:off + HEADER_SIZE + blen]
            if magic != MAGIC or len(body) != blen or blen < 2 or zlib.crc32(body) != crc:
                break
            size = HEADER_SIZE + blen
            rpos = seg.base + off
            off += size
            if rpos + size <= pos or any(a <= rpos < b for a, b in skip):
                continue
            self._pending.append(_Entry(rpos, size))
            seg.live += 1
            self.stats.bytes += size
            self.stats.messages += 1
        if off < len(data):
            lost = len(data) - off
            self.stats.corrupt_bytes += lost
            log.warning("spool segment %s: %d byte(s) after offset %d are torn or corrupt; "
                        "discarded", seg.path, lost, off)

    # -- helpers (lock held) ----------------------------------------------------------------
    def _first_pos(self) -> int:
        if self._out:
            return self._out[0].pos
        if self._pending:
            return self._pending[0].pos
        return self._end

    def _segment_of(self, pos: int) -> _Segment:
        seg = None
        for base, s in self._segments.items():  # few segments; position order
            if base > pos:
                break
            seg = s
        assert seg is not None, pos
        return seg

    def _forget(self, seg: _Segment) -> None:
        """Delete a segment none of whose messages is pending (never the active one)."""
        if seg is self._active:
            return
        if seg.rfd is not None:
            os.close(seg.rfd)
            seg.rfd = None
        self._segments.pop(seg.base, None)
        with contextlib.suppress(FileNotFoundError):
            seg.path.unlink()

    def _release(self, pos: int, size: int) -> None:
        seg = self._segment_of(pos)
        seg.live -= 1
        self.stats.bytes -= size
        self.stats.messages -= 1
        if seg.live == 0:
            self._forget(seg)

    def _roll(self) -> None:
        if self._wfd is not None:
            os.fsync(self._wfd)
            os.close(self._wfd)
            self._wfd = None
            old = self._active
            self._active = None
            if old is not None and old.live == 0:
                self._forget(old)
        base = self._end
        path = self.dir / f"{base:020d}{SEGMENT_SUFFIX}"
        self._wfd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._active = _Segment(base, path)
        self._segments[base] = self._active
        self._fsync_dir()

    def _fsync_dir(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _write_cursor(self, sync: bool = False) -> None:
        first = self._first_pos()
        self._skip = [r for r in self._skip if r[1] > first]
        tmp = self.dir / (CURSOR + ".tmp")
        with open(tmp, "w") as f:
            json.dump({"version": 1, "pos": first, "skip": self._skip}, f)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, self.dir / CURSOR)
        self._cursor_dirty = self._drop_dirty = False
        self._last_cursor = self._clock()

    def _drop_oldest_pending(self) -> None:
        e = self._pending.popleft()
        if self._out:  # messages before it are in flight: remember the gap on disk
            if self._skip and self._skip[-1][1] == e.pos:
                self._skip[-1][1] = e.pos + e.size
            else:
                self._skip.append([e.pos, e.pos + e.size])
        self._release(e.pos, e.size)
        self.stats.dropped += 1
        self._drop_dirty = True

    def _sync_locked(self) -> None:
        if self._dirty and self._wfd is not None:
            os.fsync(self._wfd)
            self._dirty = False
        self._last_sync = self._clock()

    # -- API ---------------------------------------------------------------------------------
    def append(self, key: bytes, value: bytes) -> int:
        """Append one message; returns how many older messages were dropped to make room.

        Raises OSError when the write fails (the spool stays consistent: the torn bytes are
        truncated away or the next append starts a new segment)."""
        rec = encode_record(key, value)
        size = len(rec)
        with self._lock:
            if self._closed:
                raise SpoolError("spool is closed")
            if size > self.max_bytes:
                self.stats.dropped += 1
                log.error("message of %d bytes is larger than the whole spool (%d bytes); "
                          "dropped", size, self.max_bytes)
                return 1
            dropped_before = self.stats.dropped
            while self._pending and self.stats.bytes + size > self.max_bytes:
                self._drop_oldest_pending()
            if self._active is None or (self._active.size > 0
                                        and self._active.size + size > self.segment_bytes):
                self._roll()
            seg = self._active
            assert seg is not None and self._wfd is not None
            try:
                n = os.write(self._wfd, rec)
                if n != size:
                    raise OSError(f"short write to {seg.path} ({n} of {size} bytes)")
            except OSError:
                try:
                    os.ftruncate(self._wfd, seg.size)
                except OSError:  # cannot repair: seal this segment, start a new one next time
                    os.close(self._wfd)
                    self._wfd = None
                    self._active = None
                    self._end = seg.base + seg.path.stat().st_size
                    if seg.live == 0:
                        self._forget(seg)
                raise
            pos = self._end
            seg.size += size
            seg.live += 1
            self._end += size
            self._pending.append(_Entry(pos, size))
            self.stats.bytes += size
            self.stats.messages += 1
            self.stats.appended += 1
            self._dirty = True
            if self._clock() - self._last_sync >= self.fsync_interval_s:
                self._sync_locked()
            if self._drop_dirty:  # a dropped message must not come back after a crash
                self._write_cursor()
            return self.stats.dropped - dropped_before

    def take(self, max_messages: int) -> list[Record]:
        """Hand out up to max_messages of the oldest messages not yet handed out."""
        out: list[Record] = []
        with self._lock:
            while self._pending and len(out) < max_messages and not self._closed:
                e = self._pending[0]
                seg = self._segment_of(e.pos)
                if seg.rfd is None:
                    seg.rfd = os.open(seg.path, os.O_RDONLY)
                data = os.pread(seg.rfd, e.size, e.pos - seg.base)
                self._pending.popleft()
                key, value = _decode_body(data[HEADER_SIZE:])
                rec = Record(e.pos, e.size, key, value)
                self._out.append(rec)
                out.append(rec)
        return out

    def ack(self, rec: Record) -> None:
        """The broker acknowledged rec: it leaves the spool (once all older ones have too)."""
        with self._lock:
            if self._closed or rec.acked:
                return
            rec.acked = True
            self.stats.acked += 1
            while self._out and self._out[0].acked:
                done = self._out.popleft()
                self._release(done.pos, done.size)
            self._cursor_dirty = True
            if self._clock() - self._last_cursor >= self.cursor_interval_s:
                self._write_cursor()

    def maybe_sync(self) -> None:
        """Called now and then by the sender thread: fsync and persist the cursor when due."""
        with self._lock:
            if self._closed:
                return
            now = self._clock()
            if self._dirty and now - self._last_sync >= self.fsync_interval_s:
                self._sync_locked()
            if self._cursor_dirty and now - self._last_cursor >= self.cursor_interval_s:
                self._write_cursor()

    @property
    def backlog(self) -> tuple[int, int]:
        """(messages, bytes) not yet acknowledged or dropped."""
        with self._lock:
            return self.stats.messages, self.stats.bytes

    @property
    def unsent(self) -> int:
        """Messages not yet handed out."""
        with self._lock:
            return len(self._pending)

    def close(self) -> None:
        """fsync, persist the cursor, release the directory. Unacknowledged messages stay."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._wfd is not None:
                if self._dirty:
                    os.fsync(self._wfd)
                os.close(self._wfd)
                self._wfd = None
            active, self._active = self._active, None
            if active is not None and active.live == 0:
                self._forget(active)
            for seg in self._segments.values():
                if seg.rfd is not None:
                    os.close(seg.rfd)
                    seg.rfd = None
            self._write_cursor(sync=True)
            self._fsync_dir()
            fcntl.flock(self._lockfd, fcntl.LOCK_UN)
            os.close(self._lockfd)

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
