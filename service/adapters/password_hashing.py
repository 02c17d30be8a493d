"""Staff password hashes: argon2id through pynacl (libsodium), always off the event loop.

A hash takes about 70 ms of CPU and 64 MiB (libsodium's "interactive"
limits, above OWASP's minimum for argon2id), so it runs in the default
executor: one sign-in never stalls every other request.  The stored string
is libsodium's self-describing ``$argon2id$v=19$m=...,t=...,p=...$salt$hash``,
so stronger limits later still verify old hashes.
"""

from __future__ import annotations

import asyncio
import functools

import nacl.exceptions
import nacl.pwhash

OPSLIMIT = nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE
MEMLIMIT = nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE


def _hash(password: str) -> bytes:
    digest: bytes = nacl.pwhash.argon2id.str(password.encode("utf-8"), opslimit=OPSLIMIT, memlimit=MEMLIMIT)
    return digest


def _verify(stored: bytes, password: str) -> bool:
    try:
        return bool(nacl.pwhash.verify(stored, password.encode("utf-8")))
    except (nacl.exceptions.InvalidkeyError, nacl.exceptions.CryptoError):
        return False


async def hash_password(password: str) -> bytes:
    return await asyncio.get_running_loop().run_in_executor(None, functools.partial(_hash, password))


async def verify_password(stored: bytes | None, password: str) -> bool:
    """Whether ``password`` matches; with no stored hash the same work is done against a dummy one."""
    target = stored if stored else await _dummy()
    matched = await asyncio.get_running_loop().run_in_executor(None, functools.partial(_verify, target, password))
    return matched and stored is not None


_DUMMY: list[bytes] = []


async def _dummy() -> bytes:
    """A hash of nothing anyone knows, so an unknown username costs as much time as a known one."""
    if not _DUMMY:
        _DUMMY.append(await hash_password("unknown-user-" + asyncio.get_running_loop().__class__.__name__))
    return _DUMMY[0]
