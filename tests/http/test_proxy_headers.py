"""Forwarding headers in-process: believed only from a trusted proxy, only its own entry, refused when broken.

The aiohttp test client connects from 127.0.0.1, so "a trusted proxy" here is
``proxy.trusted: [127.0.0.1]`` and "anyone else" is the default (nobody trusted).
What handlers see is read by a probe route and a probe middleware added after
the app's own; what the product records is read from the access log line and the
staff audit trail.  The real nginx in front of a real ``cardvault serve`` is in
``tests/proxy/``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from service.app import create_app
from service.http import proxy
from service.http.proxy import ThrottledWarning
from service.logs import AccessLogger
from tests.conftest import FakeClock, make_settings
from tests.support.cards import VISA
from tests.support.redis_server import RedisServer
from tests.support.staff_pages import StaffBrowser, audit_records

Client = TestClient[Any, Any]
Factory = Callable[..., Awaitable[Client]]
CLIENT_ADDRESS = "203.0.113.7"
INVENTED_ADDRESS = "198.51.100.66"
SEEN_BY_MIDDLEWARE = web.AppKey("seen_by_middleware", list)


async def probe(request: web.Request) -> web.Response:
    return web.json_response(
        {"remote": request.remote, "scheme": request.scheme, "secure": request.secure, "host": request.host}
    )


@web.middleware
async def later_middleware(request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
    request.app[SEEN_BY_MIDDLEWARE].append((request.remote, request.scheme))
    response: web.StreamResponse = await handler(request)
    return response


@pytest.fixture
def make_client(
    aiohttp_client: Any, redis_server: RedisServer, tmp_path: Path, master_keys: Any, clock: FakeClock
) -> Factory:
    """An app with the given ``proxy`` settings, a probe route and a probe middleware after the app's own."""

    async def make(**proxy_settings: Any) -> Client:
        settings = make_settings(redis_server.url, tmp_path / "var", proxy=proxy_settings)
        app = create_app(settings, master_keys, redis_url=redis_server.url, clock=clock, tls=False)
        app[SEEN_BY_MIDDLEWARE] = []
        app.middlewares.append(later_middleware)
        app.router.add_get("/_probe", probe)
        server = TestServer(app)
        await server.start_server(access_log_class=AccessLogger)  # as `cardvault serve` logs access
        client: Client = await aiohttp_client(server)
        return client

    return make


async def seen(client: Client, headers: dict[str, str]) -> dict[str, Any]:
    answer = await client.get("/_probe", headers=headers)
    assert answer.status == 200, await answer.text()
    body: dict[str, Any] = await answer.json()
    return body


def events(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, Any]]:
    return [r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == event]


def access_lines(caplog: pytest.LogCaptureFixture, path: str) -> list[dict[str, Any]]:
    return [line for line in events(caplog, "request") if line.get("path") == path]


IGNORED = "forwarding headers ignored: peer is not a trusted proxy"
DROPPED = "client-supplied forwarding entries dropped"
SPOOFED = {
    "X-Forwarded-For": CLIENT_ADDRESS,
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "evil.example",
    "Forwarded": f'for="{CLIENT_ADDRESS}";proto=https;host=evil.example',
    "X-Real-IP": CLIENT_ADDRESS,
}


class TestUntrustedPeer:
    async def test_spoofed_headers_change_nothing(self, make_client: Factory) -> None:
        """With nobody trusted (the default), every forwarding header is ignored: the peer's address stands."""
        client = await make_client()
        body = await seen(client, SPOOFED)
        assert body == {"remote": "127.0.0.1", "scheme": "http", "secure": False, "host": body["host"]}
        assert "evil" not in body["host"]
        assert client.app[SEEN_BY_MIDDLEWARE] == [("127.0.0.1", "http")]

    async def test_a_peer_outside_the_trusted_networks_is_ignored_too(self, make_client: Factory) -> None:
        """Trusting 10.0.0.0/8 does not trust 127.0.0.1."""
        client = await make_client(trusted=["10.0.0.0/8", "::1"])
        assert (await seen(client, SPOOFED))["remote"] == "127.0.0.1"

    async def test_the_attempt_is_logged_with_header_names_only(
        self, make_client: Factory, caplog: pytest.LogCaptureFixture
    ) -> None:
        """One warning names the peer and the headers; no header value reaches the log."""
        caplog.set_level(logging.INFO)
        client = await make_client()
        await seen(client, {**SPOOFED, "X-Forwarded-For": f"{CLIENT_ADDRESS}, {VISA}"})
        [warning] = events(caplog, IGNORED)
        assert warning["peer"] == "127.0.0.1"
        assert warning["path"] == "/_probe"
        assert sorted(warning["headers"]) == sorted(SPOOFED)
        text = repr([r.msg for r in caplog.records])
        assert CLIENT_ADDRESS not in text
        assert "evil.example" not in text
        assert VISA not in text

    async def test_a_flood_is_one_line_per_interval(
        self, make_client: Factory, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Fifty spoofing requests in a row log one warning, not fifty."""
        caplog.set_level(logging.INFO)
        client = await make_client()
        for _ in range(50):
            await seen(client, {"X-Forwarded-For": CLIENT_ADDRESS})
        assert len(events(caplog, IGNORED)) == 1

    async def test_no_forwarding_headers_no_warning(
        self, make_client: Factory, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An ordinary direct request is not an attempt."""
        caplog.set_level(logging.INFO)
        client = await make_client()
        await seen(client, {})
        assert events(caplog, IGNORED) == []

    async def test_a_claimed_https_earns_no_hsts(self, make_client: Factory) -> None:
        """A plain-HTTP answer to an untrusted peer claiming https carries no HSTS."""
        client = await make_client()
        answer = await client.get("/_probe", headers={"X-Forwarded-Proto": "https"})
        assert "Strict-Transport-Security" not in answer.headers

    async def test_the_access_log_shows_the_peer(self, make_client: Factory, caplog: pytest.LogCaptureFixture) -> None:
        """The access log line carries the peer's address and scheme, not the claimed ones."""
        caplog.set_level(logging.INFO)
        client = await make_client()
        await seen(client, SPOOFED)
        [line] = access_lines(caplog, "/_probe")
        assert (line["remote"], line["scheme"]) == ("127.0.0.1", "http")


class TestTrustedProxy:
    async def test_its_entry_sets_address_and_scheme_for_handlers_and_later_middleware(
        self, make_client: Factory
    ) -> None:
        """From a trusted proxy, X-Forwarded-For and -Proto become request.remote, .scheme and .secure."""
        client = await make_client(trusted=["127.0.0.0/8"])
        body = await seen(client, {"X-Forwarded-For": CLIENT_ADDRESS, "X-Forwarded-Proto": "https"})
        assert (body["remote"], body["scheme"], body["secure"]) == (CLIENT_ADDRESS, "https", True)
        assert client.app[SEEN_BY_MIDDLEWARE] == [(CLIENT_ADDRESS, "https")]

    async def test_hsts_when_the_client_reached_the_proxy_over_tls(self, make_client: Factory) -> None:
        """Behind a proxy that terminated the client's TLS (plain HTTP to us), answers still carry HSTS."""
        client = await make_client(trusted=["127.0.0.1"])
        over_tls = await client.get(
            "/_probe", headers={"X-Forwarded-For": CLIENT_ADDRESS, "X-Forwarded-Proto": "https"}
        )
        assert over_tls.headers["Strict-Transport-Security"] == "max-age=63072000"
        over_http = await client.get(
            "/_probe", headers={"X-Forwarded-For": CLIENT_ADDRESS, "X-Forwarded-Proto": "http"}
        )
        assert "Strict-Transport-Security" not in over_http.headers

    async def test_the_access_log_shows_the_client(
        self, make_client: Factory, caplog: pytest.LogCaptureFixture
    ) -> None:
        """aiohttp hands the access logger the original request; it still logs the client."""
        caplog.set_level(logging.INFO)
        client = await make_client(trusted=["127.0.0.1"])
        await seen(client, {"X-Forwarded-For": CLIENT_ADDRESS, "X-Forwarded-Proto": "https"})
        [line] = access_lines(caplog, "/_probe")
        assert (line["remote"], line["scheme"]) == (CLIENT_ADDRESS, "https")

    async def test_a_client_supplied_prefix_is_dropped_and_logged(
        self, make_client: Factory, caplog: pytest.LogCaptureFixture
    ) -> None:
        """nginx's $proxy_add_x_forwarded_for appends to what the client sent: only the last entry counts."""
        caplog.set_level(logging.INFO)
        client = await make_client(trusted=["127.0.0.1"])
        chain = f"{INVENTED_ADDRESS}, 10.0.0.1,{CLIENT_ADDRESS}"
        body = await seen(client, {"X-Forwarded-For": chain, "X-Forwarded-Proto": "http, https"})
        assert (body["remote"], body["scheme"]) == (CLIENT_ADDRESS, "https")
        [warning] = events(caplog, DROPPED)
        assert warning["dropped"] == 2
        assert INVENTED_ADDRESS not in repr([r.msg for r in caplog.records])

    async def test_garbage_in_the_client_supplied_prefix_is_dropped_not_refused(self, make_client: Factory) -> None:
        """A client cannot make the proxied request fail by sending an unparsable X-Forwarded-For."""
        client = await make_client(trusted=["127.0.0.1"])
        body = await seen(client, {"X-Forwarded-For": f"not-an-address, {CLIENT_ADDRESS}"})
        assert body["remote"] == CLIENT_ADDRESS

    async def test_repeated_header_lines_read_as_one_list(self, make_client: Factory) -> None:
        """Two X-Forwarded-For lines are one list (RFC 9110): the last line's last entry is the proxy's."""
        client = await make_client(trusted=["127.0.0.1"])
        answer = await client.get(
            "/_probe", headers=[("X-Forwarded-For", INVENTED_ADDRESS), ("X-Forwarded-For", CLIENT_ADDRESS)]
        )
        assert (await answer.json())["remote"] == CLIENT_ADDRESS

    async def test_without_forwarding_headers_the_proxy_is_the_client(self, make_client: Factory) -> None:
        """A health check from the proxy itself, or TLS passed through: its own address stands."""
        client = await make_client(trusted=["127.0.0.1"])
        assert (await seen(client, {}))["remote"] == "127.0.0.1"

    async def test_host_is_never_taken_from_forwarding_headers(self, make_client: Factory) -> None:
        """X-Forwarded-Host is dropped: the Host header stands."""
        client = await make_client(trusted=["127.0.0.1"])
        body = await seen(client, {"X-Forwarded-For": CLIENT_ADDRESS, "X-Forwarded-Host": "evil.example"})
        assert "evil" not in body["host"]

    async def test_only_the_configured_family_is_read(self, make_client: Factory) -> None:
        """With x-forwarded, a Forwarded header the client slipped through the proxy is ignored."""
        client = await make_client(trusted=["127.0.0.1"])
        body = await seen(client, {"Forwarded": f"for={INVENTED_ADDRESS};proto=https"})
        assert (body["remote"], body["scheme"]) == ("127.0.0.1", "http")

    @pytest.mark.parametrize(
        ("value", "address"),
        [
            (f"for={CLIENT_ADDRESS};proto=https", CLIENT_ADDRESS),
            (f'for="{CLIENT_ADDRESS}:4711";proto=https', CLIENT_ADDRESS),
            ('for="[2001:db8::7]:4711";proto=https', "2001:db8::7"),
            (f'for={INVENTED_ADDRESS};proto=http, for="{CLIENT_ADDRESS}";proto=https', CLIENT_ADDRESS),
        ],
    )
    async def test_forwarded_family(self, make_client: Factory, value: str, address: str) -> None:
        """With headers: forwarded, the last RFC 7239 element sets address and scheme; X-Forwarded-* are ignored."""
        client = await make_client(trusted=["127.0.0.1"], headers="forwarded")
        body = await seen(client, {"Forwarded": value, "X-Forwarded-For": INVENTED_ADDRESS})
        assert (body["remote"], body["scheme"]) == (address, "https")

    async def test_forwarded_family_ignores_x_forwarded_for(self, make_client: Factory) -> None:
        """With headers: forwarded and no Forwarded header, X-Forwarded-For changes nothing."""
        client = await make_client(trusted=["127.0.0.1"], headers="forwarded")
        assert (await seen(client, {"X-Forwarded-For": INVENTED_ADDRESS}))["remote"] == "127.0.0.1"

    async def test_the_staff_audit_trail_records_the_client(self, make_client: Factory) -> None:
        """A failed staff sign-in behind the proxy is audited with the client's address (PCI DSS 10.2)."""
        client = await make_client(trusted=["127.0.0.1"])
        headers = {"X-Forwarded-For": f"{INVENTED_ADDRESS}, {CLIENT_ADDRESS}", "X-Forwarded-Proto": "https"}
        browser = StaffBrowser(client)
        form = await client.get("/staff/login", headers=headers, allow_redirects=False)
        page = await browser._page(form)
        username = "nobody-behind-the-proxy"
        answer = await client.post(
            "/staff/login",
            data={"csrf": page.csrf, "username": username, "password": "Wrong-password-123"},
            headers={**headers, **browser._headers()},
            allow_redirects=False,
        )
        assert answer.status == 401
        records = [r for r in await audit_records(client, "") if "unknown username" in r.detail]
        assert records, "no audit record for the failed sign-in"
        assert records[0].source == CLIENT_ADDRESS


class TestBrokenProxy:
    @pytest.mark.parametrize(
        ("headers", "settings"),
        [
            ({"X-Forwarded-For": "not-an-address"}, {}),
            ({"X-Forwarded-For": f"{CLIENT_ADDRESS}:8080"}, {}),
            ({"X-Forwarded-For": CLIENT_ADDRESS, "X-Forwarded-Proto": "javascript"}, {}),
            ({"X-Forwarded-Proto": "https"}, {}),
            ({"Forwarded": "proto=https"}, {"headers": "forwarded"}),
            ({"Forwarded": "for=unknown;proto=https"}, {"headers": "forwarded"}),
            ({"Forwarded": 'for="_hidden"'}, {"headers": "forwarded"}),
            ({"Forwarded": f"for={CLIENT_ADDRESS};proto=gopher"}, {"headers": "forwarded"}),
        ],
    )
    async def test_malformed_entry_from_the_trusted_proxy_is_a_400_problem(
        self, make_client: Factory, headers: dict[str, str], settings: dict[str, str]
    ) -> None:
        """What the trusted proxy itself wrote must be one address and http/https: else 400, and serving goes on."""
        client = await make_client(trusted=["127.0.0.1"], **settings)
        answer = await client.get("/_probe", headers=headers)
        assert answer.status == 400
        assert answer.content_type == "application/problem+json"
        problem = await answer.json()
        assert problem["code"] == "malformed_request"
        assert "forwarding headers" in problem["detail"]
        assert problem["request_id"] == answer.headers["X-Request-Id"]
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert client.app[SEEN_BY_MIDDLEWARE] == []
        assert (await client.get("/healthz")).status == 200

    async def test_a_value_that_looks_like_a_card_is_never_echoed(self, make_client: Factory) -> None:
        """The 400 names the header, never its value."""
        client = await make_client(trusted=["127.0.0.1"])
        answer = await client.get("/_probe", headers={"X-Forwarded-For": VISA})
        assert answer.status == 400
        assert VISA not in await answer.text()


class TestThrottledWarning:
    def test_counts_what_it_suppressed(self, caplog: pytest.LogCaptureFixture) -> None:
        """After the interval the next line says how many were left out."""
        import time

        caplog.set_level(logging.INFO)
        warn = ThrottledWarning("probe event", interval=0.2)
        for _ in range(3):
            warn(n=1)
        time.sleep(0.25)
        warn(n=2)
        lines = events(caplog, "probe event")
        assert [(line["n"], line["suppressed"]) for line in lines] == [(1, 0), (2, 2)]


class TestPeerAddress:
    def test_ipv4_mapped_trusted_networks(self) -> None:
        """A listener on :: sees ::ffff:a.b.c.d; the trusted IPv4 network covers it in both forms."""
        import ipaddress

        networks = proxy._with_mapped_forms([ipaddress.IPv4Network("10.1.0.0/16")])
        assert ipaddress.ip_address("::ffff:10.1.2.3") in networks[1]
        assert ipaddress.ip_address("::ffff:10.2.0.1") not in networks[1]
