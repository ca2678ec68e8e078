"""What a topic holds as the broker stores it: each record batch's compression codec and the bytes
of the whole, read with raw Fetch requests (a consumer decompresses and never says how a batch
came). Used by the tests and by bench/streaming.py."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import TopicPartition

# The codec ids of Kafka's record batch attributes (bits 0-2).
codec_ids = {None: 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
# One fetch reads at most this much of a partition; reads go on up to its high watermark.
fetch_bytes_max = 1 << 24
fetch_wait_ms = 100
# A batch starts with its base offset (int64) and the length of the rest (int32).
batch_frame = struct.Struct(">qi")


@dataclass
class StoredTopic:
    # (partition, codec id, records) of every batch, partition by partition, in offset order.
    batches: list[tuple[int, int, int]] = field(default_factory=list)
    # The record batches' bytes as the broker holds them (their headers included).
    size: int = 0

    @property
    def codecs(self) -> set[int]:
        return {codec for _, codec, _ in self.batches}

    @property
    def records(self) -> int:
        return sum(records for _, _, records in self.batches)


async def stored(bootstrap: str, topic: str) -> StoredTopic:
    """Every batch of the topic as the broker holds it."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        await client.force_metadata_update()
        found = StoredTopic()
        for partition in sorted(client.cluster.partitions_for_topic(topic) or ()):
            leader = client.cluster.leader_for_partition(TopicPartition(topic, partition))
            offset, high = 0, 1
            while offset < high:
                request = FetchRequest(
                    fetch_wait_ms,
                    1,
                    fetch_bytes_max,
                    0,
                    [(topic, [(partition, offset, fetch_bytes_max)])],
                )
                response = await client.send(leader, request)
                (_, ((_, error, high, *data),)), *_ = response.topics
                assert error == 0, (topic, partition, error)
                found.size += _whole_batches_size(data[-1])
                records = MemoryRecords(data[-1])
                start = offset
                while (batch := records.next_batch()) is not None:
                    found.batches.append((partition, batch.compression_type, len(list(batch))))
                    offset = batch.next_offset
                if offset == start:  # nothing more to read below the high watermark
                    break
        return found
    finally:
        await client.close()


def _whole_batches_size(message_set: bytes) -> int:
    """The bytes of the complete batches in a fetched message set (a fetch may end mid-batch)."""
    size = 0
    while size + batch_frame.size <= len(message_set):
        _, length = batch_frame.unpack_from(message_set, size)
        if size + batch_frame.size + length > len(message_set):
            break
        size += batch_frame.size + length
    return size
