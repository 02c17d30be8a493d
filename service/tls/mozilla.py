"""The server TLS context, matching Mozilla's "intermediate" configuration (guideline 5.7).

Why this module exists: agencies' browsers and payment clients connect to cardvault directly, so the
server must speak exactly the protocol versions, cipher suites and key-exchange groups that
ssl-config.mozilla.org recommends for "intermediate" compatibility -- no fewer (old but supported
clients would break) and no more (weaker options would be accepted). Python's ``ssl`` defaults differ
from that profile in several places (server cipher preference, session tickets, the groups offered), so
every setting is made explicitly here and proven by handshake tests in ``tests/unit/tls``.

The one setting Python 3.11 cannot express is the list of key-exchange groups: ``set_ecdh_curve``
accepts a single group, and Mozilla wants three (X25519, P-256, P-384). ``set_key_exchange_groups``
therefore uses ``SSLContext.set_groups`` where it exists (Python 3.15+) and otherwise calls OpenSSL's
``SSL_CTX_set1_groups_list`` (a macro for ``SSL_CTX_ctrl(ctx, SSL_CTRL_SET_GROUPS_LIST, 0, list)``)
through ctypes on the context's own ``SSL_CTX``. See that function for the details and the checks that
keep this safe.
"""

from __future__ import annotations

import _ssl
import ctypes
import functools
import importlib.resources
import ssl
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Final

from service.tls import TlsConfigError

__all__ = [
    "HSTS_HEADER_VALUE",
    "INTERMEDIATE_CIPHERS",
    "INTERMEDIATE_GROUPS",
    "MOZILLA_GUIDELINE_VERSION",
    "server_context",
    "set_key_exchange_groups",
]

MOZILLA_GUIDELINE_VERSION: Final = "5.7"

#: ``Strict-Transport-Security`` value Mozilla recommends: two years, in seconds.
HSTS_HEADER_VALUE: Final = "max-age=63072000"

#: TLS 1.2 cipher suites, in Mozilla's order. TLS 1.3 suites are OpenSSL's defaults, which are Mozilla's.
INTERMEDIATE_CIPHERS: Final = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-CHACHA20-POLY1305",
    )
)

#: Key-exchange groups for ECDHE (TLS 1.2) and key shares (TLS 1.3), in OpenSSL's list syntax.
INTERMEDIATE_GROUPS: Final = "X25519:P-256:P-384"

_DH_PARAMS_RESOURCE: Final = "ffdhe2048.pem"
_SSL_CTRL_SET_GROUPS_LIST: Final = 92  # from <openssl/ssl.h>, stable since OpenSSL 1.1.0
_KEY_MISMATCH_REASONS: Final = frozenset({"KEY_VALUES_MISMATCH", "NO_CERTIFICATE_ASSIGNED"})
_SSL_CTRL_SET_SESS_CACHE_SIZE: Final = 42  # from <openssl/ssl.h>, as SSL_CTX_sess_set_cache_size expands
_SSL_CTRL_GET_SESS_CACHE_SIZE: Final = 43
_SSL_CTRL_SET_SESS_CACHE_MODE: Final = 44
_SSL_SESS_CACHE_OFF: Final = 0

#: Sessions kept for resumption (OpenSSL's own default); each takes about 1.1 KiB, and a TLS 1.3 handshake
#: leaves two (one per ticket), so a full cache is about 23 MiB per serving process.
DEFAULT_SESSION_CACHE_SIZE: Final = 20_480


def server_context(
    cert_file: Path,
    key_file: Path,
    *,
    client_ca_file: Path | None = None,
    session_cache_size: int = DEFAULT_SESSION_CACHE_SIZE,
) -> ssl.SSLContext:
    """Build a server context with Mozilla's intermediate settings, serving ``cert_file``/``key_file``.

    With ``client_ca_file``, clients must present a certificate signed by that CA (mutual TLS).
    ``session_cache_size`` bounds the sessions kept for resumption (``set_session_cache_size``).
    Raises ``TlsConfigError`` naming the file when a certificate, key or CA file cannot be used.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.set_ciphers(INTERMEDIATE_CIPHERS)
    set_key_exchange_groups(context, INTERMEDIATE_GROUPS)
    _load_ffdhe2048(context)
    _set_options(context)
    _load_certificate(context, cert_file, key_file)
    if client_ca_file is not None:
        _require_client_certificates(context, client_ca_file)
    set_session_cache_size(context, session_cache_size)
    return context


def set_session_cache_size(context: ssl.SSLContext, sessions: int) -> None:
    """Keep at most ``sessions`` TLS sessions for resumption in ``context``'s cache; 0 keeps none.

    Without session tickets (``_set_options``) resumption works from this cache: TLS 1.2 by session
    id, TLS 1.3 by the stateful tickets it holds, two per handshake.  OpenSSL fills it up to its
    size whether or not a client ever comes back, then drops the oldest, so its size is memory the
    process will hold under connection churn: ``tls.session_cache_size`` makes that a choice.
    Python's ``ssl`` has no setter, so this is ``SSL_CTX_sess_set_cache_size`` (or, for 0,
    ``SSL_CTX_set_session_cache_mode(SSL_SESS_CACHE_OFF)``) through ctypes, as for the groups.
    """
    if sessions < 0:
        raise TlsConfigError(f"tls.session_cache_size must be 0 or more, not {sessions}")
    library = _libssl()
    ssl_ctx = _ssl_ctx_pointer(context, library)
    ctrl = library["SSL_CTX_ctrl"]
    ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    ctrl.restype = ctypes.c_long
    if sessions == 0:
        ctrl(ssl_ctx, _SSL_CTRL_SET_SESS_CACHE_MODE, _SSL_SESS_CACHE_OFF, None)
        return
    ctrl(ssl_ctx, _SSL_CTRL_SET_SESS_CACHE_SIZE, sessions, None)
    if ctrl(ssl_ctx, _SSL_CTRL_GET_SESS_CACHE_SIZE, 0, None) != sessions:
        raise TlsConfigError(f"OpenSSL ({ssl.OPENSSL_VERSION}) did not take a session cache of {sessions}")


def set_key_exchange_groups(context: ssl.SSLContext, groups: str) -> None:
    """Restrict ``context`` to the colon-separated OpenSSL ``groups`` (for example ``"X25519:P-256"``).

    Python 3.15 added ``SSLContext.set_groups``; older versions only have ``set_ecdh_curve``, which sets a
    single group. There, this calls ``SSL_CTX_ctrl(ctx, SSL_CTRL_SET_GROUPS_LIST, 0, groups)`` through
    ctypes. The ``SSL_CTX *`` is read from the first field after ``PyObject_HEAD`` in CPython's
    ``PySSLContext`` struct, and ``SSL_CTX_ctrl`` is looked up through ``ctypes.CDLL(_ssl.__file__)``, so
    it is the very libssl the ``ssl`` module is linked against (not some other copy on the system).
    Before writing, the pointer is checked by asking OpenSSL for the context's options and comparing
    them with ``context.options``. Call this before the context is used by other threads.
    """
    setter = getattr(context, "set_groups", None)
    if setter is not None:  # Python 3.15+
        _set_groups_with_python(setter, groups)
        return
    _set_groups_with_ctypes(context, groups)


def _set_groups_with_python(setter: Callable[[str], object], groups: str) -> None:
    try:
        setter(groups)
    except (ssl.SSLError, ValueError) as exc:
        raise TlsConfigError(f"OpenSSL rejected the key-exchange groups {groups!r}: {exc}") from exc


def _set_groups_with_ctypes(context: ssl.SSLContext, groups: str) -> None:
    library = _libssl()
    ssl_ctx = _ssl_ctx_pointer(context, library)
    ctrl = library["SSL_CTX_ctrl"]
    ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_char_p]
    ctrl.restype = ctypes.c_long
    if ctrl(ssl_ctx, _SSL_CTRL_SET_GROUPS_LIST, 0, groups.encode("ascii")) != 1:
        _clear_openssl_errors(library)
        raise TlsConfigError(f"OpenSSL ({ssl.OPENSSL_VERSION}) rejected the key-exchange groups {groups!r}")


@functools.cache
def _libssl() -> ctypes.CDLL:
    """The shared object of Python's ``_ssl`` module; its dependencies provide libssl's symbols."""
    location = getattr(_ssl, "__file__", None)
    if sys.implementation.name != "cpython" or location is None:
        raise TlsConfigError(
            f"cannot reach OpenSSL: {sys.implementation.name} {sys.version.split()[0]} has no loadable _ssl "
            "extension module to reach it through (key-exchange groups, session cache size)"
        )
    try:
        library = ctypes.CDLL(location)
        library["SSL_CTX_ctrl"]
        library["SSL_CTX_get_options"]
    except (OSError, AttributeError) as exc:
        raise TlsConfigError(f"cannot reach OpenSSL's SSL_CTX_ctrl through {location}: {exc}") from exc
    return library


def _ssl_ctx_pointer(context: ssl.SSLContext, library: ctypes.CDLL) -> int:
    """Read ``PySSLContext.ctx`` (the field right after ``PyObject_HEAD``) and check it is that context."""
    address = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    if not address:
        raise TlsConfigError("cannot reach OpenSSL: the SSLContext has no SSL_CTX")
    get_options = library["SSL_CTX_get_options"]
    get_options.argtypes = [ctypes.c_void_p]
    get_options.restype = ctypes.c_uint64
    if get_options(address) != int(context.options):
        raise TlsConfigError(
            "cannot reach OpenSSL: the SSL_CTX found in the SSLContext does not report the "
            "context's options, so this Python's ssl module is laid out differently than expected"
        )
    return address


def _clear_openssl_errors(library: ctypes.CDLL) -> None:
    """Drop the failure from OpenSSL's error queue so that later ``ssl`` calls do not report it."""
    clear = library["ERR_clear_error"]
    clear.argtypes = []
    clear.restype = None
    clear()


def _load_ffdhe2048(context: ssl.SSLContext) -> None:
    """Use the RFC 7919 ffdhe2048 group for DHE cipher suites, as Mozilla does."""
    resource = importlib.resources.files(__package__ or "service.tls").joinpath(_DH_PARAMS_RESOURCE)
    with importlib.resources.as_file(resource) as path:
        try:
            context.load_dh_params(str(path))
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigError(f"cannot load DH parameters {path}: {exc}") from exc


def _set_options(context: ssl.SSLContext) -> None:
    """Client's cipher order (``ssl_prefer_server_ciphers off``), no tickets, compression or renegotiation.

    ``OP_NO_TICKET`` stops the stateless session tickets whose long-lived encryption key would weaken
    forward secrecy. For TLS 1.3, OpenSSL then issues stateful tickets (session-cache ids, no ticket key),
    exactly as nginx does with Mozilla's ``ssl_session_tickets off``.
    """
    context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    context.options |= ssl.OP_NO_TICKET | ssl.OP_NO_COMPRESSION
    no_renegotiation = getattr(ssl, "OP_NO_RENEGOTIATION", None)
    if no_renegotiation is not None:
        context.options |= no_renegotiation


def _load_certificate(context: ssl.SSLContext, cert_file: Path, key_file: Path) -> None:
    _require_readable(cert_file, "certificate")
    _require_readable(key_file, "private key")
    try:
        context.load_cert_chain(certfile=cert_file, keyfile=key_file)
    except ssl.SSLError as exc:
        raise TlsConfigError(f"cannot use TLS certificate {cert_file} with key {key_file}: {_reason(exc)}") from exc


def _require_client_certificates(context: ssl.SSLContext, client_ca_file: Path) -> None:
    _require_readable(client_ca_file, "client CA certificate")
    try:
        context.load_verify_locations(cafile=client_ca_file)
    except ssl.SSLError as exc:
        raise TlsConfigError(f"cannot use client CA certificate {client_ca_file}: {_reason(exc)}") from exc
    context.verify_mode = ssl.CERT_REQUIRED


def _require_readable(path: Path, what: str) -> None:
    """Fail with the file's name: OpenSSL's own errors do not say which file was the problem."""
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise TlsConfigError(f"cannot read TLS {what} {path}: {exc.strerror or exc}") from exc


def _reason(exc: ssl.SSLError) -> str:
    """OpenSSL's reason as words; a key of another type than the certificate also counts as a mismatch."""
    if exc.reason in _KEY_MISMATCH_REASONS:
        return "the private key does not belong to the certificate"
    return str(exc.reason or exc).replace("_", " ").lower()
