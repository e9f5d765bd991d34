"""A window of recently seen event ids: identity drops a duplicate send before it fans out.

Why here and not only in the profile stage: identity is the single reader of
``cdp.events.raw`` (one partition), so it sees every event, in order. The profile stage's
per-customer window (``ProfileState.seen``) cannot catch a duplicate that resolves to a
*different* customer than its original: the original went to a customer that has since merged
away, the duplicate goes straight to the survivor, and it reaches the survivor's partition before
the loser's fold does (the fold takes one more hop through Kafka). Each side then counts the
event once and the fold adds the two up. Measured end to end, that was 53 of 1,071 deliberate
duplicates (5 %), all around merges.

The window holds the event ids of the last ``slots * slot_size`` events accepted, as 64-bit
hashes (a false "duplicate" needs a 64-bit collision within the window: ~1e-8 per event at the
default size). It is kept in slots of ``slot_size`` ids; when the newest slot is full, the oldest
is dropped. Each slot is one key of a changelog-backed faust table, written once per group of
messages (the current slot, a few KB): a restarted worker rebuilds the window from the table,
which under exactly-once holds committed writes only, so the window agrees with what the
downstream stages were sent.

Usage per group of messages: :meth:`admit` each event id (False: a duplicate, drop the event),
then :meth:`commit` (with the group's other table writes) or :meth:`discard` (the group failed
and will be processed again, message by message).
"""

from __future__ import annotations

import hashlib
import sys
from array import array
from collections.abc import MutableMapping
from typing import Final

DEFAULT_SLOTS: Final = 128
DEFAULT_SLOT_SIZE: Final = 1024
_HEADER: Final = 8  # bytes: the slot's sequence number, big-endian


def id_hash(event_id: str) -> int:
    """A stable 64-bit hash of an event id (Python's ``hash`` differs between processes)."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big")


def _encode(seq: int, hashes: list[int]) -> bytes:
    body = array("Q", hashes)
    if sys.byteorder != "little":  # stored little-endian whatever the machine
        body.byteswap()
    return seq.to_bytes(_HEADER, "big") + body.tobytes()


def _decode(value: bytes) -> tuple[int, list[int]]:
    if len(value) < _HEADER or (len(value) - _HEADER) % 8:
        raise ValueError(f"not a dedup slot: {len(value)} bytes")
    body = array("Q")
    body.frombytes(value[_HEADER:])
    if sys.byteorder != "little":
        body.byteswap()
    return int.from_bytes(value[:_HEADER], "big"), body.tolist()


class EventIdWindow:
    """The event ids of the most recent events, persisted slot by slot in ``table``."""

    def __init__(
        self,
        table: MutableMapping[str, bytes],
        slots: int = DEFAULT_SLOTS,
        slot_size: int = DEFAULT_SLOT_SIZE,
    ) -> None:
        if slots < 2 or slot_size < 1:
            raise ValueError("a dedup window needs at least 2 slots of at least 1 id")
        self._table = table
        self._slots = slots
        self._slot_size = slot_size
        self._seen: dict[int, int] = {}  # hash -> sequence number of the slot holding it
        self._slot_hashes: dict[int, list[int]] = {}  # sequence number -> hashes, oldest first
        self._seq = 0  # the current (newest) slot
        self._pending: dict[int, None] = {}  # admitted in this group, in order
        self._loaded = False

    @property
    def capacity(self) -> int:
        return self._slots * self._slot_size

    def __len__(self) -> int:
        return len(self._seen)

    def admit(self, event_id: str) -> bool:
        """True the first time ``event_id`` is seen within the window, False for a duplicate."""
        if not self._loaded:
            self._load()
        key = id_hash(event_id)
        if key in self._seen or key in self._pending:
            return False
        self._pending[key] = None
        return True

    def commit(self) -> None:
        """Add the group's admitted ids to the window and write the slots they changed."""
        if not self._pending:
            return
        changed = {self._seq}
        current = self._slot_hashes.setdefault(self._seq, [])
        for key in self._pending:
            if len(current) >= self._slot_size:
                current = self._rotate()
                changed.add(self._seq)
            current.append(key)
            self._seen[key] = self._seq
        self._pending.clear()
        for seq in sorted(changed):
            self._table[self._key(seq)] = _encode(seq, self._slot_hashes[seq])

    def discard(self) -> None:
        """Forget the ids admitted since the last commit (their group is processed again)."""
        self._pending.clear()

    def invalidate(self) -> None:
        """Reload from the table before the next admit (it may have been rebuilt or reassigned)."""
        self._pending.clear()
        self._loaded = False

    def _key(self, seq: int) -> str:
        return f"slot:{seq % self._slots}"

    def _rotate(self) -> list[int]:
        self._seq += 1
        dropped = self._seq - self._slots
        for key in self._slot_hashes.pop(dropped, ()):
            if self._seen.get(key) == dropped:
                del self._seen[key]
        current: list[int] = []
        self._slot_hashes[self._seq] = current
        return current

    def _load(self) -> None:
        self._seen.clear()
        self._slot_hashes.clear()
        slots: list[tuple[int, list[int]]] = []
        for index in range(self._slots):
            value = self._table.get(f"slot:{index}")
            if value:
                slots.append(_decode(value))
        self._seq = max((seq for seq, _ in slots), default=0)
        for seq, hashes in sorted(slots):
            if seq > self._seq - self._slots:  # a stale slot of a smaller window: ignore
                self._slot_hashes[seq] = hashes
                for key in hashes:
                    self._seen[key] = seq
        self._loaded = True
