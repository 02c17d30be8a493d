"""Liveness and readiness: /healthz says the process answers, /readyz that it can work.

/readyz is 200 only when the keys are loaded, Redis answers, and a write would
be acknowledged under the configured durability contract (see
``service.readiness``); its body reports the server's persistence and
replication as the service sees them.  A 503 names each failing check in
``detail`` (``keys: not loaded``, ``redis: unreachable``, ``durability: ...``).
"""

from __future__ import annotations

from aiohttp import web

from service.http.middlewares import request_id_of
from service.http.problems import problem_response
from service.http.state import Services, services
from service.readiness import redis_readiness

#: Which worker of ``serve --workers N`` answered (1..N); absent when one process serves alone.
WORKER_NUMBER = web.AppKey("worker_number", int)


async def healthz(request: web.Request) -> web.Response:
    worker = request.app.get(WORKER_NUMBER)
    return web.json_response({"status": "ok"} if worker is None else {"status": "ok", "worker": worker})


def _not_connected(svc: Services) -> str:
    problem = (svc.redis_problem or "").removeprefix("Redis: ")
    return f"not connected: {problem}" if problem and problem != "unreachable" else "not connected"


async def readyz(request: web.Request) -> web.Response:
    svc = services(request)
    checks = {"keys": "ok" if svc.keyring.ready else "not loaded", "redis": _not_connected(svc)}
    report = None
    if svc.store is not None:
        readiness = await redis_readiness(svc.settings.redis, svc.store.redis)
        checks["redis"] = readiness.redis
        if readiness.redis == "ok":
            checks["durability"] = readiness.durability
            report = readiness.report
    if all(v == "ok" for v in checks.values()):
        return web.json_response({"status": "ready", "checks": checks, "durability": report})
    failing = ", ".join(f"{name}: {state}" for name, state in checks.items() if state != "ok")
    if svc.fatal:
        failing = f"cannot serve: {svc.fatal}"
    return problem_response(
        503, "not_ready", "The service is not ready", detail=failing, request_id=request_id_of(request)
    )
