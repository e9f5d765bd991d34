"""Static vocabulary of the simulation: names, products, pages, user agents, traffic sources.

Kept apart from :mod:`.model` so the model reads as behaviour, not as word lists. Everything here
is a constant; the model picks from it with its own seeded ``random.Random``.
"""

from __future__ import annotations

from typing import Final, NamedTuple

SITE: Final = "https://shop.example.com"
CURRENCY: Final = "USD"

FIRST_NAMES: Final = (
    "Anna", "Boris", "Chloe", "Daniel", "Elena", "Farid", "Grace", "Hugo", "Irina", "Jamal",
    "Kate", "Leo", "Maria", "Nikolai", "Olivia", "Pavel", "Quinn", "Rosa", "Sergei", "Tara",
    "Umar", "Vera", "William", "Xenia", "Yusuf", "Zoe", "Alex", "Dmitry", "Emma", "Ivan",
)  # fmt: skip
LAST_NAMES: Final = (
    "Smith", "Ivanova", "Garcia", "Petrov", "Kim", "Muller", "Rossi", "Novak", "Dubois",
    "Kowalski", "Johnson", "Sokolova", "Brown", "Lee", "Martin", "Volkov", "Silva", "Nguyen",
)  # fmt: skip
EMAIL_DOMAINS: Final = (
    "gmail.com",
    "yahoo.com",
    "outlook.com",
    "mail.ru",
    "yandex.ru",
    "proton.me",
)
CITIES: Final = ("New York", "San Francisco", "Chicago", "Boston", "Seattle", "Denver", "Austin")
# US area codes of the cities above: every generated number is a valid E.164 +1 number.
AREA_CODES: Final = ("212", "415", "312", "617", "206", "303", "512")


class Product(NamedTuple):
    product_id: str
    sku: str
    name: str
    category: str
    price: float


def _products() -> tuple[Product, ...]:
    items = {
        "Shoes": [("Trail Runner", 89.0), ("City Sneaker", 69.0), ("Leather Boot", 149.0)],
        "Jackets": [("Rain Shell", 119.0), ("Down Parka", 229.0), ("Denim Jacket", 79.0)],
        "Bags": [("Day Pack", 59.0), ("Weekender", 139.0), ("Tote", 35.0)],
        "Accessories": [("Wool Beanie", 19.0), ("Sunglasses", 45.0), ("Leather Belt", 39.0)],
        "Electronics": [("Earbuds", 99.0), ("Smart Watch", 249.0), ("Power Bank", 29.0)],
    }
    out: list[Product] = []
    for category, entries in items.items():
        for name, price in entries:
            n = len(out) + 1
            out.append(Product(f"prod_{n:03d}", f"SKU-{n:05d}", name, category, price))
    return tuple(out)


PRODUCTS: Final = _products()
CATEGORIES: Final = tuple(sorted({p.category for p in PRODUCTS}))
CONTENT_PAGES: Final = (
    ("/", "Shop — Home"),
    ("/sale", "Sale"),
    ("/blog/how-to-pick-running-shoes", "How to pick running shoes"),
    ("/blog/packing-list-weekend", "A weekend packing list"),
    ("/about", "About us"),
    ("/help/shipping", "Shipping and returns"),
)


def product_path(product: Product) -> str:
    return "/p/" + product.name.lower().replace(" ", "-")


DESKTOP_UAS: Final = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/123.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51",
)
MOBILE_UAS: Final = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.6367.82 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1",
)
# Apple Mail and Gmail's app render the open pixel with the phone's web view.
MAIL_CLIENT_UA: Final = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148"
)
BOT_UAS: Final = (
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
    "Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)",
)


class Source(NamedTuple):
    """How a session arrived: the landing page's referrer and UTM / click-id query string."""

    name: str
    weight: float
    referrer: str | None
    query: str


TRAFFIC_SOURCES: Final = (
    Source("direct", 0.33, None, ""),
    Source("google", 0.17, "https://www.google.com/", ""),
    Source("bing", 0.03, "https://www.bing.com/", ""),
    Source("yandex", 0.04, "https://yandex.ru/", ""),
    Source("facebook", 0.06, "https://l.facebook.com/", ""),
    Source("instagram", 0.04, "https://www.instagram.com/", ""),
    Source("newsletter", 0.10, None, "utm_source=newsletter&utm_medium=email&utm_campaign={c}"),
    Source(
        "google-ads",
        0.14,
        "https://www.google.com/",
        "utm_source=google&utm_medium=cpc&utm_campaign={c}&gclid={g}",
    ),
    Source("blog-review", 0.05, "https://gearreview.example.org/best-of", ""),
    Source("t.co", 0.04, "https://t.co/", "utm_source=twitter&utm_medium=social&utm_campaign={c}"),
)
CAMPAIGNS: Final = ("spring_sale", "new_arrivals", "back_in_stock", "summer_trail", "vip_week")
