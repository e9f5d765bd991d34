"""The profile API's OpenAPI 3 description, served at ``GET /openapi.json`` (public).

Built in Python (like the collector's) so that it installs with the package and lists the
identifier types this deployment accepts, custom types from the settings included.
"""

from __future__ import annotations

from typing import Any

from pipeline import __version__
from pipeline.api.params import DEFAULT_LIMIT, MAX_LIMIT
from pipeline.api.render import LTV_MODEL
from pipeline.httpd import openapi_json_response as _response
from pipeline.httpd import openapi_ref as _ref
from pipeline.identity.config import IdentityConfig

_NULLABLE_STRING = {"type": "string", "nullable": True}
_NULLABLE_TIME = {"type": "string", "format": "date-time", "nullable": True}
_NULLABLE_NUMBER = {"type": "number", "nullable": True}
_OBJECT = {"type": "object", "additionalProperties": True}
_COUNTS = {"type": "object", "additionalProperties": {"type": "integer"}}


_ERRORS = {
    "400": _response("Bad input: malformed id, identifier or limit", "Error"),
    "401": _response("Missing or wrong bearer token", "Error"),
    "404": _response("No such customer (or erased)", "Error"),
    "503": _response("The profile store did not answer", "Error"),
}

_CUSTOMER_ID = {
    "name": "customer_id",
    "in": "path",
    "required": True,
    "description": "A customer id; a merged (absorbed) id answers its survivor.",
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}$"},
}

_INTEGER_STATS = (
    "events", "page_views", "screen_views", "sessions", "time_on_site_s", "cart_adds",
    "checkouts", "product_views", "orders", "refunds", "email_opens", "email_clicks",
    "form_submits", "reviews", "app_opens", "nps_promoters", "nps_passives", "nps_detractors",
    "bot_events",
)  # fmt: skip
RFM_SEGMENTS = ("Champions", "Loyal", "New", "Potential", "At Risk", "Hibernating", "Lost")
_TOUCH_FIELDS = (
    "channel", "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "referrer",
)  # fmt: skip
_PROFILE_REQUIRED = ("customer_id", "identities", "traits", "stats", "scores", "merged_from")

_STATS = {
    "type": "object",
    "description": "Behaviour and transaction aggregates; times are ISO 8601 UTC with Z, money "
    "in `currency`, net of refunds.",
    "properties": {
        **{name: {"type": "integer"} for name in _INTEGER_STATS},
        **{
            name: _NULLABLE_TIME
            for name in ("first_seen", "last_seen", "first_order_at", "last_order_at")
        },
        "currency": {"type": "string"},
        "revenue": {"type": "number"},
        "gross_revenue": {"type": "number"},
        "refunded_amount": {"type": "number"},
        "avg_order_value": {"type": "number"},
        "revenue_by_currency": {"type": "object", "additionalProperties": {"type": "number"}},
        "products": _COUNTS,
        "categories": _COUNTS,
        "devices": _COUNTS,
        "browsers": _COUNTS,
        "os": _COUNTS,
        "first_touch": {**_ref("Touch"), "nullable": True},
        "last_touch": {**_ref("Touch"), "nullable": True},
        "nps_last_score": {"type": "integer", "nullable": True},
        "nps_last_at": _NULLABLE_TIME,
        "subscriptions": _OBJECT,
        "consent": {**_OBJECT, "nullable": True},
        "last_pages": {"type": "array", "items": _OBJECT},
    },
}

_SCORES = {
    "type": "object",
    "description": "Cross-customer scores from the ClickHouse views, refreshed every minute "
    "(null until the first refresh after the customer appeared; rfm/abc/xyz null without "
    "orders).",
    "properties": {
        "rfm": {
            "type": "object",
            "nullable": True,
            "properties": {
                "recency_days": {"type": "integer"},
                "frequency": {"type": "integer"},
                "monetary": {"type": "number"},
                "r": {"type": "integer", "minimum": 1, "maximum": 5},
                "f": {"type": "integer", "minimum": 1, "maximum": 5},
                "m": {"type": "integer", "minimum": 1, "maximum": 5},
                "cell": {"type": "string", "example": "545"},
                "segment": {
                    "type": "string",
                    "enum": list(RFM_SEGMENTS),
                },
            },
        },
        "abc": {
            "type": "object",
            "nullable": True,
            "properties": {
                "class": {"type": "string", "enum": ["A", "B", "C"]},
                "revenue_share": {"type": "number"},
                "cumulative_share": {"type": "number"},
            },
        },
        "xyz": {
            "type": "object",
            "nullable": True,
            "properties": {
                "class": {"type": "string", "enum": ["X", "Y", "Z"]},
                "cv_orders": {"type": "number"},
                "cv_revenue": _NULLABLE_NUMBER,
                "orders_in_window": {"type": "integer"},
                "months": {"type": "integer"},
            },
        },
        "ltv": {
            "type": "object",
            "nullable": True,
            "description": f"Predicted LTV = {LTV_MODEL}.",
            "properties": {
                "currency": {"type": "string"},
                "historical": {"type": "number"},
                "predicted": {"type": "number"},
                "avg_order_value": {"type": "number"},
                "orders_per_year": {"type": "number"},
                "expected_remaining_years": {"type": "integer"},
                "model": {"type": "string"},
            },
        },
        "as_of": {"type": "string", "format": "date", "nullable": True},
        "refreshed_at": _NULLABLE_TIME,
    },
}

_EVENT = {
    "type": "object",
    "properties": {
        "event_id": {"type": "string"},
        "customer_id": {"type": "string", "description": "The id the event was stored under."},
        "type": {"type": "string"},
        "event": _NULLABLE_STRING,
        "timestamp": {"type": "string", "format": "date-time"},
        "received_at": {"type": "string", "format": "date-time"},
        "source": _NULLABLE_STRING,
        "anonymous_id": _NULLABLE_STRING,
        "user_id": _NULLABLE_STRING,
        "properties": _OBJECT,
        "traits": _OBJECT,
        "context": _OBJECT,
        "device": _OBJECT,
        "channel": _NULLABLE_STRING,
        "is_bot": {"type": "boolean"},
        "consent": {"type": "array", "items": {"type": "string"}},
    },
}


def build_openapi(config: IdentityConfig) -> dict[str, Any]:
    """The spec; ``config`` supplies the identifier types accepted by the lookup."""
    lookup_params = [
        {
            "name": id_type,
            "in": "query",
            "required": False,
            "description": f"Look up by {id_type}, normalized as at ingestion "
            "(emails trimmed and lower-cased, phones to E.164). Give exactly one identifier.",
            "schema": {"type": "string", "minLength": 1},
        }
        for id_type in config.types
    ]
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "CDP profile API",
            "version": __version__,
            "description": "Customer 360 profiles from ClickHouse. Every endpoint but "
            "/openapi.json, /healthz and /metrics needs `Authorization: Bearer <token>`.",
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/profiles/{customer_id}": {
                "get": {
                    "summary": "Profile by customer id",
                    "operationId": "getProfile",
                    "parameters": [_CUSTOMER_ID],
                    "responses": {"200": _response("The profile", "Profile"), **_ERRORS},
                }
            },
            "/v1/profiles": {
                "get": {
                    "summary": "Profile by identifier",
                    "operationId": "findProfile",
                    "parameters": lookup_params,
                    "responses": {"200": _response("The profile", "Profile"), **_ERRORS},
                }
            },
            "/v1/profiles/{customer_id}/events": {
                "get": {
                    "summary": "Event timeline, newest first, merged customers included",
                    "operationId": "getTimeline",
                    "parameters": [
                        _CUSTOMER_ID,
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": MAX_LIMIT,
                                "default": DEFAULT_LIMIT,
                            },
                        },
                    ],
                    "responses": {"200": _response("The timeline", "Timeline"), **_ERRORS},
                }
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}},
                    "additionalProperties": True,
                },
                "Touch": {
                    "type": "object",
                    "properties": {
                        "at": _NULLABLE_TIME,
                        **{name: _NULLABLE_STRING for name in _TOUCH_FIELDS},
                    },
                },
                "Profile": {
                    "type": "object",
                    "required": list(_PROFILE_REQUIRED),
                    "properties": {
                        "customer_id": {"type": "string"},
                        "identities": {
                            "type": "object",
                            "description": "Identifier type → values, most recent first.",
                            "additionalProperties": {"type": "array", "items": {"type": "string"}},
                        },
                        "traits": _OBJECT,
                        "traits_updated_at": {
                            "type": "object",
                            "additionalProperties": {"type": "string", "format": "date-time"},
                        },
                        "stats": _STATS,
                        "scores": _SCORES,
                        "merged_from": {
                            "type": "array",
                            "description": "Customer ids merged into this one.",
                            "items": {"type": "string"},
                        },
                    },
                },
                "Event": _EVENT,
                "Timeline": {
                    "type": "object",
                    "required": ["customer_id", "customer_ids", "limit", "events"],
                    "properties": {
                        "customer_id": {"type": "string"},
                        "customer_ids": {
                            "type": "array",
                            "description": "The customer and every id merged into it.",
                            "items": {"type": "string"},
                        },
                        "limit": {"type": "integer"},
                        "events": {"type": "array", "items": _ref("Event")},
                    },
                },
            },
        },
    }
