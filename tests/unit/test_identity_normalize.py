"""Identifier normalization and block lists: raw value in, canonical value (or None) out."""

from __future__ import annotations

import uuid

import pytest

from pipeline.identity import IdentityConfig, is_blocked, normalize_identifier
from pipeline.identity.config import BUILTIN_BLOCKED_VALUES, DEFAULT_NAMESPACE

CONFIG = IdentityConfig()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ann@example.com", "ann@example.com"),
        ("  Ann@Example.COM \n", "ann@example.com"),
        ("ANN.LEE+promo@Mail.Example.co.uk", "ann.lee+promo@mail.example.co.uk"),
    ],
)
def test_email_is_trimmed_and_lower_cased(raw: str, expected: str) -> None:
    assert normalize_identifier("email", raw, CONFIG) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "ann",
        "ann@",
        "@example.com",
        "ann@@example.com",
        "ann@bob@example.com",
        "ann smith@example.com",
        "ann@localhost",
        "ann@example..com",
        "ann@.example.com",
        "ann@example.com.",
        "a" * 65 + "@example.com",
        "ann@" + "d" * 250 + ".com",
    ],
)
def test_malformed_email_is_rejected(raw: str) -> None:
    assert normalize_identifier("email", raw, CONFIG) is None


@pytest.mark.parametrize(
    "raw",
    [
        "(415) 555-2671",
        "415-555-2671",
        "415.555.2671",
        "4155552671",
        "+1 415 555 2671",
        "+1-415-555-2671",
        "1 (415) 555 2671",
        "  +14155552671  ",
        "011 1 415 555 2671",  # US international dialling prefix
    ],
)
def test_every_format_of_one_phone_gives_the_same_e164(raw: str) -> None:
    assert normalize_identifier("phone", raw, CONFIG) == "+14155552671"


def test_phone_default_region_comes_from_config() -> None:
    russia = IdentityConfig(default_phone_region="ru")
    assert normalize_identifier("phone", "8 (495) 123-45-67", russia) == "+74951234567"
    assert normalize_identifier("phone", "+7 495 123 45 67", russia) == "+74951234567"
    # The same national-format text is not a valid US number.
    assert normalize_identifier("phone", "8 (495) 123-45-67", CONFIG) is None
    # Numbers with an explicit country code (or the region's exit prefix) do not depend on it.
    germany = IdentityConfig(default_phone_region="DE")
    assert normalize_identifier("phone", "00 1 415 555 2671", germany) == "+14155552671"
    assert normalize_identifier("phone", "+44 20 7946 0958", russia) == "+442079460958"


@pytest.mark.parametrize(
    "raw",
    ["12", "555-0100", "+1 415 555", "call me", "+999 123 456 789", "415555267112345", "++1"],
)
def test_impossible_or_invalid_phone_is_rejected(raw: str) -> None:
    assert normalize_identifier("phone", raw, CONFIG) is None


@pytest.mark.parametrize("value", sorted(BUILTIN_BLOCKED_VALUES))
@pytest.mark.parametrize("id_type", ["user_id", "anonymous_id", "email", "phone"])
def test_builtin_blocked_values_are_rejected_for_every_type(id_type: str, value: str) -> None:
    assert normalize_identifier(id_type, value, CONFIG) is None
    assert normalize_identifier(id_type, f"  {value.upper()} ", CONFIG) is None
    assert is_blocked(value.title(), CONFIG)


def test_the_javascript_object_placeholder_is_blocked() -> None:
    assert normalize_identifier("user_id", "[object Object]", CONFIG) is None


def test_configured_blocked_values_and_regex() -> None:
    config = IdentityConfig(
        blocked_values=frozenset({"Nobody", "noreply@shop.example"}),
        blocked_regex=r"(test|qa)[-_].*|.*@mailinator\.com",
    )
    assert normalize_identifier("user_id", "nobody", config) is None
    assert normalize_identifier("email", " NoReply@Shop.Example ", config) is None
    assert normalize_identifier("user_id", "QA-42", config) is None
    assert normalize_identifier("email", "x@Mailinator.com", config) is None
    # fullmatch: a substring match does not block.
    assert normalize_identifier("user_id", "latest_qa-42", config) == "latest_qa-42"
    assert normalize_identifier("user_id", "nobody2", config) == "nobody2"


def test_blocked_phone_is_matched_on_its_canonical_form() -> None:
    config = IdentityConfig(blocked_values=frozenset({"+14155552671"}))
    assert normalize_identifier("phone", "(415) 555-2671", config) is None


def test_ids_keep_their_case_and_lose_surrounding_whitespace() -> None:
    assert normalize_identifier("user_id", "  CRM-Ab12\t", CONFIG) == "CRM-Ab12"
    assert normalize_identifier("anonymous_id", "A1b2", CONFIG) == "A1b2"
    assert normalize_identifier("loyalty_card", " 4000 1234 ", CONFIG) == "4000 1234"


def test_length_is_bounded_after_trimming() -> None:
    assert normalize_identifier("user_id", "u" * 256, CONFIG) == "u" * 256
    assert normalize_identifier("user_id", "u" * 257, CONFIG) is None
    assert normalize_identifier("user_id", f"  {'u' * 256}  ", CONFIG) == "u" * 256
    short = IdentityConfig(max_length=10)
    assert normalize_identifier("user_id", "u" * 11, short) is None
    assert normalize_identifier("email", "abc@example.com", short) is None


@pytest.mark.parametrize(
    "raw", ["u\x001", "u\n1", "u\x1b[31m", "u\u200b1", "u\u202e1", "\ufeffu1", "u\x851"]
)
def test_control_and_invisible_characters_are_rejected(raw: str) -> None:
    assert normalize_identifier("user_id", raw, CONFIG) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (42, "42"),
        (42.0, "42"),
        (-7, "-7"),
        (True, None),
        (False, None),
        (1.5, None),
        (float("nan"), None),
        (float("inf"), None),
        (None, None),
        ({"id": 1}, None),
        (["u1"], None),
        (b"u1", None),
    ],
)
def test_raw_values_of_other_types(raw: object, expected: str | None) -> None:
    assert normalize_identifier("user_id", raw, CONFIG) == expected


def test_numeric_placeholders_are_blocked() -> None:
    assert normalize_identifier("user_id", 0, CONFIG) is None
    assert normalize_identifier("user_id", -1, CONFIG) is None
    assert normalize_identifier("user_id", 0.0, CONFIG) is None


# ---------------------------------------------------------------- configuration


def test_default_config_matches_the_design() -> None:
    assert CONFIG.priority == ("user_id", "email", "phone", "anonymous_id")
    assert dict(CONFIG.limit_by_type) == {
        "user_id": 1,
        "email": 5,
        "phone": 5,
        "anonymous_id": 200,
    }
    assert CONFIG.namespace == DEFAULT_NAMESPACE
    assert CONFIG.max_length == 256
    assert CONFIG.default_phone_region == "US"


def test_config_from_plain_values() -> None:
    namespace = uuid.uuid4()
    config = IdentityConfig.from_values(
        limits={"email": 3, "crm_id": 1},
        custom_types="loyalty_card, crm_id",
        custom_type_limit=2,
        default_phone_region="de",
        blocked_values="foo, bar ,",
        blocked_regex="",
        max_length=128,
        namespace=str(namespace),
    )
    assert config.priority == (
        "user_id",
        "email",
        "phone",
        "loyalty_card",
        "crm_id",
        "anonymous_id",
    )
    assert config.limit("email") == 3
    assert config.limit("crm_id") == 1
    assert config.limit("loyalty_card") == 2
    assert config.limit("user_id") == 1
    assert config.default_phone_region == "DE"
    assert {"foo", "bar"} <= config.blocked_lower
    assert config.blocked_pattern is None
    assert config.namespace == namespace
    assert IdentityConfig.from_values() == CONFIG


@pytest.mark.parametrize(
    "kwargs",
    [
        {"custom_types": ("user_id",)},
        {"custom_types": ("Bad Name",)},
        {"custom_types": ("a:b",)},
        {"custom_types": ("card", "card")},
        {"limits": {"email": 0}},
        {"limits": {"nope": 3}},
        {"custom_type_limit": 0},
        {"default_phone_region": "XX"},
        {"blocked_regex": "("},
        {"max_length": 0},
    ],
)
def test_invalid_config_is_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        IdentityConfig(**kwargs)  # type: ignore[arg-type]
