"""The ground truth file: who really sent every message, and every person's identifiers.

JSON Lines, written while the stream is sent (so a long run needs no memory for it):

* ``{"kind": "event", "message_id", "person", "type", "event", "channel", "late", "bot",
  "shared_device"}`` once per messageId (a duplicate send is not repeated);
* at the end, ``{"kind": "person", "person", "known", "user_id", "email", "phone",
  "anonymous_ids", "orders", "revenue", "refunded_orders"}`` per simulated person and
  ``{"kind": "bot", "person", "anonymous_ids"}`` per crawler.

``person`` is the simulation's id (``P000042``, ``bot-003``), unrelated to the pipeline's
customer ids: scoring compares partitions of events, not ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import orjson

from pipeline.loadgen.model import SimEvent, Simulation


class TruthWriter:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._out: IO[bytes] = open(path, "wb")  # noqa: SIM115 - closed in close()

    def __enter__(self) -> TruthWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def tee(self, events: Iterable[SimEvent]) -> Iterator[SimEvent]:
        """Pass ``events`` through, recording each first send."""
        for event in events:
            if not event.duplicate:
                self._write(
                    {
                        "kind": "event",
                        "message_id": event.message_id,
                        "person": event.person_id,
                        "type": event.message.get("type"),
                        "event": event.message.get("event"),
                        "channel": event.channel,
                        "late": event.late,
                        "bot": event.bot,
                        "shared_device": event.shared_device,
                    }
                )
            yield event

    def people(self, sim: Simulation) -> None:
        for person in sim.persons:
            self._write(
                {
                    "kind": "person",
                    "person": person.person_id,
                    "known": person.known,
                    "user_id": person.user_id,
                    "email": person.email,
                    "phone": person.phone,
                    "anonymous_ids": person.anonymous_ids,
                    "orders": len(person.orders),
                    "revenue": round(sum(r for _, r in person.orders), 2),
                    "refunded_orders": sorted(person.refunded),
                }
            )
        for bot_id, cookies in sorted(sim.bots.items()):
            self._write({"kind": "bot", "person": bot_id, "anonymous_ids": cookies})

    def close(self) -> None:
        self._out.close()

    def _write(self, record: dict[str, Any]) -> None:
        self._out.write(orjson.dumps(record) + b"\n")


def read_truth(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as source:
        for line in source:
            if line.strip():
                yield orjson.loads(line)
