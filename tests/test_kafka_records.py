"""fleetlens.kafka_records reads record batches exactly as kafka-python does, only faster.

The reference is kafka-python itself: batches are built with its own batch builder (or come
from the real broker), and every record, offset and counter of the fast iterator must equal
what the library's iterator gives for the same bytes.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import Fetcher
from kafka.errors import CorruptRecordError
from kafka.record import MemoryRecords
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.record.legacy_records import LegacyRecordBatchBuilder
from kafka.record.util import calc_crc32c

from fleetlens.config import KafkaConfig
from fleetlens.kafka_client import ensure_topics, make_consumer
from fleetlens.kafka_records import (
    FastPartitionRecords,
    batch_body,
    parse_records,
    use_fast_records,
)

TP = TopicPartition("samples", 3)
CODECS = {"none": 0, "gzip": 1, "lz4": 3, "zstd": 4}
LOG_APPEND_TIME_BIT = 0x08
CONTROL_BIT = 0x20

records_st = st.lists(
    st.tuples(
        st.integers(0, 10**6),                                   # timestamp delta (ms)
        st.one_of(st.none(), st.binary(max_size=40)),            # key
        st.one_of(st.none(), st.binary(max_size=3000)),          # value: multi-byte lengths
        st.lists(st.tuples(st.text(max_size=8), st.one_of(st.none(), st.binary(max_size=8))),
                 max_size=3),                                    # headers
    ),
    min_size=1, max_size=30)


def build_batch(records, codec: int = 0, base_offset: int = 0, attributes_or: int = 0,
                leader_epoch: int = 0, compacted_tail: int = 0) -> bytes:
    """One v2 batch made by kafka-python's own builder; `attributes_or` sets attribute bits
    (log-append time, control) afterwards, and `compacted_tail` moves the batch's last offset
    past its last record (as log compaction leaves it), with the CRC recomputed."""
    b = DefaultRecordBatchBuilder(magic=2, compression_type=codec, is_transactional=0,
                                  producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                  batch_size=10**7)
    t0 = 1_790_000_000_000
    for i, (dt, key, value, headers) in enumerate(records):
        b.append(i, timestamp=t0 + dt, key=key, value=value, headers=headers)
    buf = b.build()
    struct.pack_into(">q", buf, 0, base_offset)
    struct.pack_into(">i", buf, 12, leader_epoch)
    if attributes_or or compacted_tail:
        attrs = struct.unpack_from(">h", buf, 21)[0] | attributes_or
        struct.pack_into(">h", buf, 21, attrs)
        struct.pack_into(">i", buf, 23, len(records) - 1 + compacted_tail)
        struct.pack_into(">I", buf, 17, calc_crc32c(memoryview(buf)[21:]))
    return bytes(buf)


def drain(cls, buf: bytes, fetch_offset: int = 0, check_crcs: bool = True):
    """All records of `buf` through a PartitionRecords class, and its bookkeeping after."""
    pr = cls(fetch_offset, TP, MemoryRecords(buf), check_crcs=check_crcs)
    out = []
    while pr:  # as the fetcher asks: false once the iterator has drained itself
        out.extend(pr.take(7))
    return out, (pr.next_fetch_offset, pr.records_read, pr.bytes_read, pr.leader_epoch)


def assert_same(buf: bytes, fetch_offset: int = 0) -> list:
    ours = drain(FastPartitionRecords, buf, fetch_offset)
    theirs = drain(Fetcher.PartitionRecords, buf, fetch_offset)
    assert ours == theirs
    return ours[0]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=records_st, codec=st.sampled_from(sorted(CODECS.values())),
       base=st.integers(0, 2**40), epoch=st.integers(-1, 50))
def test_every_record_equals_kafka_pythons(records, codec, base, epoch):
    got = assert_same(build_batch(records, codec, base, leader_epoch=epoch))
    assert [r.offset for r in got] == list(range(base, base + len(records)))
    assert [(r.key, r.value) for r in got] == [(k, v) for _, k, v, _ in records]


@settings(max_examples=20, deadline=None)
@given(first=records_st, second=records_st, codec=st.sampled_from(sorted(CODECS.values())))
def test_several_batches_and_a_fetch_offset_inside_one(first, second, codec):
    buf = build_batch(first, codec, 100) + build_batch(second, codec, 100 + len(first))
    assert_same(buf)
    got = assert_same(buf, fetch_offset=100 + len(first) // 2)  # mid-batch: skip before it
    assert got[0].offset == 100 + len(first) // 2


def test_log_append_time_and_control_batches_as_kafka_python_reads_them():
    records = [(5, b"k", b"v", []), (9, None, b"w", [("h", b"x")])]
    got = assert_same(build_batch(records, attributes_or=LOG_APPEND_TIME_BIT))
    assert got[0].timestamp == got[1].timestamp  # the batch's max timestamp for all
    # A control batch (transaction marker) between two data batches is skipped.
    buf = (build_batch(records, base_offset=0) + build_batch(records, 4, 2, CONTROL_BIT)
           + build_batch(records, base_offset=4))
    assert [r.offset for r in assert_same(buf)] == [0, 1, 4, 5]
    # After a batch whose last records were compacted away, the next fetch starts after the
    # batch's last offset, not after its last record.
    pr = FastPartitionRecords(0, TP, MemoryRecords(build_batch(records, compacted_tail=5)))
    assert [r.offset for r in pr.take()] == [0, 1]
    assert pr.next_fetch_offset == 7
    assert_same(build_batch(records, compacted_tail=5))


@pytest.mark.parametrize("magic,codec", [(0, 0), (1, 0), (1, 1)])
def test_legacy_batches_are_read_as_kafka_python_reads_them(magic, codec):
    """Message formats v0/v1 (brokers before 0.11) keep the library's record objects."""
    b = LegacyRecordBatchBuilder(magic=magic, compression_type=codec, batch_size=10**6)
    for i in range(5):
        b.append(i, timestamp=1_790_000_000_000 + i, key=b"k" if i % 2 else None,
                 value=b"v" * i * 100)
    legacy = bytes(b.build())
    got = assert_same(legacy + build_batch([(1, b"n", b"x", [])], base_offset=5))
    assert [r.offset for r in got] == [0, 1, 2, 3, 4, 5]


def test_corrupt_batches_raise_like_kafka_python():
    good = build_batch([(1, b"node-1", b"x" * 300, [])] * 3)
    body = batch_body(DefaultRecordBatch(good))
    assert len(parse_records(body, 3)) == 3
    for bad_body, count in [(body[:-5], 3), (body + b"\0", 3), (body, 4)]:
        with pytest.raises(CorruptRecordError):
            parse_records(bad_body, count)
    # A flipped byte in the records fails the batch CRC, as in kafka-python.
    flipped = bytearray(good)
    flipped[-1] ^= 0xFF
    with pytest.raises(CorruptRecordError):
        drain(FastPartitionRecords, bytes(flipped))
    with pytest.raises(CorruptRecordError):
        drain(Fetcher.PartitionRecords, bytes(flipped))


def test_installed_on_the_tested_version_only(broker, monkeypatch):
    cfg = KafkaConfig(bootstrap=broker.bootstrap)
    consumer = make_consumer(cfg, group_id=None)
    try:
        assert consumer._fetcher.PartitionRecords is FastPartitionRecords
    finally:
        consumer.close()
    monkeypatch.setattr("kafka.__version__", "99.0.0")
    plain = KafkaConsumer(bootstrap_servers=broker.bootstrap)
    try:
        assert use_fast_records(plain) is False
        assert plain._fetcher.PartitionRecords is Fetcher.PartitionRecords
    finally:
        plain.close()


@pytest.mark.parametrize("compression", ["none", "gzip", "lz4", "zstd"])
def test_a_real_broker_gives_the_same_records_both_ways(broker, topic, compression):
    cfg = KafkaConfig(bootstrap=broker.bootstrap, partitions=2)
    ensure_topics(cfg, [topic])
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=50,
                             compression_type=None if compression == "none" else compression)
    sent = 0
    for i in range(400):
        producer.send(topic, key=None if i % 7 == 0 else f"node-{i % 13}".encode(),
                      value=None if i % 50 == 3 and i % 7 else (b"{}\n" * (i % 90)),
                      headers=[("h", str(i).encode())] if i % 5 == 0 else None)
        sent += 1
    producer.flush()
    producer.close()

    def consume(fast: bool) -> list:
        consumer = make_consumer(cfg, group_id=None, max_poll_records=37)
        if not fast:
            consumer._fetcher.PartitionRecords = Fetcher.PartitionRecords
        tps = [TopicPartition(topic, p) for p in range(2)]
        consumer.assign(tps)
        consumer.seek(tps[0], 0)
        consumer.seek(tps[1], 11)  # mid-batch on one partition
        out: list = []
        try:
            for _ in range(200):
                for recs in consumer.poll(timeout_ms=300).values():
                    out.extend(recs)
                if len(out) >= sent - 11:
                    break
            for recs in consumer.poll(timeout_ms=300).values():  # nothing more expected
                out.extend(recs)
        finally:
            consumer.close()
        return sorted(out, key=lambda r: (r.partition, r.offset))

    fast, library = consume(True), consume(False)
    assert len(fast) == sent - 11
    assert fast == library
