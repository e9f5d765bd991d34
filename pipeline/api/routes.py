"""Handlers of the profile endpoints: parse, resolve merges, read, render.

Every lookup ends on the customer an id denotes *now*: a merged (loser) id, or an identifier whose
row still names the loser, is followed through ``customer_merges`` to the survivor, and the answer
is the survivor's profile (its ``merged_from`` lists the absorbed ids).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from pipeline.api import documents, params, render
from pipeline.api.queries import ProfileQueries, StoredProfile
from pipeline.identity.config import IdentityConfig


def json_response(data: Any, status: int = 200) -> web.Response:
    # orjson: several times faster than json for the profile's nested maps.
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def not_found(message: str, **extra: Any) -> web.Response:
    return json_response({"error": message, **extra}, status=404)


class ProfileRoutes:
    def __init__(self, queries: ProfileQueries, identity_config: IdentityConfig) -> None:
        self._queries = queries
        self._config = identity_config

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_get("/v1/profiles", self.by_identifier)
        router.add_get("/v1/profiles/{customer_id}", self.by_id)
        router.add_get("/v1/profiles/{customer_id}/events", self.events)

    async def by_id(self, request: web.Request) -> web.Response:
        requested = params.customer_id(request.match_info["customer_id"])
        return self._profile(requested, requested=requested)

    async def by_identifier(self, request: web.Request) -> web.Response:
        id_type, value = params.identifier(request.query.items(), self._config)
        owner, found = self._queries.find_by_identifier(id_type, value)
        if owner is None:
            return not_found("no customer has this identifier", id_type=id_type)
        return self._render(found, requested=owner)

    def _profile(self, customer_id: str, *, requested: str) -> web.Response:
        return self._render(self._queries.find(customer_id), requested=requested)

    def _render(self, found: tuple[str, StoredProfile] | None, *, requested: str) -> web.Response:
        if found is None:
            return not_found("unknown customer", customer_id=requested)
        survivor, stored = found
        row = documents.profile_row(stored.doc)
        scores = documents.score_row(stored.scores_doc)
        return json_response(render.profile(row, scores, survivor))

    async def events(self, request: web.Request) -> web.Response:
        """The timeline, newest first, with the events of every customer merged into this one."""
        requested = params.customer_id(request.match_info["customer_id"])
        limit = params.limit(request.query.get("limit"))
        found = self._queries.find(requested)
        if found is None:
            return not_found("unknown customer", customer_id=requested)
        survivor, stored = found
        ids = [survivor, *stored.merged_from]
        rows = self._queries.timeline(ids, limit)
        return json_response(
            {
                "customer_id": survivor,
                "customer_ids": ids,
                "limit": limit,
                "events": [render.event(row) for row in rows],
            }
        )
