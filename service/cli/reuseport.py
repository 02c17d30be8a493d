"""The listening sockets of ``cardvault serve --workers N``: one SO_REUSEPORT group, one socket per worker slot.

The supervisor binds them before any worker starts and keeps them open for
its whole life; worker slot *i* inherits socket *i* and accepts on it.  With
SO_REUSEPORT the kernel spreads new connections evenly over the sockets of
the group (a single shared socket lets one busy process take most of them).

Holding them in the supervisor is what makes restarts lossless: a socket
whose last descriptor closes drops the connections still waiting in its
accept queue, so if each worker bound its own, every worker that stopped
would reset a few clients.  Here a stopping worker only closes its copy; its
replacement inherits the same socket and queue, and what arrived in
between waits in the queue instead of being reset.
"""

from __future__ import annotations

import errno
import socket

from service.errors import OperatorError

BACKLOG = 1024


def _addresses(host: str, port: int) -> list[tuple[socket.AddressFamily, tuple[object, ...]]]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    seen: list[tuple[socket.AddressFamily, tuple[object, ...]]] = []
    for family, _, _, _, address in infos:
        if (family, address) not in seen:
            seen.append((family, address))
    return seen


def _bind_one(family: socket.AddressFamily, address: tuple[object, ...]) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_slots(host: str, port: int, slots: int) -> list[list[socket.socket]]:
    """For each worker slot, one listening socket per address ``host`` resolves to, all on ``port``.

    The first socket of a port must find the port free: SO_REUSEPORT would
    otherwise let us join a group that another process of the same user
    already listens in, and share its traffic.
    """
    try:
        addresses = _addresses(host, port)
    except socket.gaierror as exc:
        raise OperatorError(f"cannot listen on {host} port {port}: {exc.strerror} (server.host)") from None
    groups: list[list[socket.socket]] = [[] for _ in range(slots)]
    try:
        for family, address in addresses:
            probe = socket.socket(family, socket.SOCK_STREAM)
            try:
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)  # no SO_REUSEPORT: fails if anyone is bound there
            finally:
                probe.close()
            for group in groups:
                group.append(_bind_one(family, address))
    except OSError as exc:
        for group in groups:
            for sock in group:
                sock.close()
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
        raise OperatorError(f"cannot listen on {host} port {port}: {reason} (server.host, server.port)") from None
    return groups
