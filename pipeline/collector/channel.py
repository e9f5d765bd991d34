"""Acquisition channel of a hit (paid, email, social, search, referral, direct) and URL parts.

Split out of :mod:`.enrich` (which re-exports these names): pure, no clock, no I/O; LRU caches
because landing pages, referrers and campaigns repeat across a site's traffic.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from types import MappingProxyType
from typing import NamedTuple
from urllib.parse import parse_qsl, urlsplit

_PAID_MEDIUMS = frozenset({"cpc", "ppc", "cpm", "cpv", "cpa", "display", "banner"})
_EMAIL_MEDIUMS = frozenset({"email", "e-mail", "e_mail", "newsletter"})
_SOCIAL_MEDIUMS = frozenset({"social", "social-network", "social-media", "social_media", "sm"})
_SEARCH_MEDIUMS = frozenset({"organic", "search", "seo"})
_MEDIUM_CHANNEL = {
    **dict.fromkeys(_EMAIL_MEDIUMS, "email"),
    **dict.fromkeys(_SOCIAL_MEDIUMS, "social"),
    **dict.fromkeys(_SEARCH_MEDIUMS, "search"),
    "referral": "referral",
}
# Ad click ids the ad platforms append to landing URLs. fbclid is also added to organic Facebook
# link clicks, so it overstates paid a little; the brief (and most CDPs) accept that.
_CLICK_IDS = frozenset({"gclid", "gbraid", "wbraid", "dclid", "fbclid", "yclid", "msclkid"})

# Brand labels match any label of a host but the TLD (www.google.co.uk, l.facebook.com); short
# domains only match as themselves or their subdomains (t.co, ok.ru would be false positives as
# labels).
_SOCIAL_BRANDS = frozenset(
    {
        "facebook",
        "instagram",
        "twitter",
        "linkedin",
        "tiktok",
        "youtube",
        "pinterest",
        "reddit",
        "telegram",
        "vkontakte",
    }
)
_SOCIAL_DOMAINS = frozenset(
    {
        "t.co",
        "x.com",
        "vk.com",
        "vk.ru",
        "ok.ru",
        "fb.com",
        "fb.me",
        "youtu.be",
        "lnkd.in",
        "t.me",
        "redd.it",
        "pin.it",
    }
)
_SEARCH_BRANDS = frozenset({"google", "bing", "yandex", "duckduckgo", "baidu", "yahoo", "ecosia"})
_SEARCH_DOMAINS = frozenset({"ya.ru", "go.mail.ru"})
_MAIL_DOMAINS = frozenset(
    {
        "mail.google.com",
        "mail.yahoo.com",
        "outlook.live.com",
        "outlook.office.com",
        "outlook.office365.com",
        "mail.yandex.ru",
        "mail.yandex.com",
        "e.mail.ru",
        "mail.proton.me",
        "mail.aol.com",
        "mail.zoho.com",
    }
)
# utm_source shorthands seen in campaign tagging.
_SOURCE_ALIASES = {
    "fb": "social",
    "ig": "social",
    "x": "social",
    "vk": "social",
    "ok": "social",
    "tg": "social",
    "gmail": "email",
    "outlook": "email",
}


def _domain_match(host: str, domains: frozenset[str]) -> bool:
    return any(host == d or host.endswith("." + d) for d in domains)


def _brand_match(host: str, brands: frozenset[str]) -> bool:
    return not brands.isdisjoint(host.split(".")[:-1])


def host_channel(host: str) -> str | None:
    """email / social / search for a known host (or a utm_source like ``facebook``), else None."""
    if _domain_match(host, _MAIL_DOMAINS):
        return "email"
    # A bare utm_source ("facebook") has no TLD: give it a dummy one for the label match.
    name = host if "." in host else host + ".x"
    if _domain_match(host, _SOCIAL_DOMAINS) or _brand_match(name, _SOCIAL_BRANDS):
        return "social"
    if _domain_match(host, _SEARCH_DOMAINS) or _brand_match(name, _SEARCH_BRANDS):
        return "search"
    return _SOURCE_ALIASES.get(host)


class UrlParts(NamedTuple):
    host: str | None  # lower-cased, without a leading "www."
    path: str | None
    query: Mapping[str, str]  # first value of each parameter; shared by the cache: read only


_NO_URL = UrlParts(None, None, MappingProxyType({}))


@lru_cache(maxsize=16384)
def url_parts(url: str | None) -> UrlParts:
    """Cached: the page URL and referrer repeat across a visitor's events and are read twice."""
    if not url:
        return _NO_URL
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced IPv6 bracket
        return _NO_URL
    host = parts.hostname
    try:
        pairs = parse_qsl(parts.query, max_num_fields=100)
    except ValueError:  # more fields than that is not a tracking URL: ignore its query
        pairs = []
    # A dict of parse_qsl keeps the last value of a repeated key; keep the first instead.
    query: dict[str, str] = {}
    for key, value in pairs:
        query.setdefault(key, value)
    return UrlParts(
        host.removeprefix("www.") if host else None,
        parts.path or None,
        MappingProxyType(query),
    )


def _host(url: str | None) -> str | None:
    return url_parts(url).host


def query_params(url: str | None) -> Mapping[str, str]:
    """The first value of each query parameter of ``url`` (cached, read only)."""
    return url_parts(url).query


# Cached: a site's traffic repeats a few thousand landing pages, referrers and campaigns, and the
# rules below cost ~5 µs per event (a tenth of enrichment) when evaluated every time.
@lru_cache(maxsize=16384)
def classify_channel(
    page_url: str | None, referrer: str | None, utm_medium: str | None, utm_source: str | None
) -> str:
    """The acquisition channel of one hit, first match wins:

    1. paid: utm_medium cpc/ppc/cpm/cpv/cpa/display/banner/paid*, or an ad click id in the URL
    2. email: utm_medium email/newsletter, or a webmail referrer
    3. social: utm_medium social, or a social utm_source / referrer
    4. search: utm_medium organic, or a search-engine utm_source / referrer
    5. referral: any other external referrer, or campaign-tagged traffic of unknown medium
    6. direct: no referrer, or one from the same site (www. and subdomains count as same site)

    The medium is checked before the source and referrer because it is the marketer's explicit
    statement (``utm_source=google&utm_medium=cpc`` is paid, not search).
    """
    medium = (utm_medium or "").strip().lower()
    source = (utm_source or "").strip().lower()
    if (
        medium in _PAID_MEDIUMS
        or medium.startswith("paid")
        or (not _CLICK_IDS.isdisjoint(query_params(page_url)))
    ):
        return "paid"
    ref_host = _host(referrer)
    page_host = _host(page_url)
    external = ref_host is not None and not _same_site(ref_host, page_host)
    by_medium = _MEDIUM_CHANNEL.get(medium)
    if by_medium is not None:
        return by_medium
    for candidate in (source, ref_host if external else None):
        if candidate:
            channel = host_channel(candidate)
            if channel is not None:
                return channel
    if external or medium or source:
        return "referral"
    return "direct"


def _same_site(ref_host: str, page_host: str | None) -> bool:
    if page_host is None:
        return False
    return (
        ref_host == page_host
        or ref_host.endswith("." + page_host)
        or page_host.endswith("." + ref_host)
    )
