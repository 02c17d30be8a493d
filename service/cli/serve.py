"""`cardvault serve`: run the vault over HTTPS, on the embedded Redis unless told otherwise.

First start on an empty data directory (development mode): generate a
master key and a self-signed certificate (files mode 0600), start the private
Redis, create a ``demo`` agency, and print the URL and the demo keys.  Later
starts reuse all of it.  Production mode generates nothing and refuses what
only development tolerates.

Everything that is generated or checked once (key, certificate, the embedded
Redis) happens here, in the one process that starts first.  Then either this
process serves (``server.workers: 1``) or it becomes the supervisor of N
worker processes (``service.supervisor``).  Either way SIGTERM and SIGINT
stop it gracefully: see ``service.cli.graceful``.

A serving process tunes its garbage collector once it has started
(:func:`settle_garbage_collector`): what start-up made (modules, settings,
clients) is frozen out of the collector's scans, and the youngest generation
is collected every ``GC_THRESHOLDS[0]`` allocations instead of 700, so a busy
process stops re-scanning long-lived objects every few requests (fewer
pauses, a lower p99).
"""

from __future__ import annotations

import datetime as dt
import errno
import gc
import json
import shutil
import socket
import ssl
import tempfile
from dataclasses import replace
from pathlib import Path

import click
import structlog
from aiohttp import web

from service.adapters.embedded_redis import EmbeddedRedis
from service.adapters.keyring import MasterKeys, write_secret_file
from service.app import create_app
from service.cli.graceful import run_server
from service.cli.options import settings_from, settings_options
from service.cli.reuseport import bind_slots
from service.cli.runtime import master_keys_for
from service.errors import OperatorError
from service.http.metrics_listener import metrics_context
from service.http.state import SERVICES
from service.logs import configure_logging
from service.preflight import Findings, check_certificate_file
from service.settings import Settings
from service.supervisor import Supervisor
from service.tls.certs import ensure_development_certificate
from service.tls.mozilla import server_context
from service.worker_process import WorkerSpec

log = structlog.get_logger("cardvault.serve")
DEMO_SLUG = "demo"
DEMO_ORIGINS = ("http://localhost:8000", "http://127.0.0.1:8000")
DEMO_KEYS_FILE = "demo-agency.json"
#: (youngest, middle, oldest) generation thresholds for a serving process; Python's default is (700, 10, 10).
GC_THRESHOLDS = (20_000, 20, 20)


def tls_context(settings: Settings, findings: Findings) -> ssl.SSLContext | None:
    if settings.server.plain_http:
        log.warning("serving plain HTTP: only for running behind the firewall proxy that terminates TLS")
        return None
    cert, key = settings.tls.cert_file, settings.tls.key_file
    if cert is None or key is None:
        if settings.production:
            findings.add(
                "tls.cert_file: production mode needs a real certificate (tls.cert_file, tls.key_file)",
                production=True,
            )
            findings.raise_if_fatal()
        cert, key, _ = ensure_development_certificate(settings.data_dir)
    check_certificate_file(settings, cert, findings, now=dt.datetime.now(dt.UTC))
    findings.raise_if_fatal()
    # tls.client_ca_file: mutual TLS with the firewall proxy; no client certificate, no handshake.
    return server_context(
        cert, key, client_ca_file=settings.tls.client_ca_file, session_cache_size=settings.tls.session_cache_size
    )


def _is_listen_error(exc: OSError) -> bool:
    """Binding the listener failed: a taken port, an address not on this machine, a privileged port."""
    if isinstance(exc, socket.gaierror):
        return True
    listen_errnos = (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES)
    return exc.filename is None and (exc.errno in listen_errnos or "bind" in str(exc))


def listen_url(settings: Settings, *, tls: bool) -> str:
    """The URL a client uses: an IPv6 address goes in brackets."""
    host = settings.server.host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{settings.server.port}"


class Banner:
    """What serve prints on stdout, once the listener is bound: the URL and the demo agency's keys.

    The demo agency is created in ``on_startup`` (it needs the store); the
    banner is printed by ``web.run_app``'s ``print`` hook, which runs only after
    every site has started, so nothing claims to listen before it does.
    """

    def __init__(self, settings: Settings, url: str, *, workers: int = 1) -> None:
        self.settings = settings
        self.url = url
        self.workers = workers
        self.keys_file = settings.data_dir / DEMO_KEYS_FILE

    async def create_demo_agency(self, app: web.Application) -> None:
        svc = app[SERVICES]
        if self.settings.production or svc.agencies is None or self.keys_file.exists():
            return
        if await svc.agencies.list():
            return
        agency, issued = await svc.agencies.create(DEMO_SLUG, DEMO_ORIGINS)
        write_secret_file(
            self.keys_file,
            json.dumps(
                {"agency": agency.slug, "publishable_key": issued.publishable_key, "secret_key": issued.secret_key}
            ),
        )

    def print(self, *_: object, **__: object) -> None:
        workers = f" with {self.workers} workers" if self.workers > 1 else ""
        click.echo(f"cardvault {self.settings.mode} listening on {self.url}{workers}")
        if not self.settings.production and self.keys_file.exists():
            demo = json.loads(self.keys_file.read_text(encoding="utf-8"))
            click.echo(f"demo agency {demo['agency']!r} (keys kept in {self.keys_file}):")
            click.echo(f"  publishable key: {demo['publishable_key']}")
            click.echo(f"  secret key:      {demo['secret_key']}")


async def _freeze_startup_objects(_: web.Application) -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def settle_garbage_collector(app: web.Application) -> None:
    """Once ``app`` has started (its resources made, after every other start-up step), freeze what exists and
    collect the youngest generation less often."""
    app.on_startup.append(_freeze_startup_objects)


def _serve_alone(
    settings: Settings, master: MasterKeys, context: ssl.SSLContext | None, redis_url: str, url: str
) -> None:
    app = create_app(settings, master, redis_url=redis_url, tls=context is not None)
    if settings.metrics.enabled:
        app.cleanup_ctx.append(metrics_context(settings.metrics))
    banner = Banner(settings, url)
    app.on_startup.append(banner.create_demo_agency)
    settle_garbage_collector(app)
    try:
        run_server(app, settings, context, on_listening=banner.print)
    except OSError as exc:
        if not _is_listen_error(exc):
            raise
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        raise OperatorError(
            f"cannot listen on {settings.server.host} port {settings.server.port}: {reason} (server.host, server.port)"
        ) from None
    if app[SERVICES].fatal:
        raise OperatorError(app[SERVICES].fatal)


def _supervise(settings: Settings, spec: WorkerSpec, url: str) -> None:
    sockets = bind_slots(settings.server.host, settings.server.port, settings.server.workers)
    metrics_dir = tempfile.mkdtemp(prefix="cardvault-metrics-") if settings.metrics.enabled else None
    try:
        banner = Banner(settings, url, workers=settings.server.workers)
        supervisor = Supervisor(settings, replace(spec, metrics_dir=metrics_dir), sockets, on_ready=banner.print)
        refusal = supervisor.run()
    finally:
        for group in sockets:
            for sock in group:
                sock.close()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    if refusal:
        raise OperatorError(refusal)


@click.command()
@click.option("--host", help="Address to listen on [default 127.0.0.1].")
@click.option("--port", type=click.IntRange(1, 65535), help="Port to listen on [default 8443].")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="PEM certificate chain.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="PEM private key.")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    help="Worker processes sharing the port under a supervisor; SIGHUP restarts them one by one "
    "[default 1: this process serves alone].",
)
@settings_options
def serve(
    host: str | None,
    port: int | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    workers: int | None,
    config_file: Path | None,
    data_dir: Path | None,
) -> None:
    """Run the vault's HTTPS API."""
    if bool(tls_cert) != bool(tls_key):
        raise OperatorError("give --tls-cert and --tls-key together")
    flags = {
        "server.host": host,
        "server.port": port,
        "tls.cert_file": tls_cert,
        "tls.key_file": tls_key,
        "server.workers": workers,
    }
    settings = settings_from(config_file, data_dir, **flags)
    configure_logging(settings.log.level)
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    keyring, warnings = master_keys_for(settings)
    for warning in warnings:
        log.warning("startup check", problem=warning)
    findings = Findings()
    context = tls_context(settings, findings)
    for warning in findings.warnings:
        log.warning("startup check", problem=warning)

    embedded = EmbeddedRedis(settings.data_dir) if settings.embedded_redis else None
    if embedded is not None:
        embedded.start()
        log.info("embedded redis started", socket=str(embedded.socket_path))
    redis_url = embedded.url if embedded is not None else settings.redis.url
    assert redis_url is not None
    url = listen_url(settings, tls=context is not None)
    try:
        if settings.server.workers == 1:
            _serve_alone(settings, keyring.master, context, redis_url, url)
        else:
            spec = WorkerSpec(
                config_file=str(config_file) if config_file else None,
                data_dir=str(data_dir) if data_dir else None,
                overrides={k: str(v) if isinstance(v, Path) else v for k, v in flags.items() if v is not None},
                redis_url=redis_url,
                metrics_dir=None,
            )
            _supervise(settings, spec, url)
    finally:
        if embedded is not None:
            embedded.stop()
            log.info("embedded redis stopped")
        log.info("stopped")
