"""The /metrics listener: Prometheus text on its own address, never on the public one.

The public listener faces agencies and shoppers; the metrics one is for the
monitoring system and by default binds a loopback address only (a settings
check refuses anything else unless ``metrics.allow_non_loopback`` says so).
It serves ``GET /metrics`` and nothing else, without access logs (a scrape
every few seconds would drown the request log).

One process serving alone exports its own registry.  Under ``--workers N``
the supervisor runs this listener and exports the sum of every worker's
files in the multiprocess directory it gave them
(:func:`multiprocess_registry`), so one scrape sees the whole service and
counters do not go back when a worker is replaced.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from service.errors import OperatorError
from service.settings import MetricsSettings


def multiprocess_registry(directory: Path) -> CollectorRegistry:
    """A registry that adds up what every worker wrote under ``directory``."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return registry


def metrics_url(settings: MetricsSettings) -> str:
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"http://{host}:{settings.port}/metrics"


class MetricsListener:
    """An aiohttp runner with one route, started and stopped beside the main one."""

    def __init__(self, settings: MetricsSettings, registry: Collector = REGISTRY) -> None:
        self.settings = settings
        app = web.Application()
        app.router.add_get("/metrics", make_aiohttp_handler(registry, disable_compression=True))
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)

    async def start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.settings.host, self.settings.port)
        try:
            await site.start()
        except OSError as exc:
            await self.runner.cleanup()
            reason = exc.strerror or str(exc)
            raise OperatorError(
                f"cannot listen for metrics on {self.settings.host} port {self.settings.port}: {reason} "
                "(metrics.host, metrics.port)"
            ) from None

    async def stop(self) -> None:
        await self.runner.cleanup()


def metrics_context(settings: MetricsSettings) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx for a process serving alone: the listener lives as long as the application."""

    async def metrics_ctx(_: web.Application) -> AsyncIterator[None]:
        listener = MetricsListener(settings)
        await listener.start()
        yield
        await listener.stop()

    return metrics_ctx
