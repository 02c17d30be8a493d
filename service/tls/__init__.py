"""TLS for cardvault: Mozilla's server configuration and the certificates it serves.

Card numbers travel over these connections, so the TLS settings live in one small package
that is tested with real handshakes instead of being scattered over the HTTP code.
Nothing in this package ever sees card data; its errors only ever name files and settings.
"""

from __future__ import annotations

__all__ = ["TlsConfigError"]


class TlsConfigError(Exception):
    """A TLS certificate, key or setting cannot be used; the message names the file and the problem."""
