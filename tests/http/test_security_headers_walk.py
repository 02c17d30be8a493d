"""One walk over every route of every surface, checking the security headers of every answer.

The routes are not listed here: they are read from the application's router
(the API, health, the hosted card form and its assets, checkout, and the staff
sub-application with its static files), so a route added tomorrow is walked
tomorrow.  Each is asked with GET and with each of its own methods (and with a
method it does not take, for the 405), once anonymously and once with the
credentials its surface uses (the agency's secret key; the publishable key and
a registered origin for the card form; a signed-in staff session), plus a path
that does not exist under each surface.  Every answer, errors included, must
carry the headers below; the Content-Security-Policy must fit its surface.

The app runs with ``tls=True`` (it believes it is behind TLS, as ``serve``
does), so HSTS is expected everywhere; ``tests/scanners/test_sslyze.py``
checks the same header over a real TLS listener.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from multidict import CIMultiDictProxy

from service.adapters.keyring import MasterKeys
from service.app import create_app
from service.domain.staff import Role
from service.domain.staff_sessions import COOKIE_NAME
from service.http.state import SERVICES
from service.settings import Settings
from service.tls.mozilla import HSTS_HEADER_VALUE
from tests.conftest import AgencyKeys, FakeClock, create_agency
from tests.support.staff_pages import StaffUser, add_staff, staff_member

Client = TestClient[Any, Any]
SHOP = "https://shop.example.gov"
OTHER_METHOD = "PUT"  # no route takes it: every resource must answer 405 with the same headers

#: Values for path parameters that the walk does not get from a real object; the first that the
#: resource's own pattern accepts is used.  A new parameter whose pattern none fits fails the walk.
FALLBACK_PARAMETER_VALUES = ("x1", "tok_0000000000000000000000", "ch_walk", "stf_0123456789abcdef")


@dataclass(frozen=True)
class Route:
    """One resource of the router, with the path the walk asks and the methods it takes."""

    template: str
    path: str
    methods: frozenset[str]


@dataclass(frozen=True)
class Answer:
    route: Route
    method: str
    authenticated: bool
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def where(self) -> str:
        who = "authenticated" if self.authenticated else "anonymous"
        return f"{self.method} {self.route.path} ({who}) -> {self.status}"


# --- enumerating the router ------------------------------------------------------------------------


def _resources(app: web.Application) -> Iterator[web.AbstractResource]:
    for resource in app.router.resources():
        if isinstance(resource, web.PrefixedSubAppResource):
            yield from _resources(resource._app)
        else:
            yield resource


def _fill(resource: web.DynamicResource, values: dict[str, str]) -> str:
    info = resource.get_info()
    pattern: re.Pattern[str] = info["pattern"]
    parameters = {name: values.get(name) for name in pattern.groupindex}
    for name, value in parameters.items():
        candidates = [value] if value else []
        candidates += FALLBACK_PARAMETER_VALUES
        for candidate in candidates:
            trial = {**{k: v or candidate for k, v in parameters.items()}, name: candidate}
            if pattern.fullmatch(info["formatter"].format(**trial)):
                parameters[name] = candidate
                break
        else:
            pytest.fail(f"no sample value fits {{{name}}} in {info['formatter']}; add one to the walk")
    return str(info["formatter"]).format(**parameters)


def routes_of(app: web.Application, values: dict[str, str]) -> list[Route]:
    """Every resource of the app and its sub-apps; a static directory contributes each of its files."""
    routes: list[Route] = []
    for resource in _resources(app):
        methods = frozenset(route.method for route in resource) - {"HEAD", "*"}
        info = resource.get_info()
        if isinstance(resource, web.StaticResource):
            files = sorted(p for p in info["directory"].rglob("*") if p.is_file())
            assert files, f"{info['prefix']} serves an empty directory"
            for file in files:
                path = f"{info['prefix']}/{file.relative_to(info['directory']).as_posix()}"
                routes.append(Route(info["prefix"] + "/{filename}", path, methods))
        elif isinstance(resource, web.DynamicResource):
            routes.append(Route(resource.canonical, _fill(resource, values), methods))
        else:
            routes.append(Route(resource.canonical, info["path"], methods))
    return routes


# --- what each answer must carry --------------------------------------------------------------------

PUBLIC_ASSET_TYPES = ("text/javascript", "text/css", "text/plain", "image/")


def surface(path: str) -> str:
    if path.startswith("/staff"):
        return "staff"
    if path == "/elements/v1/frame":
        return "frame"
    return "api"


def is_public_asset(answer: Answer) -> bool:
    """Scripts, styles and the SRI line: the same bytes for everyone, no card, no session."""
    content_type = answer.headers.get("Content-Type", "")
    return answer.status == 200 and content_type.startswith(PUBLIC_ASSET_TYPES) and "Set-Cookie" not in answer.headers


def directives(policy: str) -> dict[str, str]:
    parsed = {}
    for part in policy.split(";"):
        name, _, value = part.strip().partition(" ")
        if name:
            parsed[name.lower()] = value.strip()
    return parsed


def header_problems(answer: Answer) -> list[str]:
    headers = answer.headers
    found: list[str] = []

    def expect(name: str, wanted: str) -> None:
        if headers.get(name) != wanted:
            found.append(f"{name}: {headers.get(name)!r}, wanted {wanted!r}")

    expect("Strict-Transport-Security", HSTS_HEADER_VALUE)
    expect("X-Content-Type-Options", "nosniff")
    expect("Referrer-Policy", "no-referrer")
    server = headers.get("Server", "")
    if server != "cardvault":
        found.append(f"Server: {server!r} (no product or version may be disclosed)")
    if not headers.get("X-Request-Id", "").startswith("req_"):
        found.append("no X-Request-Id")
    if any(name.lower() in ("x-powered-by", "x-aspnet-version") for name in headers):
        found.append("a powered-by header")

    policies = headers.getall("Content-Security-Policy", [])
    if len(policies) != 1:
        found.append(f"{len(policies)} Content-Security-Policy headers")
        return found
    csp = directives(policies[0])
    if csp.get("default-src") != "'none'":
        found.append(f"CSP default-src {csp.get('default-src')!r}")
    if csp.get("base-uri") != "'none'":
        found.append(f"CSP base-uri {csp.get('base-uri')!r}")
    kind = surface(answer.route.path)
    framed_form = kind == "frame" and answer.status == 200
    wanted_ancestors = SHOP if framed_form else "'none'"
    if csp.get("frame-ancestors") != wanted_ancestors:
        found.append(f"CSP frame-ancestors {csp.get('frame-ancestors')!r}, wanted {wanted_ancestors!r}")
    if framed_form:
        if "X-Frame-Options" in headers:
            found.append("X-Frame-Options on the framable card form (it would forbid the registered origin)")
    else:
        expect("X-Frame-Options", "DENY")

    if not is_public_asset(answer):
        expect("Cache-Control", "no-store")
    elif "no-store" not in headers.get("Cache-Control", "") and "public" not in headers.get("Cache-Control", ""):
        found.append(f"static asset Cache-Control {headers.get('Cache-Control')!r}")

    if answer.status >= 400:
        content_type = headers.get("Content-Type", "")
        if kind == "staff":
            if not content_type.startswith("text/html"):
                found.append(f"staff refusal as {content_type!r}, not a page")
        elif not content_type.startswith("application/problem+json"):
            found.append(f"refusal as {content_type!r}, not problem+json")
        else:
            problem = json.loads(answer.body)
            if problem.get("status") != answer.status or not problem.get("code"):
                found.append(f"problem document {problem}")
    if b"aiohttp" in answer.body.lower() or b"Python/" in answer.body:
        found.append("the body names the server's software")
    return found


# --- the walk ----------------------------------------------------------------------------------------


@pytest.fixture
async def tls_client(aiohttp_client: Any, settings: Settings, master_keys: MasterKeys, clock: FakeClock) -> Client:
    """The app as ``serve`` runs it over TLS (``tls=True``: HSTS on every answer)."""
    app = create_app(settings, master_keys, redis_url=settings.redis.url or "", clock=clock, tls=True)
    client: Client = await aiohttp_client(app)
    return client


@dataclass
class World:
    """Real objects for the path parameters, and the credentials of each surface."""

    agency: AgencyKeys
    staff: list[StaffUser]
    values: dict[str, str]


async def make_world(client: Client, clock: FakeClock) -> World:
    from tests.support.cards import CVC, VISA

    agency = await create_agency(client, SHOP)
    card = {"card": {"number": VISA, "exp_month": 12, "exp_year": 2031, "cvc": CVC}}
    token = await client.post("/v1/tokens", json=card, headers=agency.auth)
    assert token.status == 201, await token.text()
    token_id = (await token.json())["id"]
    charged_token = await client.post("/v1/tokens", json=card, headers=agency.auth)
    charge = await client.post(
        "/v1/charges",
        json={"token": (await charged_token.json())["id"], "amount": 1200, "currency": "usd", "capture": False},
        headers=agency.auth,
    )
    assert charge.status == 201, await charge.text()
    session = await client.post(
        "/v1/checkout/sessions",
        json={"amount": 2500, "order_reference": "WALK-1", "success_url": f"{SHOP}/ok", "cancel_url": f"{SHOP}/"},
        headers=agency.auth,
    )
    assert session.status == 201, await session.text()
    # One session per role that sees pages the others do not (orders and their CSV, the audit trail, the team).
    staff = [
        await staff_member(client, clock, agency.slug, f"{role.value}-{agency.slug}", role)
        for role in (Role.SUPERVISOR, Role.AUDITOR, Role.ADMIN)
    ]
    await add_staff(client, agency.slug, f"pending-{agency.slug}", Role.AGENT)
    services = client.app[SERVICES].staff
    assert services is not None
    members = await services.accounts.list(agency.slug)
    values = {
        "token_id": token_id,
        "charge_id": (await charge.json())["id"],
        "session_id": (await session.json())["id"],
    }
    values["staff_id"] = next(m.id for m in members if m.username == f"pending-{agency.slug}")
    return World(agency, staff, values)


def credentials(world: World, path: str, role: int = 0) -> tuple[dict[str, str], dict[str, str]]:
    """Headers and query for an authenticated request to ``path`` (``role``: which staff session)."""
    kind = surface(path)
    if kind == "staff":
        cookie = world.staff[role].browser.cookie
        assert cookie
        return {"Cookie": f"{COOKIE_NAME}={cookie}"}, {}
    if kind == "frame":
        return {}, {"key": world.agency.publishable, "origin": SHOP}
    return dict(world.agency.auth), {}


def sample_body(path: str) -> bytes:
    """A body the route accepts where the walk knows one (so successes are walked too), else ``{}``."""
    from tests.support.cards import CVC, VISA

    bodies: dict[str, Any] = {
        "/v1/tokens": {"card": {"number": VISA, "exp_month": 12, "exp_year": 2031, "cvc": CVC}},
        "/v1/checkout/sessions": {
            "amount": 900,
            "order_reference": "WALK-2",
            "success_url": f"{SHOP}/ok",
            "cancel_url": f"{SHOP}/",
        },
    }
    return json.dumps(bodies.get(path, {})).encode()


async def ask(client: Client, route: Route, method: str, world: World | None, role: int = 0) -> Answer:
    headers, query = credentials(world, route.path, role) if world else ({}, {})
    body: bytes | None = None
    if method in ("POST", "PUT", "PATCH"):
        if surface(route.path) == "staff":
            body, headers["Content-Type"] = b"", "application/x-www-form-urlencoded"
        else:
            body, headers["Content-Type"] = sample_body(route.path), "application/json"
    response = await client.request(method, route.path, params=query, headers=headers, data=body, allow_redirects=False)
    payload = await response.read()
    return Answer(route, method, world is not None, response.status, response.headers, payload)


def not_found_routes() -> list[Route]:
    paths = ["/nowhere", "/v1/nowhere", "/v1/tokens/tok_does_not_exist/extra", "/elements/v1/nowhere", "/staff/nowhere"]
    return [Route(path, path, frozenset({"GET"})) for path in paths]


async def test_every_answer_of_every_route_carries_the_security_headers(tls_client: Client, clock: FakeClock) -> None:
    world = await make_world(tls_client, clock)
    routes = routes_of(tls_client.app, world.values)
    walked = {route.template for route in routes}
    # The walk must have found every surface; if one disappears from the router, this says so.
    for expected in ("/v1/tokens", "/healthz", "/elements/v1/frame", "/v1/checkout/sessions", "/staff/login"):
        assert expected in walked, f"{expected} not found in the router"
    assert any(template.startswith("/staff/static/") for template in walked)

    answers: list[Answer] = []
    statuses: set[int] = set()
    # DELETE last: it removes the token the other requests use.
    plan = sorted(routes + not_found_routes(), key=lambda r: "DELETE" in r.methods)
    for route in plan:
        methods = sorted({"GET", OTHER_METHOD, *route.methods}, key=lambda m: m == "DELETE")
        for method in methods:
            roles = range(len(world.staff)) if surface(route.path) == "staff" else range(1)
            asked = [await ask(tls_client, route, method, None)]
            asked += [await ask(tls_client, route, method, world, role) for role in roles]
            answers += asked
            statuses.update(answer.status for answer in asked)

    failures = [f"{a.where()}: {problem}" for a in answers for problem in header_problems(a)]
    assert not failures, "\n".join(failures)
    # The walk really reached successes, refusals and errors of each kind.
    assert {200, 201, 204, 401, 403, 404, 405, 422} <= statuses, statuses
    assert any(a.status == 200 and surface(a.route.path) == "staff" for a in answers)
    assert any(a.status == 200 and a.route.path.endswith(".csv") for a in answers), "no streamed CSV was walked"
    assert any(a.status == 200 and surface(a.route.path) == "frame" for a in answers)


#: Routes with a body limit of their own instead of ``server.max_body_bytes`` (each documented with its route).
ROUTE_BODY_LIMITS: dict[str, Callable[[Settings], int]] = {
    "/v1/redact": lambda settings: settings.redaction.max_body_bytes,  # transcripts and mail exports
}


def body_limit(settings: Settings, template: str) -> int:
    own = ROUTE_BODY_LIMITS.get(template)
    return own(settings) if own else settings.server.max_body_bytes


async def test_every_post_route_refuses_a_body_over_the_limit(tls_client: Client, clock: FakeClock) -> None:
    """``server.max_body_bytes`` (or the route's own documented limit) holds on every route that takes a body."""
    world = await make_world(tls_client, clock)
    settings = tls_client.app[SERVICES].settings
    posts = [route for route in routes_of(tls_client.app, world.values) if "POST" in route.methods]
    assert len(posts) >= 10, posts
    for route in posts:
        limit = body_limit(settings, route.template)
        roles = range(len(world.staff)) if surface(route.path) == "staff" else range(1)
        statuses = []
        for role in roles:  # a role that may not use the route is refused before its body is read
            headers, query = credentials(world, route.path, role)
            if surface(route.path) == "staff":
                headers["Content-Type"] = "application/x-www-form-urlencoded"
                body = b"note=" + b"a" * limit
            else:
                headers["Content-Type"] = "application/json"
                body = b'{"metadata": {"note": "' + b"a" * limit + b'"}}'
            response = await tls_client.post(
                route.path, params=query, headers=headers, data=body, allow_redirects=False
            )
            answer = Answer(route, "POST", True, response.status, response.headers, await response.read())
            assert not header_problems(answer), (answer.where(), header_problems(answer))
            statuses.append(response.status)
            if response.status == 413 and surface(route.path) != "staff":
                assert json.loads(answer.body)["code"] == "payload_too_large"
        assert 413 in statuses, f"POST {route.path} read a body over {limit} bytes: {statuses}"
        assert set(statuses) <= {413, 403}, f"POST {route.path}: {statuses}"
