"""Liveness and readiness: /healthz says the process answers, /readyz that it can work."""

from __future__ import annotations

from aiohttp import web

from service.errors import StoreUnavailable
from service.http.middlewares import request_id_of
from service.http.problems import problem_response
from service.http.state import services


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    svc = services(request)
    checks = {"keys": "ok" if svc.keyring.ready else "not loaded", "redis": "not connected"}
    if svc.store is not None:
        try:
            await svc.store.ping()
            checks["redis"] = "ok"
        except StoreUnavailable:
            checks["redis"] = "unreachable"
    if all(v == "ok" for v in checks.values()):
        return web.json_response({"status": "ready", "checks": checks})
    failing = ", ".join(f"{name}: {state}" for name, state in checks.items() if state != "ok")
    if svc.fatal:
        failing = f"cannot serve: {svc.fatal}"
    return problem_response(
        503, "not_ready", "The service is not ready", detail=failing, request_id=request_id_of(request)
    )
