"""A serving process settles its garbage collector once the application has started."""

from __future__ import annotations

import gc

from aiohttp import web
from aiohttp.test_utils import TestServer

from service.cli.serve import GC_THRESHOLDS, settle_garbage_collector


async def test_startup_freezes_what_exists_and_raises_the_thresholds() -> None:
    """After start-up (and after every other start-up step) the collector skips start-up objects and runs less often."""
    saved = gc.get_threshold()
    order: list[str] = []
    app = web.Application()

    async def other_step(_: web.Application) -> None:
        order.append(f"other step, threshold {gc.get_threshold()[0]}")

    app.on_startup.append(other_step)
    settle_garbage_collector(app)
    server = TestServer(app)
    try:
        await server.start_server()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
        assert order == [f"other step, threshold {saved[0]}"]
    finally:
        await server.close()
        gc.unfreeze()
        gc.set_threshold(*saved)
