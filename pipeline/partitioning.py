"""Which partition of the per-customer topics a customer lives in.

The identity processor writes batches that mix customers, so Kafka's key partitioner cannot be
used; every stage calls this one function instead (murmur-free: crc32 is in the stdlib, stable
across processes and Python versions, unlike ``hash()``).
"""

from __future__ import annotations

from zlib import crc32


def partition_for(customer_id: str, partitions: int) -> int:
    return crc32(customer_id.encode()) % partitions
