"""Abuse at the connection level, against a real ``cardvault serve`` over TLS: each is refused or bounded.

Header floods, huge request lines, slow-loris clients trickling their headers
or their body, many idle connections, oversized and deeply nested JSON, and
invalid UTF-8 in bodies, headers and URLs.  Every refusal is a problem+json
answer with the usual headers that echoes nothing it was sent; slow and idle
clients are disconnected within the configured bounds while other clients
are served meanwhile; and the server's memory and open files come back down.

The serve process runs with short bounds (``server.request_read_timeout`` 2 s,
``server.keepalive_timeout`` 3 s) so the waits stay short; the defaults are
15 s and 75 s.  Clients are raw asyncio streams, so nothing between the test
and the server tidies up what they send.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from service.http.connection_limits import MAX_HEAD_BYTES, MAX_HEADERS
from tests.support.cards import CVC, VISA
from tests.support.serve import ServeFactory, ServeProcess, unverified_context

pytestmark = pytest.mark.slow

READ_TIMEOUT = 2.0
KEEPALIVE_TIMEOUT = 3.0
#: Scheduling slack on top of a bound (two shared cores, TLS, a busy event loop).
SLACK = 3.0
#: Lower bounds are loose: the server's clock starts at its end of the handshake, the test's later.
EARLIEST = 0.5


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory, leak_sources: Any) -> Iterator[ServeProcess]:
    directory = tmp_path_factory.mktemp("abuse-serve")
    env = {
        "CARDVAULT_SERVER__REQUEST_READ_TIMEOUT": str(READ_TIMEOUT),
        "CARDVAULT_SERVER__KEEPALIVE_TIMEOUT": str(KEEPALIVE_TIMEOUT),
        # A small TLS session cache: full after a round, so the memory test sees what the floods leave behind,
        # not the cache filling up (about 1.1 KiB a session, two a handshake, 20,480 by default).
        "CARDVAULT_TLS__SESSION_CACHE_SIZE": "64",
    }
    with ServeFactory(directory, leak_sources) as factory:
        process = factory(env=env).start()
        assert process.keys is not None
        yield process
        process.stop()


# --- raw HTTP/1.1 over TLS -------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def problem(self) -> dict[str, Any]:
        assert self.headers.get("content-type", "").startswith("application/problem+json"), self
        document: dict[str, Any] = json.loads(self.body)
        assert document["status"] == self.status
        return document


def client_context() -> ssl.SSLContext:
    return unverified_context()


async def connect(serve: ServeProcess) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(serve.host, serve.port, ssl=client_context(), server_hostname="localhost")


async def read_reply(reader: asyncio.StreamReader, within: float = 5.0) -> Reply:
    async with asyncio.timeout(within):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Reply(status, headers, body)


async def exchange(serve: ServeProcess, raw: bytes) -> tuple[Reply, bool]:
    """Send ``raw`` on a new connection; the reply, and whether the server then closed the connection."""
    reader, writer = await connect(serve)
    try:
        writer.write(raw)
        await writer.drain()
        reply = await read_reply(reader)
        try:
            async with asyncio.timeout(READ_TIMEOUT + SLACK):
                closed = await reader.read(1) == b""
        except TimeoutError:
            closed = False
        return reply, closed
    finally:
        writer.close()


async def closed_after(reader: asyncio.StreamReader, limit: float) -> float:
    """Seconds until the server closes this connection (reading and dropping whatever comes)."""
    started = time.monotonic()
    async with asyncio.timeout(limit):
        while await reader.read(65536):
            pass
    return time.monotonic() - started


async def healthz_seconds(serve: ServeProcess) -> float:
    """One ordinary request on a new connection: it must succeed; how long it took."""
    started = time.monotonic()
    reply, _ = await exchange(serve, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert reply.status == 200, reply
    return time.monotonic() - started


def request(method: str, path: str, key: str | None = None, body: bytes = b"", **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", "Connection: close"]
    if key:
        lines.append(f"Authorization: Bearer {key}")
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def secret(serve: ServeProcess) -> str:
    assert serve.keys is not None
    return serve.keys.secret


def assert_clean_refusal(reply: Reply, *must_not_contain: bytes) -> dict[str, Any]:
    """A problem document with the headers every answer carries, echoing none of ``must_not_contain``."""
    problem = reply.problem()
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert reply.headers["strict-transport-security"].startswith("max-age=")
    assert reply.headers["cache-control"] == "no-store"
    assert reply.headers["server"] == "cardvault"
    assert reply.headers["x-request-id"].startswith("req_")
    raw = reply.body + json.dumps(reply.headers).encode()
    for needle in must_not_contain:
        assert needle not in raw, needle
    return problem


def proc_status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def open_files(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def server_pid(serve: ServeProcess) -> int:
    assert serve.process is not None
    return serve.process.pid


# --- header floods and huge lines ------------------------------------------------------------------

FLOODS = {
    "too many headers": request("GET", "/healthz", **{f"X_Flood_{i}": "v" for i in range(MAX_HEADERS + 10)}),
    "one huge header": request("GET", "/healthz", X_Huge=VISA + "q" * 20_000),
    "huge request line": request("GET", f"/v1/tokens/{VISA}{'q' * 20_000}"),
    "huge header name": request("GET", "/healthz", **{"X" + "n" * 20_000: "v"}),
    "head over the total": request("GET", "/healthz", **{f"X_Part_{i}": VISA + "w" * 7000 for i in range(6)}),
}


@pytest.mark.parametrize("name", list(FLOODS))
async def test_header_floods_get_a_clean_4xx_problem_and_the_connection_closes(serve: ServeProcess, name: str) -> None:
    reply, closed = await exchange(serve, FLOODS[name])
    assert reply.status in (400, 431), reply
    problem = assert_clean_refusal(reply, VISA.encode(), b"qqqq", b"wwww", b"X-Flood", b"nnnn")
    assert problem["code"] in ("malformed_request", "headers_too_large")
    assert closed, "the connection stayed open after a refused head"
    await healthz_seconds(serve)


async def test_a_head_over_the_total_is_refused_before_it_is_complete(serve: ServeProcess) -> None:
    """Headers each within aiohttp's line limit but over MAX_HEAD_BYTES in all: 431 while still arriving."""
    reader, writer = await connect(serve)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        for i in range(MAX_HEAD_BYTES // 4000 + 2):
            writer.write(f"X-Part-{i}: {'k' * 4000}\r\n".encode())
        await writer.drain()  # the head never ends: no blank line
        reply = await read_reply(reader)
        assert reply.status == 431
        assert assert_clean_refusal(reply, b"kkkk")["code"] == "headers_too_large"
        await closed_after(reader, SLACK)
    finally:
        writer.close()


# --- invalid UTF-8 ----------------------------------------------------------------------------------


async def test_invalid_utf8_in_body_headers_and_urls_gets_clean_problems(serve: ServeProcess) -> None:
    key = secret(serve)
    bad_body = b'{"card": {"number": "\xff\xfe", "cvc": "' + CVC.encode() + b'"}}'
    reply, _ = await exchange(serve, request("POST", "/v1/tokens", key, bad_body, Content_Type="application/json"))
    assert reply.status == 400
    assert assert_clean_refusal(reply, b"\xff", CVC.encode())["code"] == "malformed_request"

    reply, _ = await exchange(serve, b"GET /v1/tokens/\xff\xfe HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert reply.status == 400
    assert_clean_refusal(reply, b"\xff")

    for path in ("/v1/tokens/%ff%fe", "/v1/tokens?fingerprint=%ff%fe", "/nowhere/%c3%28"):
        reply, _ = await exchange(serve, request("GET", path, key))
        assert 400 <= reply.status < 500, (path, reply)
        assert_clean_refusal(reply, b"\xff", b"%ff")

    reply, _ = await exchange(
        serve,
        b"GET /v1/tokens/tok_x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        b"Authorization: Bearer \xff\xfe\r\n\r\n",
    )
    assert reply.status == 401
    assert_clean_refusal(reply, b"\xff")
    await healthz_seconds(serve)


# --- oversized and deeply nested JSON ----------------------------------------------------------------


async def test_a_declared_oversized_body_is_refused_at_once_without_waiting_for_it(serve: ServeProcess) -> None:
    reader, writer = await connect(serve)
    try:
        started = time.monotonic()
        head = request("POST", "/v1/tokens", secret(serve), Content_Type="application/json")
        head = head.replace(b"Content-Length: 0", b"Content-Length: 50000000") + b"{"
        writer.write(head)
        await writer.drain()
        reply = await read_reply(reader, within=READ_TIMEOUT)
        assert reply.status == 413
        assert assert_clean_refusal(reply)["code"] == "payload_too_large"
        assert time.monotonic() - started < READ_TIMEOUT, "the 413 waited for a body that never came"
    finally:
        writer.close()


async def test_an_undeclared_oversized_body_is_refused_once_it_passes_the_limit(serve: ServeProcess) -> None:
    chunk = b"q" * 0x4000
    body = b"".join(b"4000\r\n" + chunk + b"\r\n" for _ in range(4)) + b"0\r\n\r\n"
    raw = request("GET", "/v1/tokens", secret(serve), Content_Type="application/json", Transfer_Encoding="chunked")
    raw = raw.replace(b"GET", b"POST", 1)  # a POST without Content-Length: the body's size is not declared
    reply, _ = await exchange(serve, raw + body)
    assert reply.status == 413
    assert assert_clean_refusal(reply, b"qqqq")["code"] == "payload_too_large"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"[" * 100_000, 413),  # over server.max_body_bytes before any parsing
        (b"[" * 30_000, 400),  # within the size limit: the parser's recursion is caught
        (b'{"a":' * 5_000 + b"1" + b"}" * 5_000, 400),
        (b'{"metadata": ' + b"[" * 9 + b"]" * 9 + b"}", 400),  # one level over the service's nesting limit
    ],
    ids=["100k-brackets", "30k-brackets", "5k-objects", "9-levels"],
)
async def test_deeply_nested_json_is_refused_quickly(serve: ServeProcess, body: bytes, status: int) -> None:
    started = time.monotonic()
    raw = request("POST", "/v1/tokens", secret(serve), body, Content_Type="application/json")
    reply, _ = await exchange(serve, raw)
    assert reply.status == status, reply
    problem = assert_clean_refusal(reply)
    assert problem["code"] == ("payload_too_large" if status == 413 else "malformed_request")
    assert time.monotonic() - started < 2.0
    assert "RecursionError" not in serve.stderr
    assert "unhandled error" not in serve.stderr


# --- slow clients and idle connections ---------------------------------------------------------------


async def trickle(serve: ServeProcess, start: bytes, every: float) -> float:
    """Send ``start`` then one byte every ``every`` seconds until the server hangs up; seconds until it did."""
    reader, writer = await connect(serve)
    began = time.monotonic()
    try:
        writer.write(start)
        await writer.drain()
        while not reader.at_eof():
            try:
                async with asyncio.timeout(every):
                    if await reader.read(65536) == b"":
                        break
            except TimeoutError:
                pass
            if time.monotonic() - began > READ_TIMEOUT + 3 * SLACK:
                raise AssertionError("the slow client was never disconnected")
            try:
                writer.write(b"x")
                await writer.drain()
            except (ConnectionError, ssl.SSLError):
                break
        return time.monotonic() - began
    finally:
        writer.close()


async def keep_serving(serve: ServeProcess, until: asyncio.Event) -> list[float]:
    """Ordinary requests, one after another, while the abuse goes on."""
    timings = []
    while not until.is_set():
        timings.append(await healthz_seconds(serve))
        await asyncio.sleep(0.05)
    return timings


async def test_slow_loris_clients_are_cut_off_while_others_are_served(serve: ServeProcess) -> None:
    done = asyncio.Event()
    others = asyncio.create_task(keep_serving(serve, done))
    head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: "
    body_head = request("POST", "/v1/tokens", secret(serve), Content_Type="application/json")
    body_head = body_head.replace(b"Content-Length: 0", b"Content-Length: 2000") + b'{"card": '
    try:
        slow = [trickle(serve, head, 0.25) for _ in range(30)]
        slow += [trickle(serve, body_head, 0.25) for _ in range(10)]
        lifetimes = await asyncio.gather(*slow)
    finally:
        done.set()
    timings = await others
    assert all(READ_TIMEOUT * EARLIEST <= seconds <= READ_TIMEOUT + SLACK for seconds in lifetimes), lifetimes
    assert len(timings) >= 5, timings
    # Nobody waited for the slow ones: each ordinary request took far less than they were held.
    assert max(timings) < SLACK, timings
    assert sorted(timings)[len(timings) // 2] < READ_TIMEOUT / 2, timings
    logged = [r for r in serve.log_records() if r.get("event", "").startswith("request not received in time")]
    assert {r["stage"] for r in logged} >= {"headers", "body"}


async def test_a_keep_alive_connection_whose_body_came_apart_is_not_cut_off(serve: ServeProcess) -> None:
    """Head and body in separate writes, then a pause longer than the read deadline: still served."""
    reader, writer = await connect(serve)
    try:
        for _ in range(2):
            body = b'{"card": {"number": "", "exp_month": 12, "exp_year": 2031}}'
            head = request("POST", "/v1/tokens", secret(serve), body, Content_Type="application/json")
            head = head.replace(b"Connection: close\r\n", b"")
            writer.write(head[: -len(body)])
            await writer.drain()
            await asyncio.sleep(0.2)
            writer.write(body)
            await writer.drain()
            assert (await read_reply(reader)).status == 422
            await asyncio.sleep(READ_TIMEOUT + 0.5)  # idle, within the keep-alive timeout
    finally:
        writer.close()


async def silent_connection(serve: ServeProcess) -> float:
    """Connect and send nothing: seconds until the server hangs up."""
    reader, writer = await connect(serve)
    started = time.monotonic()
    try:
        await closed_after(reader, READ_TIMEOUT + 3 * SLACK)
        return time.monotonic() - started
    finally:
        writer.close()


async def idle_after_one_request(serve: ServeProcess) -> float:
    """One request on a keep-alive connection, then nothing: seconds from the answer until the server hangs up."""
    reader, writer = await connect(serve)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert (await read_reply(reader)).status == 200
        answered = time.monotonic()
        await closed_after(reader, KEEPALIVE_TIMEOUT + 3 * SLACK)
        return time.monotonic() - answered
    finally:
        writer.close()


async def test_idle_connections_are_closed_and_files_come_back(serve: ServeProcess) -> None:
    pid = server_pid(serve)
    await healthz_seconds(serve)
    baseline = open_files(pid)
    idle = [asyncio.create_task(silent_connection(serve)) for _ in range(60)]
    idle += [asyncio.create_task(idle_after_one_request(serve)) for _ in range(60)]
    await asyncio.sleep(1.0)
    assert open_files(pid) >= baseline + 60, "the idle connections did not get through"
    assert await healthz_seconds(serve) < SLACK  # still serving with the idle connections open
    lifetimes = await asyncio.gather(*idle)
    assert max(lifetimes[:60]) <= READ_TIMEOUT + SLACK, lifetimes[:60]
    assert min(lifetimes[:60]) >= READ_TIMEOUT * EARLIEST, lifetimes[:60]
    assert max(lifetimes[60:]) <= KEEPALIVE_TIMEOUT + SLACK, lifetimes[60:]
    assert min(lifetimes[60:]) >= KEEPALIVE_TIMEOUT * EARLIEST, lifetimes[60:]
    await asyncio.sleep(0.5)
    assert open_files(pid) <= baseline + 5


async def test_memory_stays_bounded_through_a_flood(serve: ServeProcess) -> None:
    """Rounds of floods and slow heads, a hundred at once: memory stays within generous bounds.

    The first two rounds warm the allocator up (TLS and parser buffers of a hundred connections at
    once, 20-35 MiB here; how much lands in the first depends on how much its connections overlap,
    so on what else the machine is doing).  Later rounds add less and less: about 1 MiB a round at
    first, a quarter of that after twenty rounds, all of it native memory (uvloop's TLS buffers and
    the C allocator's heap; the same rounds in one process under tracemalloc hold Python's own
    memory flat, and the asyncio loop's RSS flat after three rounds).  The TLS session cache, which
    would add about 2 MiB a round until full, is kept small here (the fixture).  A round sends about
    6 MiB of heads, so keeping them, or the connections, would add 8 MiB or more a round: 48 over
    the six rounds after the warm-up, against the 32 allowed (8-15 measured).
    """
    pid = server_pid(serve)
    await healthz_seconds(serve)
    near_limit = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n" + b"".join(
        f"X-Fill-{i}: {'d' * 7000}\r\n".encode() for i in range(4)
    )
    resident = [proc_status(pid, "VmRSS")]
    for _ in range(8):
        floods = [exchange(serve, raw) for raw in FLOODS.values() for _ in range(20)]
        slow_heads = [trickle(serve, near_limit, 0.5) for _ in range(100)]
        await asyncio.gather(*floods, *slow_heads)
        resident.append(proc_status(pid, "VmRSS"))
    assert await healthz_seconds(serve) < SLACK
    print(f"server RSS (KiB) at start and after each round: {resident}, peak {proc_status(pid, 'VmHWM')}")
    assert resident[-1] - resident[2] < 32 * 1024, resident
    assert max(resident) - resident[0] < 128 * 1024, resident
