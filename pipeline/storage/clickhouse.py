"""The ClickHouse client: embedded chDB locally, a ClickHouse server over HTTP in production.

Both are the same clickhouse-connect client and run the same SQL; only the DSN differs
(``CDP_CLICKHOUSE_DSN``). chDB allows one process per data path, so in local mode the sink and
the profile API share the worker's single client.
"""

from __future__ import annotations

import threading
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from pipeline.settings import Settings

_lock = threading.Lock()
_clients: dict[str, Client] = {}


def connect(dsn: str, **kwargs: Any) -> Client:
    """A clickhouse-connect client for ``dsn`` (``chdb:///path`` or ``http(s)://...``).

    Embedded clients are cached per path: opening one chDB path twice in a process fails.
    """
    if not dsn.startswith("chdb:"):
        return clickhouse_connect.get_client(dsn=dsn, **kwargs)
    with _lock:
        client = _clients.get(dsn)
        if client is None:
            path = dsn.removeprefix("chdb://")
            if path and not path.startswith(":"):
                from pathlib import Path

                Path(path).mkdir(parents=True, exist_ok=True)
            client = clickhouse_connect.get_client(dsn=dsn, **kwargs)
            _clients[dsn] = client
        return client


def client_from_settings(settings: Settings) -> Client:
    return connect(settings.effective_clickhouse_dsn)
