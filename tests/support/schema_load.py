"""What a marshmallow schema makes of a body, or None when it refuses it: the yardstick the fast body paths
(``service.http.token_body``, ``service.http.charge_body``) are held to."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError


def schema_load(schema: Schema, data: dict[str, Any]) -> dict[str, Any] | None:
    try:
        loaded: dict[str, Any] = schema.load(data)
    except ValidationError:
        return None
    return loaded
