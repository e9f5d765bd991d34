"""Request parameters of the profile API: limits, customer ids, identifier lookups."""

from __future__ import annotations

import pytest

from pipeline.api import params
from pipeline.api.params import BadRequest
from pipeline.identity.config import IdentityConfig

CONFIG = IdentityConfig.from_values(custom_types="loyalty_card", default_phone_region="US")


@pytest.mark.parametrize(
    ("raw", "expected"), [(None, 50), ("", 50), ("1", 1), ("50", 50), ("1000", 1000)]
)
def test_limit_accepts_default_and_range(raw: str | None, expected: int) -> None:
    assert params.limit(raw) == expected


@pytest.mark.parametrize("raw", ["0", "1001", "-1", "1.5", "abc", " 5", "1e3", "٣", "9" * 5000])
def test_limit_refuses_out_of_range_or_junk(raw: str) -> None:
    with pytest.raises(BadRequest):
        params.limit(raw)


@pytest.mark.parametrize(
    "raw", ["5d5e9a52-3f1e-5b7c-9a43-3c2f0e0b8d11", "c1", "crm:42", "a.b_c-d@e+f"]
)
def test_customer_id_accepts_ids(raw: str) -> None:
    assert params.customer_id(raw) == raw


@pytest.mark.parametrize("raw", ["", " c1", "a b", "-x", "x" * 129, "a/b", "a\nb", "ä"])
def test_customer_id_refuses_malformed(raw: str) -> None:
    with pytest.raises(BadRequest):
        params.customer_id(raw)


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ([("email", "  Ann@Example.COM ")], ("email", "ann@example.com")),
        ([("phone", "(415) 555-2671")], ("phone", "+14155552671")),
        ([("phone", "+1 415 555 2671")], ("phone", "+14155552671")),
        ([("phone", "415.555.2671")], ("phone", "+14155552671")),
        ([("user_id", " U-42 ")], ("user_id", "U-42")),  # trimmed, case kept
        ([("anonymous_id", "a1b2")], ("anonymous_id", "a1b2")),
        ([("loyalty_card", "LC-9")], ("loyalty_card", "LC-9")),  # a configured custom type
    ],
)
def test_identifier_is_normalized_as_at_ingestion(
    pairs: list[tuple[str, str]], expected: tuple[str, str]
) -> None:
    assert params.identifier(pairs, CONFIG) == expected


@pytest.mark.parametrize(
    "pairs",
    [
        [],  # nothing to look up
        [("email", "a@b.com"), ("phone", "+14155552671")],  # two identifiers
        [("email", "a@b.com"), ("email", "c@d.com")],  # the same one twice
        [("crm_id", "7")],  # not a configured type
        [("email", "a@b.com"), ("limit", "5")],  # stray parameter
        [("email", "not-an-email")],
        [("phone", "12")],
        [("user_id", "null")],  # blocked placeholder
        [("anonymous_id", "  ")],
    ],
)
def test_identifier_refuses_ambiguous_unknown_or_invalid(pairs: list[tuple[str, str]]) -> None:
    with pytest.raises(BadRequest):
        params.identifier(pairs, CONFIG)
