"""The collector's OpenAPI 3 description, served at ``GET /openapi.json``.

Built in Python rather than shipped as a data file so that it installs with the package and stays
next to the code it describes; the fuzz test (schemathesis) reads it from the running collector.
The message schema is deliberately as permissive as the Segment API: SDKs send fields we ignore,
so unknown keys are allowed everywhere.
"""

from __future__ import annotations

from typing import Any

from pipeline import __version__
from pipeline.collector.payload import MAX_BATCH_BYTES, MAX_EVENT_BYTES, MESSAGE_TYPES
from pipeline.collector.pixel import PIXEL_TYPES
from pipeline.httpd import openapi_json_response as _json_response
from pipeline.httpd import openapi_ref as _ref

_JSON = "application/json"


_ERRORS = {
    "400": _json_response("Malformed JSON, invalid UTF-8 or a message breaking the API", "Error"),
    "401": _json_response("Missing or unknown write key", "Error"),
    "413": _json_response(
        f"An event over {MAX_EVENT_BYTES} bytes or a body over {MAX_BATCH_BYTES} bytes", "Error"
    ),
    "503": {
        **_json_response("Kafka did not acknowledge in time: retry after Retry-After", "Error"),
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    },
}
_GIF = {"description": "A 1x1 transparent GIF", "content": {"image/gif": {}}}
_STRING_MAP = {"type": "object", "additionalProperties": True}

_MESSAGE_FIELDS: dict[str, Any] = {
    "type": {"type": "string", "enum": sorted(MESSAGE_TYPES)},
    "messageId": {"type": "string", "description": "Idempotency key; generated when missing"},
    "userId": {"type": "string"},
    "anonymousId": {"type": "string"},
    "previousId": {"type": "string", "description": "alias: the earlier id"},
    "groupId": {"type": "string", "description": "group: the account id"},
    "event": {"type": "string", "description": "track: the event name (required)"},
    "name": {"type": "string", "description": "page / screen: its name"},
    "properties": _STRING_MAP,
    "traits": _STRING_MAP,
    "context": _ref("Context"),
    "integrations": _STRING_MAP,
    "timestamp": {"type": "string", "format": "date-time"},
    "originalTimestamp": {"type": "string", "format": "date-time"},
    "sentAt": {"type": "string", "format": "date-time"},
    "writeKey": {"type": "string", "description": "When not sent as the Basic user name"},
}

_REQUIRED_BY_TYPE: dict[str, list[str]] = {
    "track": ["event"],
    "alias": ["userId", "previousId"],
    "group": ["groupId"],
}


def _message_schema(msg_type: str | None) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": _MESSAGE_FIELDS,
        "additionalProperties": True,
    }
    if msg_type is None:
        schema["required"] = ["type"]
    elif msg_type in _REQUIRED_BY_TYPE:
        schema["required"] = _REQUIRED_BY_TYPE[msg_type]
    return schema


def _single(msg_type: str) -> dict[str, Any]:
    return {
        "post": {
            "operationId": msg_type,
            "summary": f"Send one {msg_type} message (Segment HTTP Tracking API)",
            "security": [{"writeKey": []}, {}],
            "requestBody": {
                "required": True,
                "content": {_JSON: {"schema": _message_schema(msg_type)}},
            },
            "responses": {"200": _json_response("Written to Kafka", "Success"), **_ERRORS},
        }
    }


def _pixel_query(name: str, description: str, required: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": {"type": "string"},
    }


_SHORT_PIXEL_PARAMETERS = [
    _pixel_query("e", "Event name: a track with that name; without it a page view"),
    _pixel_query("u", "Page URL"),
    _pixel_query("r", "Referrer"),
    _pixel_query("t", "Page title"),
    _pixel_query("uid", "userId"),
    _pixel_query("aid", "anonymousId (else the first-party cookie)"),
    _pixel_query("em", "Email (context.traits.email)"),
    _pixel_query("k", "Write key"),
    *(
        _pixel_query(f"utm_{part}", f"Campaign {part}")
        for part in ("source", "medium", "campaign", "term", "content")
    ),
]


def openapi_spec() -> dict[str, Any]:
    paths: dict[str, Any] = {f"/v1/{t}": _single(t) for t in sorted(MESSAGE_TYPES)}
    paths["/v1/batch"] = {
        "post": {
            "operationId": "batch",
            "summary": "Send many messages; valid ones are accepted, invalid ones reported",
            "security": [{"writeKey": []}, {}],
            "requestBody": {"required": True, "content": {_JSON: {"schema": _ref("Batch")}}},
            "responses": {
                "200": _json_response("Valid messages written to Kafka", "BatchResult"),
                **_ERRORS,
                "400": _json_response("Malformed body, or no valid message", "BatchError"),
            },
        }
    }
    paths["/v1/pixel/{kind}"] = {
        "get": {
            "operationId": "pixel",
            "summary": "Segment pixel API: a message as base64 JSON in `data`",
            "parameters": [
                {
                    "name": "kind",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "enum": sorted(PIXEL_TYPES)},
                },
                _pixel_query("data", "base64 (standard or URL-safe) JSON message", True),
            ],
            "responses": {"200": _GIF, **_ERRORS},
        }
    }
    paths["/i"] = {
        "get": {
            "operationId": "shortPixel",
            "summary": "Short pixel for hand-written <img> tags; other parameters: properties",
            "parameters": _SHORT_PIXEL_PARAMETERS,
            "responses": {"200": _GIF, **_ERRORS},
        }
    }
    paths["/healthz"] = {
        "get": {
            "operationId": "health",
            "responses": {
                "200": {"description": "Kafka connected", "content": {_JSON: {}}},
                "503": {"description": "Kafka not connected", "content": {_JSON: {}}},
            },
        }
    }
    paths["/metrics"] = {
        "get": {
            "operationId": "metrics",
            "responses": {
                "200": {"description": "Prometheus metrics", "content": {"text/plain": {}}}
            },
        }
    }
    paths["/openapi.json"] = {
        "get": {
            "operationId": "openapi",
            "responses": {"200": {"description": "This document", "content": {_JSON: {}}}},
        }
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "CDP collector",
            "version": __version__,
            "description": "Segment-compatible tracking API and pixel. Write key as the HTTP "
            "Basic user name or `writeKey` in the body.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"writeKey": {"type": "http", "scheme": "basic"}},
            "schemas": _SCHEMAS,
        },
    }


_SCHEMAS: dict[str, Any] = {
    "Context": {
        "type": "object",
        "additionalProperties": True,
        "properties": {
            "ip": {"type": "string"},
            "userAgent": {"type": "string"},
            "locale": {"type": "string"},
            "page": {
                "type": "object",
                "additionalProperties": True,
                "properties": {
                    key: {"type": "string"} for key in ("url", "path", "title", "referrer")
                },
            },
            "library": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "version": {"type": "string"}},
            },
            "campaign": {
                "type": "object",
                "additionalProperties": True,
                "properties": {
                    key: {"type": "string"}
                    for key in ("name", "source", "medium", "term", "content")
                },
            },
            "traits": _STRING_MAP,
            "consent": {
                "description": "Granted categories: a list, or {categoryPreferences: {name: bool}}",
                "oneOf": [
                    {"type": "array", "items": {"type": "string"}},
                    {"type": "object", "additionalProperties": True},
                ],
            },
        },
    },
    "Message": _message_schema(None),
    "Batch": {
        "type": "object",
        "required": ["batch"],
        "additionalProperties": True,
        "properties": {
            "batch": {"type": "array", "items": _ref("Message")},
            "context": _ref("Context"),
            "sentAt": {"type": "string", "format": "date-time"},
            "writeKey": {"type": "string"},
        },
    },
    "Success": {
        "type": "object",
        "required": ["success"],
        "properties": {"success": {"type": "boolean", "enum": [True]}},
    },
    "Rejected": {
        "type": "object",
        "required": ["index", "code", "reason"],
        "properties": {
            "index": {"type": "integer", "description": "Position in `batch`"},
            "code": {"type": "string", "enum": ["invalid", "too_large"]},
            "field": {"type": "string", "nullable": True, "description": "Path in the item"},
            "reason": {"type": "string"},
        },
    },
    "BatchResult": {
        "type": "object",
        "required": ["success", "accepted", "rejected"],
        "properties": {
            "success": {"type": "boolean", "enum": [True]},
            "accepted": {"type": "integer"},
            "rejected": {"type": "array", "items": _ref("Rejected")},
        },
    },
    "Error": {
        "type": "object",
        "required": ["success", "code", "message"],
        "properties": {
            "success": {"type": "boolean", "enum": [False]},
            "code": {"type": "string"},
            "message": {"type": "string"},
            "field": {"type": "string", "description": "Path of the offending field"},
        },
    },
    "BatchError": {
        "type": "object",
        "required": ["success", "code", "message"],
        "properties": {
            "success": {"type": "boolean", "enum": [False]},
            "code": {"type": "string"},
            "message": {"type": "string"},
            "field": {"type": "string"},
            "accepted": {"type": "integer"},
            "rejected": {"type": "array", "items": _ref("Rejected")},
        },
    },
}
