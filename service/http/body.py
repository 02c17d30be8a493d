"""Reading a JSON request body strictly, and turning schema errors into field errors.

Strict means: ``application/json`` only, UTF-8, one object at the top level, no
duplicate keys (two parsers could disagree about which one wins), no NaN or
Infinity, bounded nesting, and the size limit enforced by aiohttp before any
of it is read.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web
from marshmallow import Schema, ValidationError

from service.domain.redaction import contains_card_number
from service.errors import FieldError, MalformedRequest, PayloadTooLarge, UnsupportedMediaType, ValidationFailed

MAX_DEPTH = 8


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey
        result[key] = value
    return result


def _reject_constant(_: str) -> Any:
    raise ValueError("NaN and Infinity are not JSON")


def _depth(value: Any, limit: int) -> int:
    stack: list[tuple[Any, int]] = [(value, 1)]
    deepest = 0
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        if isinstance(node, dict):
            stack.extend((v, level + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, level + 1) for v in node)
    return deepest


#: What ``json.loads(text, object_pairs_hook=..., parse_constant=...)`` builds on every call, built once.
_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)


def parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
        data = _DECODER.decode(text)
    except UnicodeDecodeError:
        raise MalformedRequest("The body is not UTF-8") from None
    except _DuplicateKey:
        raise MalformedRequest("The body repeats a key") from None
    except RecursionError:
        raise MalformedRequest("The body is nested too deeply") from None
    except ValueError:
        raise MalformedRequest("The body is not valid JSON") from None
    if not isinstance(data, dict):
        raise MalformedRequest("The body must be a JSON object")
    # Each level of nesting opens a bracket, so a text with few brackets (inside strings too) cannot be deep.
    if text.count("{") + text.count("[") > MAX_DEPTH and _depth(data, MAX_DEPTH) > MAX_DEPTH:
        raise MalformedRequest("The body is nested too deeply")
    if "\\u" in text and _has_lone_surrogate(data):
        raise MalformedRequest("The body has a \\u escape that is half of a character (a lone surrogate)")
    return data


def _has_lone_surrogate(data: dict[str, Any]) -> bool:
    """A ``\\ud800`` escape is valid JSON but no character: nothing downstream could encode it as UTF-8."""
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


async def read_json(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise UnsupportedMediaType()
    charset = request.charset
    if charset and charset.lower() not in ("utf-8", "utf8"):
        raise UnsupportedMediaType("Only UTF-8 JSON is accepted")
    if request.content_length is not None and request.content_length > request.client_max_size:
        raise PayloadTooLarge()  # at once, from the header: nothing of it is read or waited for
    return parse_json_object(await request.read())


def field_errors(messages: Any, path: tuple[str, ...] = ()) -> Iterator[FieldError]:
    """Flatten marshmallow's nested messages into dotted-path field errors."""
    if isinstance(messages, dict):
        for key, value in messages.items():
            name = str(key)
            if contains_card_number(name):
                name = "[redacted]"
            yield from field_errors(value, (*path, name) if name != "_schema" else path)
    elif isinstance(messages, list):
        for message in messages:
            yield from field_errors(message, path)
    else:
        text = str(messages)
        code = "unknown_field" if text == "Unknown field." else "invalid"
        if text.startswith("Missing data"):
            code = "required"
        yield FieldError(".".join(path) or "(body)", code, text)


def load(schema: Schema, data: dict[str, Any]) -> Any:
    try:
        return schema.load(data)
    except ValidationError as exc:
        raise ValidationFailed(errors=list(field_errors(exc.messages))) from None


def load_with_fast_path(fast: Callable[[dict[str, Any]], Any], schema: Schema, data: dict[str, Any]) -> Any:
    """``fast(data)`` when a body's hand-written fast path takes it (its common shapes), else the schema's
    load (every other shape, and every refusal, with its ValidationFailed)."""
    loaded = fast(data)
    return loaded if loaded is not None else load(schema, data)


async def read_and_load(request: web.Request, schema: Schema) -> Any:
    return load(schema, await read_json(request))
