"""The identity stage's logic over one raw batch: events in, per-partition outputs out.

Pure (no Kafka, Faust or ClickHouse): the faust agent in ``processor.py`` decodes a message,
calls :func:`resolve_batch` and sends what it returns. Tests call it with plain dicts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.identity.engine import IdentityEngine, Resolution
from pipeline.partitioning import partition_for

#: A resolved-batch message body for one partition (schemas/avro/resolved_batch.avsc).
ResolvedBatch = dict[str, list[dict[str, Any]]]


@dataclass
class StageOutput:
    """Everything one raw batch produced."""

    resolved: dict[int, ResolvedBatch] = field(default_factory=dict)
    #: partition → the input index of each of ``resolved[partition]["events"]``, in order (the
    #: processor frames those events' original Avro bytes instead of encoding them again).
    positions: dict[int, list[int]] = field(default_factory=dict)
    #: identity.changes records: identifiers (new or moved), merges, refused links.
    changes: list[dict[str, Any]] = field(default_factory=list)
    #: events no identifier could be resolved for, with the reason (dead letters).
    unresolved: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    merges: int = 0
    refusals: dict[str, int] = field(default_factory=dict)
    new_identifiers: int = 0

    def batch_for(self, partition: int) -> ResolvedBatch:
        batch = self.resolved.get(partition)
        if batch is None:
            batch = self.resolved[partition] = {"events": [], "merges": [], "folds": []}
        return batch


def _identifiers(event: dict[str, Any]) -> list[tuple[str, str]]:
    return [(i["type"], i["value"]) for i in event.get("identifiers") or ()]


def resolve_batch(
    engine: IdentityEngine,
    events: Sequence[dict[str, Any]],
    partitions: int,
    version_base: int = 0,
) -> StageOutput:
    """Resolve each event in order; group the outputs by the customer's partition.

    ``version_base`` makes the ClickHouse row versions deterministic: the processor passes the
    raw message offset shifted left by 16 bits, so replaying a message after a crash writes the
    same versions again (ReplacingMergeTree keeps one row) and a later message always wins.
    """
    out = StageOutput()
    for index, event in enumerate(events):
        ids = _identifiers(event)
        if not ids:
            out.unresolved.append((event, "no identifier (userId / anonymousId / email / phone)"))
            continue
        at = int(event["timestamp"])
        result = engine.resolve(ids, at)
        if result.customer_id is None:
            out.unresolved.append((event, "no usable identifier: all blocked or invalid"))
            continue
        version = version_base + index
        _record_changes(out, result, at, version, partitions)
        partition = partition_for(result.customer_id, partitions)
        out.batch_for(partition)["events"].append(
            {"customer_id": result.customer_id, "event": event}
        )
        out.positions.setdefault(partition, []).append(index)
    return out


def _record_changes(
    out: StageOutput, result: Resolution, at: int, version: int, partitions: int
) -> None:
    changes = out.changes
    for id_type, value, customer_id in result.new_identifiers:
        changes.append(_identifier_change(id_type, value, customer_id, at, version))
    out.new_identifiers += len(result.new_identifiers)
    for merge in result.merges:
        out.merges += 1
        changes.append(
            {
                "kind": "merge",
                "loser": merge.loser,
                "survivor": merge.survivor,
                "reason": f"{merge.identifier[0]}:{merge.identifier[1]}",
                "at": merge.at_ms,
            }
        )
        for id_type, value in merge.moved:
            changes.append(_identifier_change(id_type, value, merge.survivor, at, version))
        # The loser's partition folds its profile into the survivor (see ResolvedBatch).
        out.batch_for(partition_for(merge.loser, partitions))["merges"].append(
            {"loser": merge.loser, "survivor": merge.survivor, "at": merge.at_ms}
        )
    for refusal in result.refused:
        out.refusals[refusal.rule] = out.refusals.get(refusal.rule, 0) + 1
        changes.append(
            {
                "kind": "refusal",
                "id_type": refusal.id_type,
                "id_value": refusal.value,
                "kept_by": refusal.customer_id_kept,
                "refused_for": refusal.against_customer,
                "rule": refusal.rule,
                "at": at,
            }
        )


def _identifier_change(
    id_type: str, value: str, customer_id: str, at: int, version: int
) -> dict[str, Any]:
    return {
        "kind": "identifier",
        "id_type": id_type,
        "id_value": value,
        "customer_id": customer_id,
        "at": at,
        "version": version,
    }
