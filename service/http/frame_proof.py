"""The publishable key's Origin rule for requests from the vault's own hosted fields.

A publishable key sent with an ``Origin`` header must come from one of the
agency's registered origins.  The card form runs in an iframe on the vault's
own origin, so its requests carry the vault's origin instead; they are let
through only with the frame proof the vault put in that very form when it
served it, which names the agency and the parent origin the form was served
for.  The proof must be the vault's (a MAC under its pepper), unexpired, for
the key's own agency, and its parent origin must still be registered: an
origin removed with ``agency set-origins`` stops working for open forms too.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from service.agencies import Principal
from service.domain.elements import FRAME_PROOF_PERSON, Mac, read_frame_proof
from service.http.state import Services, services

FRAME_PROOF_HEADER = "Cardvault-Frame"


def frame_mac(svc: Services) -> Mac:
    def mac(message: bytes) -> str:
        return svc.keyring.mac(message, person=FRAME_PROOF_PERSON)

    return mac


def vouched_by_frame(request: web.Request, principal: Principal, origin: str) -> bool:
    """True when a request from the vault's own origin carries a valid proof of a registered parent."""
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:  # "https://[": not an origin at all
        return False
    if netloc != request.host:
        return False
    proof = request.headers.get(FRAME_PROOF_HEADER)
    if not proof:
        return False
    svc = services(request)
    claims = read_frame_proof(proof, frame_mac(svc), now=int(svc.clock()))
    return (
        claims is not None
        and claims.agency_id == principal.agency.id
        and principal.agency.allows_origin(claims.parent_origin)
    )
