"""SIGTERM: stop accepting, finish what is in flight within the grace period, close up, exit 0."""

from __future__ import annotations

import http.client
import json
import signal
import ssl
import time
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from tests.ops.support import (
    SLOW_CARD,
    card_body,
    closed_by_server,
    in_flight,
    keepalive_connection,
    metrics_env,
    metrics_port,
    refused,
)
from tests.support.serve import Response, ServeFactory, ServeProcess, wait_until

pytestmark = pytest.mark.slow

SLOW_SECONDS = 3.0


def start_slow_charge(process: ServeProcess, pool: ThreadPoolExecutor, *, reference: str) -> Future[Response]:
    """A charge of the sandbox's slow card, sent from another thread; it is in flight once this returns."""
    assert process.keys is not None
    secret = process.keys.secret
    token = process.create_token(secret, card_body(SLOW_CARD))
    body = {"token": token["id"], "amount": 1500, "currency": "usd", "order_reference": reference}
    headers = {"Idempotency-Key": reference}
    return pool.submit(process.request, "POST", "/v1/charges", key=secret, body=body, headers=headers)


class TestGracefulShutdown:
    def test_sigterm_lets_the_charge_in_flight_finish_and_refuses_new_connections(self, serve: ServeFactory) -> None:
        """A charge in flight at SIGTERM is answered 201, new connections are refused at once, exit 0.

        (A SIGHUP before that is ignored: one process has no workers to restart.)
        """
        env = {"CARDVAULT_PROCESSORS__SANDBOX_SLOW_SECONDS": str(SLOW_SECONDS), **metrics_env()}
        process = serve(env=env).start()
        assert process.process is not None
        process.process.send_signal(signal.SIGHUP)  # one process has nobody to restart: ignored, not fatal
        assert wait_until(lambda: "SIGHUP ignored" in process.stderr, 5), process.describe()
        idle = keepalive_connection(process)
        with ThreadPoolExecutor(1) as pool:
            charge = start_slow_charge(process, pool, reference="graceful-1")
            assert wait_until(lambda: in_flight(metrics_port(process)) >= 1, 10), process.describe()
            process.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()

            assert wait_until(lambda: refused(process.host, process.port), 2), "still accepting after SIGTERM"
            assert process.process.poll() is None, "exited before the request in flight was answered"
            assert closed_by_server(idle, timeout=3), "an idle keep-alive connection was left open"
            assert not charge.done()

            answer = charge.result(timeout=SLOW_SECONDS + 10)
        assert answer.status == 201, answer.body
        assert answer.json()["status"] == "succeeded"
        assert answer.headers["Connection"] == "close"
        assert process.process.wait(timeout=15) == 0, process.describe()
        assert time.monotonic() - signalled < SLOW_SECONDS + 8
        records = process.log_records()
        assert [r for r in records if r.get("event") == "shutting down"], process.stderr
        assert records[-1]["event"] == "stopped"  # written and flushed last, after Redis stopped

    def test_a_request_longer_than_the_grace_period_is_cut_and_the_process_still_exits(
        self, serve: ServeFactory
    ) -> None:
        """With a 2 s grace a 60 s charge is cut, the process exits 0 within seconds, and the charge stays unknown."""
        env = {
            "CARDVAULT_PROCESSORS__SANDBOX_SLOW_SECONDS": "60",
            "CARDVAULT_PROCESSORS__TIMEOUT_SECONDS": "90",
            "CARDVAULT_SERVER__SHUTDOWN_TIMEOUT": "2",
            **metrics_env(),
        }
        process = serve(env=env).start()
        assert process.process is not None
        assert process.keys is not None
        with ThreadPoolExecutor(1) as pool:
            charge = start_slow_charge(process, pool, reference="cut-1")
            assert wait_until(lambda: in_flight(metrics_port(process)) >= 1, 10), process.describe()
            process.process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            assert process.process.wait(timeout=20) == 0, process.describe()
            stopped_after = time.monotonic() - signalled
            with pytest.raises((http.client.HTTPException, ConnectionError, ssl.SSLError)):
                charge.result(timeout=10)
        assert stopped_after < 2 + 8, stopped_after

        # the charge record was written before the processor call and stays, marked unknown
        embedded = process.embedded
        embedded.start()
        redis = process.redis()
        try:
            records = [json.loads(redis.get(key) or b"{}") for key in redis.scan_iter(match="cv:{*}:ch:*", count=1000)]
        finally:
            redis.close()
            embedded.stop()
            process.kill()  # nothing left to kill: registers the AOF files for the leak scan
        assert [(r["status"], r["order_reference"]) for r in records] == [("unknown", "cut-1")]
