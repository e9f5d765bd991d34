"""Pure per-customer profile aggregation: ``apply(state, event) -> state`` and ``merge(a, b)``.

No Kafka, Faust or ClickHouse here: the profile processor keeps a :class:`ProfileState` per
customer (``to_bytes`` / ``from_bytes`` for its table), calls :func:`apply` per resolved event and
:func:`merge` when identity resolution folds a loser into a survivor, and renders the result with
:func:`profile_json` (API) and :func:`profile_row` (ClickHouse ``profiles``).
"""

from pipeline.profile.aggregate import apply, apply_all, merge, to_millis
from pipeline.profile.state import ProfileState, from_bytes, to_bytes
from pipeline.profile.view import PROFILE_COLUMNS, profile_json, profile_row, transactions

__all__ = [
    "PROFILE_COLUMNS",
    "ProfileState",
    "apply",
    "apply_all",
    "from_bytes",
    "merge",
    "profile_json",
    "profile_row",
    "to_bytes",
    "to_millis",
    "transactions",
]
