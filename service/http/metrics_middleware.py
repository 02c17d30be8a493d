"""Counting and timing every request by its route's pattern, never by the path it was sent to.

The outermost middleware, so it sees the status the client gets, problem
answers included.  The route label is the matched resource's canonical
pattern (``/v1/tokens/{token_id}``): a token id, a charge id or whatever
a scanner tries never becomes a label value; a request that matched no route
(404, 405) is ``unmatched``.  A request cut off by the client or by shutdown
is not counted: it has no status.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from service.metrics import HTTP_IN_FLIGHT, HTTP_REQUEST_SECONDS, child, method_label

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
UNMATCHED = "unmatched"


def route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


@web.middleware
async def metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status: int | None = None
    HTTP_IN_FLIGHT.inc()
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        HTTP_IN_FLIGHT.dec()
        if status is not None:
            labels = (route_label(request), method_label(request.method), str(status))
            child(HTTP_REQUEST_SECONDS, *labels).observe(time.perf_counter() - started)
