"""Turn a raw identifier from an event into its canonical form, or reject it.

Normalization runs at the edge (the collector) so that every later stage compares identifiers as
plain strings: ``" Ann@Example.COM "`` and ``"ann@example.com"`` must be the same person, and
``"(415) 555-2671"`` / ``"+1 415 555 2671"`` the same phone.
"""

from __future__ import annotations

import math
import re

import phonenumbers

from pipeline.identity.config import EMAIL, PHONE, IdentityConfig

# C0/C1 controls, zero-width and bidi-override characters, line/paragraph separators, BOM and lone
# surrogates: invisible in dashboards, so two "equal-looking" ids would differ, and they are a
# classic vector for log/CSV injection.
_FORBIDDEN_CHARS = re.compile(
    "[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff\ud800-\udfff]"
)
_WHITESPACE = re.compile(r"\s")

# RFC 5321 bounds: local part 64, domain 253 octets. Anything beyond is junk, not an address.
_MAX_LOCAL = 64
_MAX_DOMAIN = 253


def is_blocked(value: str, config: IdentityConfig) -> bool:
    """True when ``value`` must never link anything (placeholder or configured block).

    Case-insensitive after trimming; the configured regex must match the whole trimmed value.
    """
    trimmed = value.strip()
    if trimmed.lower() in config.blocked_lower:
        return True
    pattern = config.blocked_pattern
    return pattern is not None and pattern.fullmatch(trimmed) is not None


def normalize_identifier(id_type: str, raw: object, config: IdentityConfig) -> str | None:
    """Canonical form of ``raw`` as an identifier of ``id_type``; None when blocked or invalid.

    Strings and integers are accepted (SDKs send numeric user ids); integral floats are accepted
    as their integer form; anything else (bool, dict, list, NaN, None …) is rejected.
    """
    text = _as_text(raw)
    if text is None:
        return None
    value = text.strip()
    if len(value) > config.max_length or _FORBIDDEN_CHARS.search(value) is not None:
        return None
    if is_blocked(value, config):
        return None
    if id_type == EMAIL:
        normalized = _normalize_email(value)
    elif id_type == PHONE:
        normalized = _normalize_phone(value, config.default_phone_region)
    else:
        # user ids, cookies and custom ids may be case-sensitive: keep them as sent.
        normalized = value
    if normalized is None or len(normalized) > config.max_length:
        return None
    # The canonical form may be blocked even when the raw text was not (e.g. a blocked E.164).
    if normalized != value and is_blocked(normalized, config):
        return None
    return normalized


def _as_text(raw: object) -> str | None:
    # bool is an int subclass, but True/False are never identifiers.
    if isinstance(raw, bool):
        return None
    if isinstance(raw, str):
        return raw
    if isinstance(raw, int):
        return str(raw)
    if isinstance(raw, float) and math.isfinite(raw) and raw.is_integer():
        return str(int(raw))
    return None


def _normalize_email(value: str) -> str | None:
    # Lower-casing the local part is technically lossy (RFC 5321), but every real mailbox provider
    # treats it case-insensitively and senders mix cases freely; not lower-casing splits people.
    email = value.lower()
    if _WHITESPACE.search(email) is not None or email.count("@") != 1:
        return None
    local, domain = email.split("@")
    if not (0 < len(local) <= _MAX_LOCAL and 0 < len(domain) <= _MAX_DOMAIN):
        return None
    labels = domain.split(".")
    if len(labels) < 2 or not all(labels):
        return None
    return email


def _normalize_phone(value: str, region: str) -> str | None:
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return None
    # is_valid_number checks the number against the numbering plan (so 555-01xx fiction and
    # wrong-length numbers are rejected), which also implies is_possible_number.
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
