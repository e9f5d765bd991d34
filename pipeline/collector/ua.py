"""User agents: device class, OS, browser and bots (ua-parser + crawlerdetect, cached).

Split out of :mod:`.enrich` (which re-exports these names): pure, no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import NamedTuple

import ua_parser
from crawlerdetect import CrawlerDetect


class UserAgentInfo(NamedTuple):
    device_type: str  # desktop | mobile | tablet | bot | unknown
    os: str | None
    browser: str | None
    is_bot: bool


# ua_parser names families, not device classes; these sets map its families onto ours.
_TABLET_FAMILIES = frozenset({"iPad", "Kindle", "Kindle Fire"})
_MOBILE_FAMILIES = frozenset({"iPhone", "iPod", "Generic Smartphone", "Generic Feature Phone"})
_MOBILE_OS = frozenset(
    {
        "iOS",
        "Android",
        "Windows Phone",
        "BlackBerry OS",
        "KaiOS",
        "Firefox OS",
        "Symbian OS",
        "Tizen",
        "HarmonyOS",
        "Sailfish",
    }
)
_DESKTOP_OS = frozenset(
    {
        "Windows",
        "Mac OS X",
        "Linux",
        "Ubuntu",
        "Chrome OS",
        "Fedora",
        "Debian",
        "FreeBSD",
        "OpenBSD",
        "NetBSD",
        "Linux Mint",
        "Arch Linux",
        "Solaris",
        "Red Hat",
        "SUSE",
    }
)
# Image proxies that fetch a pixel *because a person opened the mail* (Gmail): crawlerdetect
# lists them as bots, which would zero every Gmail open rate.
_HUMAN_PROXY_MARKERS = ("GoogleImageProxy",)


class UserAgentParser:
    """ua_parser + crawlerdetect behind one LRU cache: a site's traffic repeats a few hundred UAs,
    and crawlerdetect's regex alone costs ~300 µs per unseen string."""

    def __init__(self, cache_size: int = 8192) -> None:
        self._crawlers = CrawlerDetect()
        self.parse: Callable[[str], UserAgentInfo] = lru_cache(maxsize=cache_size)(self._parse)

    def warm_up(self) -> None:
        """Build ua_parser's matchers and crawlerdetect's regex now (~0.5 s, once per process)
        rather than in the first request, which would wait for it."""
        self._parse("Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0")

    def _parse(self, user_agent: str) -> UserAgentInfo:
        result = ua_parser.parse(user_agent)
        browser = result.user_agent.family if result.user_agent else None
        os_family = result.os.family if result.os else None
        device = result.device
        is_bot = (device is not None and device.family == "Spider") or (
            self._crawlers.is_crawler(user_agent)
            and not any(marker in user_agent for marker in _HUMAN_PROXY_MARKERS)
        )
        if is_bot:
            device_type = "bot"
        elif device is not None and (
            device.family in _TABLET_FAMILIES
            or device.brand == "Generic_Android_Tablet"
            or "tablet" in device.family.lower()
        ):
            device_type = "tablet"
        elif os_family in _MOBILE_OS or (device is not None and device.family in _MOBILE_FAMILIES):
            device_type = "mobile"
        elif os_family in _DESKTOP_OS:
            device_type = "desktop"
        else:
            device_type = "unknown"
        return UserAgentInfo(device_type, _known(os_family), _known(browser), is_bot)


def _known(family: str | None) -> str | None:
    return None if family in (None, "Other") else family


#: What an event without a user agent gets.
NO_USER_AGENT = UserAgentInfo("unknown", None, None, False)
