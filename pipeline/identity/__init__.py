"""Pure identity resolution: normalization, configuration and the engine.

Nothing here imports Kafka, Faust or ClickHouse: the identity processor is a thin loop that feeds
events to :class:`IdentityEngine`, whose state lives in the dict-like stores it injects.
"""

from pipeline.identity.config import IdentityConfig
from pipeline.identity.engine import IdentityEngine, Merge, Refusal, Resolution
from pipeline.identity.normalize import is_blocked, normalize_identifier
from pipeline.identity.state import CustomerRecord, IdentityState, identifier_key

__all__ = [
    "CustomerRecord",
    "IdentityConfig",
    "IdentityEngine",
    "IdentityState",
    "Merge",
    "Refusal",
    "Resolution",
    "identifier_key",
    "is_blocked",
    "normalize_identifier",
]
