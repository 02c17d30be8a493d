"""What the operations tests share: metrics scrapes, worker pids from the logs, bare HTTPS probes."""

from __future__ import annotations

import http.client
import ipaddress
import json
import re
import socket
import ssl
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from service.domain.redaction import contains_card_number
from service.settings import Settings
from tests.support.cards import CVC
from tests.support.redis_server import free_port
from tests.support.serve import ServeProcess

#: The sandbox's slow test card (a public test number): it answers after processors.sandbox_slow_seconds.
SLOW_CARD = "4012888888881881"
DECLINED_CARD = "4000000000000002"


def card_body(number: str) -> dict[str, Any]:
    return {"card": {"number": number, "exp_month": 12, "exp_year": 2031, "cvc": CVC}}


def unlimited_env() -> dict[str, str | Path]:
    """Velocity limits (the card-testing defence) would refuse a load of tokens for one card: off here."""
    return {"CARDVAULT_VELOCITY__ENABLED": "false"} if "velocity" in Settings.__dataclass_fields__ else {}


def metrics_env(port: int | None = None) -> dict[str, str | Path]:
    return {"CARDVAULT_METRICS__ENABLED": "true", "CARDVAULT_METRICS__PORT": str(port or free_port())}


def metrics_port(process: ServeProcess) -> int:
    return int(process.env["CARDVAULT_METRICS__PORT"])


def scrape(port: int, host: str = "127.0.0.1") -> list[Sample]:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("text/plain")
        text = answer.read().decode()
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels`` (0 if none)."""
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def in_flight(port: int) -> float:
    return value(scrape(port), "cardvault_http_requests_in_flight")


def worker_pids(process: ServeProcess) -> dict[int, int]:
    """The latest pid that reported ready for each worker number (from the supervisor's log)."""
    ready: dict[int, int] = {}
    for record in process.log_records():
        if record.get("event") == "worker ready":
            ready[int(record["worker"])] = int(record["pid"])
    return ready


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def healthz_worker(process: ServeProcess, *, timeout: float) -> int | None:
    """Which worker answered /healthz on a new connection; None if no answer within ``timeout``."""
    connection = http.client.HTTPSConnection(process.host, process.port, context=process.ssl_context(), timeout=timeout)
    try:
        connection.request("GET", "/healthz")
        answer = connection.getresponse()
        assert answer.status == 200
        worker: int = http_json(answer)["worker"]
        return worker
    except (TimeoutError, ssl.SSLError, OSError):
        return None
    finally:
        connection.close()


def http_json(answer: http.client.HTTPResponse) -> Any:
    return json.loads(answer.read())


def keepalive_connection(process: ServeProcess) -> http.client.HTTPSConnection:
    """A connection that has had one answer and stays open (HTTP/1.1 keep-alive), idle."""
    connection = http.client.HTTPSConnection(process.host, process.port, context=process.ssl_context(), timeout=10)
    connection.request("GET", "/healthz")
    answer = connection.getresponse()
    answer.read()
    assert answer.status == 200
    assert (answer.getheader("Connection") or "").lower() != "close"
    return connection


def closed_by_server(connection: http.client.HTTPSConnection, timeout: float) -> bool:
    """Whether the server closed this idle connection within ``timeout`` seconds."""
    sock = connection.sock
    assert sock is not None
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except (ssl.SSLError, ConnectionError):
        return True


def labels_of(samples: list[Sample]) -> Mapping[str, set[str]]:
    found: dict[str, set[str]] = {}
    for sample in samples:
        for name, label in sample.labels.items():
            found.setdefault(name, set()).add(label)
    return found


#: Every label name the service may export; an "agency", "path", "ip" or "token" label would fail here.
ALLOWED_LABELS = {"route", "method", "status", "format", "processor", "decline_code", "kind", "command"}
ALLOWED_LABELS |= {"operation", "outcome", "reason", "le"}
IDENTIFIER = re.compile(r"\b(tok|ch|re|sk|pk|agy|req|cs)_")


def assert_nothing_identifying(samples: list[Sample], known: set[str]) -> None:
    """No label value is a card number, an id, a key, an address, or one of the values the test saw go by."""
    ours = labels_of([s for s in samples if s.name.startswith("cardvault_")])
    assert set(ours) <= ALLOWED_LABELS, set(ours) - ALLOWED_LABELS
    labels = labels_of(samples)  # the client library's own (python_info, gc) are checked too
    for name, values in labels.items():
        for label in values:
            assert label not in known, (name, label)
            assert not contains_card_number(label), name
            assert not IDENTIFIER.search(label), (name, label)
            with pytest.raises(ValueError):
                ipaddress.ip_address(label)
            assert "127.0.0.1" not in label
            assert "?" not in label, (name, label)
