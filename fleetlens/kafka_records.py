"""Reading the records of Kafka record batches (message format v2) in one tight loop.

kafka-python turns every record into Python objects through several layers (a varint call per
field, a `DefaultRecord`, a generator step, a `ConsumerRecord`): 28.8 µs per record measured
here, most of the pipeline's fetch time (docs/benchmarks.md, optimisation 9). A fleetlens
record is one node's tick (8 samples), so that is 3.6 µs per sample before decoding starts.
`parse_records` reads the records of one batch straight from its bytes, following the
protocol's layout:

    record  = length varint, attributes int8, timestampDelta varlong, offsetDelta varint,
              keyLength varint, key, valueLength varint, value, headerCount varint, headers
    header  = keyLength varint, key (UTF-8), valueLength varint, value

(all varints zig-zag encoded; a length of -1 is null).

`use_fast_records(consumer)` plugs it into one consumer: that consumer's fetcher builds its
per-partition record iterators from `FastPartitionRecords`, which reads message-format-v2
batches with `parse_records` and leaves everything else to kafka-python (transactional
`read_committed` consumers, legacy v0/v1 batches, custom deserializers). This touches
kafka-python internals (the fetcher, its `PartitionRecords` class, a batch's buffer), so it is
installed only on the version it was tested against; any other version keeps the library's
path, and tests/test_kafka_records.py compares both paths record for record.
"""

from __future__ import annotations

import logging

import kafka
from kafka import codec
from kafka.consumer.fetcher import ConsumerRecord, Fetcher
from kafka.errors import CorruptRecordError
from kafka.protocol.consumer.offsets import IsolationLevel
from kafka.record.default_records import DefaultRecordBatch
from kafka.record.util import decode_varint

log = logging.getLogger(__name__)

TESTED_VERSION = "3.0.12"  # the pinned kafka-python; see pyproject.toml
BATCH_HEADER_BYTES = DefaultRecordBatch.HEADER_STRUCT.size  # baseOffset .. recordCount

_DECOMPRESS = {
    1: codec.gzip_decode,
    2: lambda data: codec.snappy_decode(bytes(data)),
    3: lambda data: codec.lz4_decode(bytes(data)),
    4: lambda data: codec.zstd_decode(bytes(data)),
}


def _nullable_bytes(buf: bytes, pos: int) -> tuple[bytes | None, int]:
    """A length-prefixed byte string at `pos` (length -1: null): (value, position after it)."""
    n, pos = decode_varint(buf, pos)
    if n < 0:
        return None, pos
    return buf[pos:pos + n], pos + n


def parse_records(body: bytes, count: int) -> list[tuple]:
    """The `count` records of an uncompressed batch body, as
    (offset delta, timestamp delta, key, value, headers, length) tuples (length as the record
    declares it, without its own varint: what kafka-python counts as the record's size).

    Raises CorruptRecordError when a record's declared length does not match its fields, a
    field runs past the end, or bytes are left over after the last record.
    """
    out = []
    append = out.append
    end = len(body)
    pos = 0
    varint, nullable_bytes = decode_varint, _nullable_bytes
    try:
        for _ in range(count):
            start = pos
            length, pos = varint(body, pos)
            stop = pos + length
            pos += 1  # attributes: unused by the protocol so far
            ts_delta, pos = varint(body, pos)
            offset_delta, pos = varint(body, pos)
            key, pos = nullable_bytes(body, pos)
            value, pos = nullable_bytes(body, pos)
            n_headers, pos = varint(body, pos)
            headers = []
            if n_headers:
                if n_headers < 0:
                    raise CorruptRecordError(f"negative header count {n_headers}")
                for _h in range(n_headers):
                    h_key, pos = nullable_bytes(body, pos)
                    if h_key is None:
                        raise CorruptRecordError("null header key")
                    h_value, pos = nullable_bytes(body, pos)
                    headers.append((h_key.decode(), h_value))
            if pos != stop or pos > end:
                raise CorruptRecordError(
                    f"record at byte {start}: its length ({length}) does not match its fields")
            append((offset_delta, ts_delta, key, value, headers, length))
    except (IndexError, ValueError) as exc:  # ValueError: varint or UTF-8
        raise CorruptRecordError(f"invalid record structure: {exc!r}") from None
    if pos != end:
        raise CorruptRecordError(f"{end - pos} unconsumed bytes after all records consumed")
    return out


def batch_body(batch: DefaultRecordBatch) -> bytes:
    """The records part of a v2 batch, decompressed. The batch must not have been iterated."""
    raw = memoryview(batch._buffer)[BATCH_HEADER_BYTES:]  # noqa: SLF001 - see module doc
    codec_id = batch.compression_type
    if codec_id == 0:
        return bytes(raw)
    try:
        decompress = _DECOMPRESS[codec_id]
    except KeyError:
        raise CorruptRecordError(f"unknown compression type {codec_id}") from None
    return decompress(raw)


class FastPartitionRecords(Fetcher.PartitionRecords):
    """The fetcher's per-partition record iterator, with v2 batches read by parse_records.

    Keeps the library's bookkeeping: next fetch offset, records and bytes read, the leader
    epoch, CRC checks when enabled, control batches skipped, `drain()` at the end.
    """

    def _unpack_records(self, tp, records, key_deserializer, value_deserializer):
        if (self.isolation_level != IsolationLevel.READ_UNCOMMITTED or key_deserializer is not None
                or value_deserializer is not None):
            yield from super()._unpack_records(tp, records, key_deserializer, value_deserializer)
            return
        batch = records.next_batch()
        last_batch = None
        while batch is not None:
            last_batch = batch
            if self.check_crcs and not batch.validate_crc():
                raise CorruptRecordError(f"Record batch for partition {tp} at offset "
                                         f"{batch.base_offset} failed crc check")
            if batch.magic != 2:
                yield from self._legacy_batch(tp, batch)
            else:
                self.leader_epoch = batch.leader_epoch
                if batch.is_control_batch:  # transaction markers are not for the consumer
                    self.next_fetch_offset = batch.next_offset
                else:
                    yield from self._v2_batch(tp, batch)
            batch = records.next_batch()
        if last_batch is not None and last_batch.magic == 2:
            # v2 keeps the batch's last offset even when compaction removed its last record:
            # fetch from after it, never the same batch again.
            self.next_fetch_offset = last_batch.next_offset
        self.drain()

    def _v2_batch(self, tp, batch):
        base, epoch = batch.base_offset, self.leader_epoch
        ts_type = batch.timestamp_type
        first_ts = batch.first_timestamp
        append_ts = batch.max_timestamp if ts_type == DefaultRecordBatch.LOG_APPEND_TIME else None
        topic, partition = tp.topic, tp.partition
        for offset_delta, ts_delta, key, value, headers, size in parse_records(
                batch_body(batch), batch.records_count):
            offset = base + offset_delta
            header_size = sum(len(k.encode()) + (len(v) if v is not None else 0)
                              for k, v in headers) if headers else -1
            self.records_read += 1
            self.bytes_read += size
            self.next_fetch_offset = offset + 1
            yield ConsumerRecord(
                topic, partition, epoch, offset,
                append_ts if append_ts is not None else first_ts + ts_delta, ts_type,
                key, value, headers, None,
                len(key) if key is not None else -1, len(value) if value is not None else -1,
                header_size)

    def _legacy_batch(self, tp, batch):
        """Message formats v0/v1 (brokers before 0.11): the library's record objects."""
        for record in batch:
            if self.check_crcs and not record.validate_crc():
                raise CorruptRecordError(f"Record for partition {tp} at offset "
                                         f"{record.offset} failed crc check")
            key, value = record.key, record.value
            self.records_read += 1
            self.bytes_read += record.size_in_bytes
            self.next_fetch_offset = record.offset + 1
            yield ConsumerRecord(
                tp.topic, tp.partition, self.leader_epoch, record.offset, record.timestamp,
                record.timestamp_type, key, value, record.headers, record.checksum,
                len(key) if key is not None else -1, len(value) if value is not None else -1,
                -1)


def use_fast_records(consumer: kafka.KafkaConsumer) -> bool:
    """Make `consumer` read record batches with FastPartitionRecords. Returns whether it did:
    only on the tested kafka-python version (and only for this consumer, not globally)."""
    fetcher = getattr(consumer, "_fetcher", None)
    if kafka.__version__ != TESTED_VERSION or not isinstance(fetcher, Fetcher):
        log.info("kafka-python %s: using its own record parsing (fast path tested on %s)",
                 kafka.__version__, TESTED_VERSION)
        return False
    fetcher.PartitionRecords = FastPartitionRecords
    return True
