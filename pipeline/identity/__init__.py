"""Pure identity resolution: normalization, configuration and the engine.

Nothing here imports Kafka, Faust or ClickHouse: the identity processor is a thin loop that feeds
events to :class:`IdentityEngine` and persists the key/value writes it makes to its state.
"""

from pipeline.identity.config import IdentityConfig
from pipeline.identity.normalize import is_blocked, normalize_identifier

__all__ = ["IdentityConfig", "is_blocked", "normalize_identifier"]
