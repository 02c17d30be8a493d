"""Who is asking, for the velocity limits: the client address and the publishable key of an API request.

Publishable-key requests come from shoppers' browsers (the storefront page, the
hosted card form), so they are counted per client address and per key.  A
secret key is the agency's own backend, one address for all of its shoppers:
its requests are counted per card and per agency only (``service.velocity``).
The address is ``request.remote``, which the proxy middleware sets from the
trusted proxies' forwarding headers.
"""

from __future__ import annotations

from aiohttp import web

from service.agencies import Principal
from service.http.auth import bearer_key
from service.velocity import Subject


def subject_of(request: web.Request, principal: Principal) -> Subject:
    source = request.remote or "-"
    if principal.secret:
        return Subject(source=source)
    return Subject(source=source, address=source, key=bearer_key(request))
