"""Checking real HTTP exchanges with the in-process app against ``openapi.yaml``.

:class:`Contract` sends a request through an aiohttp ``TestClient``, then hands
openapi-core the request that was really sent (:class:`SentRequest`) and the
response that really came back (:class:`ReceivedResponse`), both adapters for
openapi-core's request/response protocols.  A response that does not match the
operation's documented response for its status fails the test, and so does a
status the operation does not list.  The request is validated too, and the test
says whether the document should accept it: a 2xx always needs a request the
document accepts.

Routes the document does not list (404 ``not_found``, 405
``method_not_allowed``) and bytes that are not HTTP at all (400
``malformed_request``) have no operation to validate against; their answers are
checked against the reusable ``NotFound``, ``MethodNotAllowed`` and
``MalformedRequest`` responses in ``components`` with the same JSON Schema
dialect (OAS 3.1).

Every checked exchange is recorded (operation and status, problem code, field
codes) so a test can assert exactly which parts of the document it exercised.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from jsonschema.exceptions import ValidationError as SchemaValidationError
from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.deserializing.media_types.util import json_loads
from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound
from openapi_schema_validator import OAS31Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012
from werkzeug.datastructures import Headers, ImmutableMultiDict

from service.domain.redaction import contains_card_number, redact_card_numbers
from tests.support import leaks

SPEC_PATH = Path(__file__).resolve().parents[2] / "openapi.yaml"
SPEC_URI = "urn:cardvault:openapi"
PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:cardvault:problem:"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
UNROUTED = "(unrouted)"
UNROUTED_RESPONSES = {400: "MalformedRequest", 404: "NotFound", 405: "MethodNotAllowed"}
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{8,64}$")


# --- the document -------------------------------------------------------------------


@functools.cache
def load_spec() -> dict[str, Any]:
    """``openapi.yaml`` as a dict (cached; do not mutate it)."""
    loaded: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
    return loaded


@functools.cache
def openapi() -> OpenAPI:
    """openapi-core's view of the document; problem+json is read as JSON, as it is."""
    config = Config(extra_media_type_deserializers={PROBLEM_JSON: json_loads})
    return OpenAPI.from_dict(load_spec(), config=config)


def pointer(*parts: str) -> str:
    """A JSON pointer (RFC 6901) to ``parts`` inside the document."""
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in parts)


def resolve(node: Any) -> Any:
    """Follow a local ``$ref`` (``#/...``) to what it names; anything else is returned as it is."""
    while isinstance(node, Mapping) and "$ref" in node:
        target: Any = load_spec()
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def schema_validator(json_pointer: str) -> OAS31Validator:
    """A validator for the schema at ``json_pointer`` of the document, its ``$ref``s resolved."""
    registry: Registry[Any] = Registry().with_resource(SPEC_URI, DRAFT202012.create_resource(load_spec()))
    return OAS31Validator(
        {"$ref": f"{SPEC_URI}#{json_pointer}"},
        registry=registry,
        format_checker=OAS31Validator.FORMAT_CHECKER,
    )


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Every (path template, method, operation object) the document lists."""
    for template, item in load_spec()["paths"].items():
        for method in HTTP_METHODS:
            if method in item:
                yield template, method, item[method]


def documented_statuses() -> set[tuple[str, int]]:
    """Every (operationId, status) pair the document lists."""
    return {(op["operationId"], int(status)) for _, _, op in operations() for status in op["responses"]}


def enum_of(schema_name: str) -> set[str]:
    return set(load_spec()["components"]["schemas"][schema_name]["enum"])


def find_operation(method: str, path: str) -> tuple[str | None, dict[str, Any] | None]:
    """The path template ``path`` matches (literal segments first) and its operation for ``method``."""
    segments = path.split("/")
    candidates = []
    for template in load_spec()["paths"]:
        parts = template.split("/")
        if len(parts) == len(segments) and all(
            (p.startswith("{") and p.endswith("}") and s) or p == s for p, s in zip(parts, segments, strict=True)
        ):
            candidates.append((template.count("{"), template))
    if not candidates:
        return None, None
    template = min(candidates)[1]
    return template, load_spec()["paths"][template].get(method.lower())


# --- openapi-core protocol adapters --------------------------------------------------


@dataclass(frozen=True)
class SentRequest:
    """openapi-core's ``Request`` protocol, built from what the test client actually sent."""

    host_url: str
    path: str
    method: str
    content_type: str
    body: bytes | None
    parameters: RequestParameters

    @classmethod
    def of(cls, response: ClientResponse, body: bytes | None) -> SentRequest:
        info = response.request_info
        url = info.url
        headers = Headers(list(info.headers.items()))
        return cls(
            host_url=str(url.origin()),
            path=url.path,
            method=info.method.lower(),
            content_type=headers.get("Content-Type", "").lower(),
            body=body,
            parameters=RequestParameters(
                query=ImmutableMultiDict(list(url.query.items())),
                header=headers,
                cookie=ImmutableMultiDict(),
            ),
        )


@dataclass(frozen=True)
class ReceivedResponse:
    """openapi-core's ``Response`` protocol, built from what the app actually answered."""

    status_code: int
    headers: Headers
    content_type: str
    data: bytes | None

    @classmethod
    def of(cls, response: ClientResponse, data: bytes) -> ReceivedResponse:
        headers = Headers(list(response.headers.items()))
        return cls(
            status_code=response.status,
            headers=headers,
            content_type=headers.get("Content-Type", "").lower(),
            data=data,
        )


def describe(errors: Iterable[BaseException]) -> str:
    """openapi-core's errors with their schema-level causes, card numbers redacted."""
    lines: list[str] = []
    for error in errors:
        current: BaseException | None = error
        depth = 0
        while current is not None:
            lines.append("  " * depth + f"{type(current).__name__}: {current}")
            for schema_error in getattr(current, "schema_errors", None) or ():
                where = "/".join(str(p) for p in schema_error.absolute_path)
                lines.append("  " * (depth + 1) + f"at /{where}: {schema_error.message}")
            current = current.__cause__
            depth += 1
    return redact_card_numbers("\n".join(lines))


# --- exchanges -----------------------------------------------------------------------


@dataclass(frozen=True)
class Exchange:
    """One checked request and its answer."""

    method: str
    path: str
    status: int
    headers: Headers
    data: bytes
    operation_id: str

    def json(self) -> Any:
        return json.loads(self.data)

    @property
    def is_problem(self) -> bool:
        return self.status >= 400 and bool(self.data) and self.headers.get("Content-Type", "").startswith(PROBLEM_JSON)

    @property
    def replayed(self) -> bool:
        """Whether this is a stored answer replayed for an Idempotency-Key."""
        return self.headers.get("Idempotent-Replayed") == "true"

    @property
    def problem_code(self) -> str | None:
        if not self.is_problem:
            return None
        return str(self.json()["code"])

    @property
    def field_errors(self) -> list[tuple[str, str]]:
        """(field, code) of each entry in a 422 answer's ``errors``."""
        if not self.data or self.status != 422:
            return []
        return [(e["field"], e["code"]) for e in self.json().get("errors", [])]


@dataclass(frozen=True)
class Covered:
    """What a test declares it exercises: (operationId, status) pairs, problem codes, field codes."""

    statuses: frozenset[tuple[str, int]]
    codes: frozenset[str] = frozenset()
    field_codes: frozenset[str] = frozenset()


def declarations(*modules: ModuleType) -> list[Covered]:
    """Every :func:`covers` declaration on the ``Test*`` classes of ``modules``."""
    return [
        test.contract_covers
        for module in modules
        for name, cls in vars(module).items()
        if name.startswith("Test") and isinstance(cls, type)
        for test in vars(cls).values()
        if hasattr(test, "contract_covers")
    ]


def covers(*statuses: tuple[str, int], codes: Iterable[str] = (), field_codes: Iterable[str] = ()) -> Any:
    """Declare exactly which documented statuses and codes a contract test provokes."""

    def mark(test: Any) -> Any:
        test.contract_covers = Covered(frozenset(statuses), frozenset(codes), frozenset(field_codes))
        return test

    return mark


@dataclass
class Recorder:
    """What the checked exchanges of one test have shown."""

    statuses: set[tuple[str, int]] = field(default_factory=set)
    codes: set[str] = field(default_factory=set)
    field_codes: set[str] = field(default_factory=set)

    def record(self, exchange: Exchange) -> None:
        self.statuses.add((exchange.operation_id, exchange.status))
        if exchange.problem_code is not None:
            self.codes.add(exchange.problem_code)
        self.field_codes.update(code for _, code in exchange.field_errors)


class Contract:
    """Sends requests to one in-process app and checks each exchange against the document."""

    def __init__(
        self, client: TestClient[Any, Any], recorder: Recorder | None = None, expected: Covered | None = None
    ) -> None:
        self.client = client
        self.recorder = recorder if recorder is not None else Recorder()
        self.expected = expected

    def using(self, client: TestClient[Any, Any]) -> Contract:
        """The same checks, record and declaration, against another app."""
        return Contract(client, self.recorder, self.expected)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        json_body: Any,
        body: bytes | None,
        headers: Mapping[str, str] | None,
        params: Mapping[str, str] | None,
    ) -> tuple[ClientResponse, bytes | None, bytes]:
        sent_headers = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode()
            sent_headers.setdefault("Content-Type", "application/json")
        response = await self.client.request(method, path, data=body, headers=sent_headers, params=params)
        data = await response.read()
        return response, body, data

    async def call(
        self,
        method: str,
        path: str,
        *,
        status: int,
        json: Any = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        conforms: bool = True,
    ) -> Exchange:
        """Send a request to a documented operation; check the answer, the request, and the status.

        ``conforms`` says whether the document itself accepts the request (False for
        requests that break a documented constraint: the app must refuse those).
        """
        _, operation = find_operation(method, path)
        assert operation is not None, f"{method} {path} is not a documented operation; use call_unrouted()"
        response, sent_body, data = await self._send(
            method, path, json_body=json, body=body, headers=headers, params=params
        )
        request = SentRequest.of(response, sent_body)
        received = ReceivedResponse.of(response, data)
        where = f"{method} {path} (operation {operation['operationId']}, answered {response.status})"
        shown = redact_card_numbers(data[:600].decode("utf-8", "replace"))

        listed = set(operation["responses"])
        assert str(response.status) in listed, f"{where}: status not documented (lists {sorted(listed)}): {shown}"
        assert response.status == status, f"{where}: expected {status}: {shown}"

        response_errors = list(openapi().iter_response_errors(request, received))
        assert not response_errors, f"{where}: the response does not conform:\n{describe(response_errors)}\n{shown}"

        request_errors = list(openapi().iter_request_errors(request))
        if conforms or 200 <= response.status < 300:
            assert not request_errors, f"{where}: the document refuses this request:\n{describe(request_errors)}"
        else:
            assert request_errors, f"{where}: the document accepts a request it should refuse"

        exchange = Exchange(method, path, response.status, received.headers, data, operation["operationId"])
        self._check_common(exchange, headers or {})
        self.recorder.record(exchange)
        return exchange

    async def call_unrouted(
        self, method: str, path: str, *, status: int, headers: Mapping[str, str] | None = None
    ) -> Exchange:
        """Send a request the document does not list; check it against the NotFound/MethodNotAllowed responses."""
        response, sent_body, data = await self._send(
            method, path, json_body=None, body=None, headers=headers, params=None
        )
        where = f"{method} {path} (not documented, answered {response.status})"
        assert response.status == status, f"{where}: expected {status}: {data[:300]!r}"
        received = ReceivedResponse.of(response, data)
        errors = list(openapi().iter_response_errors(SentRequest.of(response, sent_body), received))
        assert errors, f"{where}: openapi-core found an operation for it"
        assert isinstance(errors[0], PathNotFound | OperationNotFound), describe(errors)

        self._check_component_response(received, where, has_body=method.upper() != "HEAD")
        exchange = Exchange(method, path, response.status, received.headers, data, UNROUTED)
        self._check_common(exchange, headers or {})
        self.recorder.record(exchange)
        return exchange

    async def call_raw(self, raw: bytes, *, status: int) -> Exchange:
        """Send bytes that are not valid HTTP; check the answer against the documented response for ``status``."""
        server = self.client.server
        reader, writer = await asyncio.open_connection(server.host, server.port)
        try:
            writer.write(raw)
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 10)  # to EOF: the server closes the connection
        finally:
            writer.close()
        head, _, data = answer.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = Headers([tuple(line.split(": ", 1)) for line in header_lines])
        received = ReceivedResponse(int(status_line.split()[1]), headers, headers.get("Content-Type", "").lower(), data)
        where = f"raw {raw[:40]!r}... (answered {received.status_code})"
        assert received.status_code == status, f"{where}: expected {status}: {data[:300]!r}"
        self._check_component_response(received, where, has_body=True)
        exchange = Exchange("(raw)", "(not HTTP)", received.status_code, headers, data, UNROUTED)
        self._check_common(exchange, {})
        self.recorder.record(exchange)
        return exchange

    def _check_component_response(self, received: ReceivedResponse, where: str, *, has_body: bool) -> None:
        """Headers and body against the reusable response in ``components`` for this status."""
        name = UNROUTED_RESPONSES[received.status_code]
        documented = load_spec()["components"]["responses"][name]
        for header_name, header in documented["headers"].items():
            value = received.headers.get(header_name)
            if resolve(header).get("required"):
                assert value is not None, f"{where}: no {header_name} header"
            if value is not None:
                self._validate(pointer("components", "headers", header_name, "schema"), value, where)
        if has_body:
            assert received.content_type.startswith(PROBLEM_JSON), f"{where}: {received.content_type}"
            schema_at = pointer("components", "responses", name, "content", PROBLEM_JSON, "schema")
            self._validate(schema_at, json.loads(received.data or b""), where)

    @staticmethod
    def _validate(json_pointer: str, value: Any, where: str) -> None:
        errors: list[SchemaValidationError] = list(schema_validator(json_pointer).iter_errors(value))
        assert not errors, f"{where}: does not match {json_pointer}: " + "; ".join(e.message for e in errors)

    @staticmethod
    def _check_common(exchange: Exchange, sent_headers: Mapping[str, str]) -> None:
        """What the document promises for every answer: request id, problem shape, no card number."""
        where = f"{exchange.method} {exchange.path} ({exchange.status})"
        request_id = exchange.headers.get("X-Request-Id")
        assert request_id is not None, f"{where}: no X-Request-Id"
        assert REQUEST_ID_PATTERN.match(request_id), f"{where}: X-Request-Id {request_id!r}"
        inbound = sent_headers.get("X-Request-Id")
        if inbound is not None and REQUEST_ID_PATTERN.match(inbound) and not contains_card_number(inbound):
            assert request_id == inbound, f"{where}: the inbound X-Request-Id was not echoed"
        else:
            assert request_id != inbound, f"{where}: an unusable inbound X-Request-Id was echoed"
        if exchange.status == 402:  # a declined or failed charge or refund: the object itself, not a problem
            assert exchange.headers.get("Content-Type", "").startswith("application/json"), where
        elif exchange.status >= 400 and exchange.data:
            assert exchange.is_problem, where
            problem = exchange.json()
            assert problem["status"] == exchange.status, where
            assert problem["type"] == PROBLEM_TYPE_PREFIX + problem["code"], where
            # A replayed answer is the first answer byte for byte, request_id included.
            if "request_id" in problem and not exchange.replayed:
                assert problem["request_id"] == request_id, where
        replayed = exchange.headers.get("Idempotent-Replayed")
        assert replayed in (None, "true"), f"{where}: Idempotent-Replayed {replayed!r}"
        text = "\n".join([exchange.data.decode("utf-8", "replace"), *exchange.headers.values()])
        assert not leaks.cards_in_text(text), f"{where}: a test card number is in the answer"

    def assert_covered(self) -> None:
        """The test provoked exactly the statuses and codes it declares with :func:`covers`."""
        expected = self.expected
        assert expected is not None, "declare what this test covers with @covers(...)"
        assert self.recorder.statuses == expected.statuses, (
            f"observed {sorted(self.recorder.statuses)}, declared {sorted(expected.statuses)}"
        )
        assert self.recorder.codes == expected.codes, (
            f"observed {sorted(self.recorder.codes)}, declared {sorted(expected.codes)}"
        )
        assert self.recorder.field_codes == expected.field_codes, (
            f"observed {sorted(self.recorder.field_codes)}, declared {sorted(expected.field_codes)}"
        )
