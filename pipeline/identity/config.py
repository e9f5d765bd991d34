"""Identity resolution settings: identifier types, per-type limits, priorities and block lists.

One frozen object, built once (usually by the settings module through
:meth:`IdentityConfig.from_values`) and shared by the normalizer and the engine. Everything the hot
path needs is precomputed here.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import phonenumbers

USER_ID = "user_id"
EMAIL = "email"
PHONE = "phone"
ANONYMOUS_ID = "anonymous_id"
BUILTIN_TYPES = (USER_ID, EMAIL, PHONE, ANONYMOUS_ID)

DEFAULT_LIMITS: Mapping[str, int] = MappingProxyType(
    {USER_ID: 1, EMAIL: 5, PHONE: 5, ANONYMOUS_ID: 200}
)
DEFAULT_CUSTOM_TYPE_LIMIT = 5

# Values SDKs and forms send when they have nothing: linking on them would fuse strangers.
# Stored lower-cased; comparison is case-insensitive after trimming.
BUILTIN_BLOCKED_VALUES = frozenset(
    {
        "",
        "null",
        "none",
        "undefined",
        "nan",
        "0",
        "-1",
        "anonymous",
        "guest",
        "[object object]",
        "unknown",
        "n/a",
        "test",
    }
)

# Fixed so that customer ids are reproducible across deployments and replays.
DEFAULT_NAMESPACE = uuid.UUID("6f1c1d3e-5b8a-5e37-9a43-3c2f0e0b8d11")

_TYPE_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")


@dataclass(frozen=True, slots=True)
class IdentityConfig:
    """How identifiers are normalized, limited and prioritised.

    Priority (highest first) is ``user_id > email > phone > custom types (in configured order) >
    anonymous_id``. ``limits`` overrides per-type limits; custom types absent from it get
    ``custom_type_limit``. ``blocked_regex`` is matched case-insensitively against the whole
    trimmed value (``fullmatch``), so a pattern never blocks by accident on a substring.
    """

    limits: Mapping[str, int] = field(default_factory=lambda: DEFAULT_LIMITS, hash=False)
    custom_types: tuple[str, ...] = ()
    custom_type_limit: int = DEFAULT_CUSTOM_TYPE_LIMIT
    default_phone_region: str = "US"
    blocked_values: frozenset[str] = frozenset()
    blocked_regex: str | None = None
    max_length: int = 256
    namespace: uuid.UUID = DEFAULT_NAMESPACE

    # Derived in __post_init__ (not constructor arguments).
    priority: tuple[str, ...] = field(init=False, repr=False, compare=False)
    rank: Mapping[str, int] = field(init=False, repr=False, compare=False, hash=False)
    limit_by_type: Mapping[str, int] = field(init=False, repr=False, compare=False, hash=False)
    blocked_lower: frozenset[str] = field(init=False, repr=False, compare=False)
    blocked_pattern: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._validate()
        priority = (USER_ID, EMAIL, PHONE, *self.custom_types, ANONYMOUS_ID)
        limit_by_type = {t: self.custom_type_limit for t in self.custom_types}
        limit_by_type.update(DEFAULT_LIMITS)
        limit_by_type.update(self.limits)
        pattern = re.compile(self.blocked_regex, re.IGNORECASE) if self.blocked_regex else None
        blocked = BUILTIN_BLOCKED_VALUES | {v.strip().lower() for v in self.blocked_values}
        # Frozen dataclass: derived fields can only be set through object.__setattr__.
        object.__setattr__(self, "default_phone_region", self.default_phone_region.upper())
        object.__setattr__(self, "priority", priority)
        object.__setattr__(self, "rank", MappingProxyType({t: i for i, t in enumerate(priority)}))
        # Store the complete table, so configs that mean the same limits compare equal.
        object.__setattr__(self, "limits", MappingProxyType(limit_by_type))
        object.__setattr__(self, "limit_by_type", self.limits)
        object.__setattr__(self, "blocked_lower", frozenset(blocked))
        object.__setattr__(self, "blocked_pattern", pattern)

    def _validate(self) -> None:
        for name in self.custom_types:
            if not _TYPE_NAME.fullmatch(name):
                raise ValueError(f"custom identifier type {name!r} must match {_TYPE_NAME.pattern}")
            if name in BUILTIN_TYPES:
                raise ValueError(f"custom identifier type {name!r} shadows a built-in type")
        if len(set(self.custom_types)) != len(self.custom_types):
            raise ValueError(f"custom identifier types repeat: {self.custom_types}")
        known = set(BUILTIN_TYPES) | set(self.custom_types)
        for id_type, limit in self.limits.items():
            if id_type not in known:
                raise ValueError(f"limit given for unknown identifier type {id_type!r}")
            if limit < 1:
                raise ValueError(f"limit for {id_type!r} must be >= 1, got {limit}")
        if self.custom_type_limit < 1:
            raise ValueError(f"custom_type_limit must be >= 1, got {self.custom_type_limit}")
        if self.default_phone_region.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown phone region {self.default_phone_region!r}")
        if self.max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {self.max_length}")
        if self.blocked_regex:
            try:
                re.compile(self.blocked_regex)
            except re.error as exc:
                raise ValueError(f"blocked_regex does not compile: {exc}") from exc

    @property
    def types(self) -> tuple[str, ...]:
        """Every identifier type the engine accepts, highest priority first."""
        return self.priority

    def limit(self, id_type: str) -> int:
        """Most identifiers of ``id_type`` one customer may hold."""
        return self.limit_by_type.get(id_type, self.custom_type_limit)

    @classmethod
    def from_values(
        cls,
        *,
        limits: Mapping[str, int] | None = None,
        custom_types: Iterable[str] | str = (),
        custom_type_limit: int = DEFAULT_CUSTOM_TYPE_LIMIT,
        default_phone_region: str = "US",
        blocked_values: Iterable[str] | str = (),
        blocked_regex: str | None = None,
        max_length: int = 256,
        namespace: uuid.UUID | str | None = None,
    ) -> IdentityConfig:
        """Build from plain settings values; strings are comma-separated lists (env friendly)."""
        return cls(
            limits=MappingProxyType(dict(limits or {})),
            custom_types=_as_tuple(custom_types),
            custom_type_limit=custom_type_limit,
            default_phone_region=default_phone_region,
            blocked_values=frozenset(_as_tuple(blocked_values)),
            blocked_regex=blocked_regex or None,
            max_length=max_length,
            namespace=_as_uuid(namespace),
        )


def _as_tuple(values: Iterable[str] | str) -> tuple[str, ...]:
    items = values.split(",") if isinstance(values, str) else values
    return tuple(s for s in (item.strip() for item in items) if s)


def _as_uuid(namespace: uuid.UUID | str | None) -> uuid.UUID:
    if namespace is None or namespace == "":
        return DEFAULT_NAMESPACE
    return namespace if isinstance(namespace, uuid.UUID) else uuid.UUID(namespace)
