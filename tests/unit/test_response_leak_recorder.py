"""The leak guard's response recorder really sees card data in what a test client reads (and nothing else)."""

from __future__ import annotations

from types import SimpleNamespace

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from tests.support.cards import CVC, VISA
from tests.support.leaks import ResponseRecorder


async def test_the_recorder_finds_cards_and_cvcs_in_bodies_a_client_reads() -> None:
    async def leaky(_: web.Request) -> web.Response:
        return web.json_response({"number": "4242 4242 4242 4242", "cvc": CVC})

    async def clean(_: web.Request) -> web.Response:
        return web.json_response({"card": {"last4": VISA[-4:], "brand": "visa"}, "created": 1795238035})

    app = web.Application()
    app.router.add_get("/leaky", leaky)
    app.router.add_get("/clean", clean)
    recorder = ResponseRecorder()
    async with TestClient(TestServer(app), trace_configs=[recorder.trace_config()]) as client:
        await (await client.get("/clean")).read()
        assert recorder.chunks >= 1
        assert recorder.findings == []
        await (await client.get("/leaky")).read()
    assert any("card 424242" in finding for finding in recorder.findings), recorder.findings
    assert any("cvc" in finding for finding in recorder.findings), recorder.findings
    assert all("GET /leaky" in finding for finding in recorder.findings)


async def test_a_card_split_across_two_chunks_is_found() -> None:
    recorder = ResponseRecorder()
    context = recorder._context()
    for chunk in (b'{"note": "x", "number": "4242 4242 ', b'4242 4242"}'):
        params = SimpleNamespace(method="GET", url=URL("http://test/split"), chunk=chunk)
        await recorder._on_chunk(None, context, params)  # type: ignore[arg-type]
    assert recorder.findings == ["response to GET /split: card 424242..."]
