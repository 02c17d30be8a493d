"""Prometheus metrics on their own loopback listener: real traffic moves them, and no label names anyone."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from prometheus_client.samples import Sample

from tests.ops.support import (
    DECLINED_CARD,
    assert_nothing_identifying,
    card_body,
    metrics_env,
    metrics_port,
    scrape,
    unlimited_env,
    value,
)
from tests.support.cards import MASTERCARD
from tests.support.redis_server import free_port
from tests.support.serve import ServeFactory, ServeProcess, run_cli

pytestmark = pytest.mark.slow


def delta(before: list[Sample], after: list[Sample], name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def charge(process: ServeProcess, secret: str, token: str) -> Any:
    return process.request("POST", "/v1/charges", key=secret, body={"token": token, "amount": 2500, "currency": "usd"})


class TestMetrics:
    def test_real_traffic_is_counted_by_route_pattern_and_outcome(self, serve: ServeFactory) -> None:
        """Tokens, lookups, an approved and a declined charge move exactly the expected series; nothing identifies."""
        process = serve(env={**metrics_env(), **unlimited_env()}).start()
        assert process.keys is not None
        port, secret = metrics_port(process), process.keys.secret
        before = scrape(port)

        tokens = [process.create_token(secret)["id"] for _ in range(3)]
        pan_shaped = process.create_token(secret, {**card_body(MASTERCARD), "format": "pan_shaped"})["id"]
        declined_token = process.create_token(secret, card_body(DECLINED_CARD))["id"]
        assert process.request("GET", f"/v1/tokens/{tokens[0]}", key=secret).status == 200
        assert process.request("GET", "/v1/tokens/tok_NoSuchToken0000000000", key=secret).status == 404
        approved = charge(process, secret, tokens[1])
        assert approved.status == 201
        assert approved.json()["status"] == "succeeded"
        declined = charge(process, secret, declined_token)
        assert declined.status == 402
        assert declined.json()["decline_code"] == "generic_decline"
        assert process.request("GET", "/metrics").status == 404  # never on the public listener
        after = scrape(port)

        requests = "cardvault_http_request_duration_seconds_count"
        assert delta(before, after, requests, route="/v1/tokens", method="POST", status="201") == 5
        assert delta(before, after, requests, route="/v1/tokens/{token_id}", method="GET", status="200") == 1
        assert delta(before, after, requests, route="/v1/tokens/{token_id}", method="GET", status="404") == 1
        assert delta(before, after, requests, route="unmatched", method="GET", status="404") == 1
        latency = "cardvault_http_request_duration_seconds"
        for status in ("201", "402"):
            assert delta(before, after, f"{latency}_count", route="/v1/charges", method="POST", status=status) == 1
        assert delta(before, after, f"{latency}_sum", route="/v1/charges", method="POST") > 0
        inf = value(after, f"{latency}_bucket", route="/v1/tokens", status="201", le="+Inf")
        assert inf == value(after, f"{latency}_count", route="/v1/tokens", status="201")

        assert delta(before, after, "cardvault_tokens_created_total", format="opaque") == 4
        assert delta(before, after, "cardvault_tokens_created_total", format="pan_shaped") == 1
        assert delta(before, after, "cardvault_charges_total", processor="sandbox", status="succeeded") == 1
        assert delta(before, after, "cardvault_charges_total", processor="sandbox", status="declined") == 1
        assert delta(before, after, "cardvault_charge_declines_total", decline_code="generic_decline") == 1
        processor = "cardvault_processor_call_duration_seconds_count"
        for outcome in ("approved", "declined"):
            labels = {"processor": "sandbox", "operation": "authorize", "outcome": outcome}
            assert delta(before, after, processor, **labels) == 1
        redis = "cardvault_redis_command_duration_seconds"
        assert delta(before, after, f"{redis}_count", command="EVALSHA") >= 5  # one script per token at least
        assert delta(before, after, f"{redis}_sum") > 0
        assert value(after, "cardvault_http_requests_in_flight") == 0

        known = {*tokens, pan_shaped, declined_token, secret, process.keys.publishable}
        known |= {approved.json()["id"], declined.json()["id"], process.host}
        assert_nothing_identifying(after, known)
        assert process.stop() == 0


class TestMetricsListenerRefusals:
    def test_a_public_metrics_host_is_refused_without_the_explicit_setting(self, tmp_path: Any) -> None:
        """metrics.host 0.0.0.0 stops serve before anything starts, naming the setting that allows it."""
        env = {**metrics_env(), "CARDVAULT_METRICS__HOST": "0.0.0.0"}
        result = run_cli("serve", "--data-dir", tmp_path / "var", env=env, cwd=tmp_path)
        line = result.assert_one_error("metrics.host", "metrics.allow_non_loopback")
        assert "0.0.0.0" in line
        assert not (tmp_path / "var").exists()

    def test_a_taken_metrics_port_is_one_error_line(self, serve: ServeFactory) -> None:
        """Another process on the metrics port: serve exits non-zero naming metrics.port, and its Redis stops."""
        with socket.create_server(("127.0.0.1", 0)) as taken:
            port = taken.getsockname()[1]
            process = serve(env=metrics_env(port))
            process.spawn()
            assert process.wait_exit() != 0
        errors = [line for line in process.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1, process.describe()
        assert "metrics.port" in errors[0]
        assert str(port) in errors[0]
        assert "Traceback" not in process.stderr
        assert not process.embedded.is_running()

    def test_metrics_are_off_by_default(self, serve: ServeFactory) -> None:
        """Without metrics.enabled nothing listens on the default metrics port for this serve."""
        process = serve().start()
        assert "metrics" not in " ".join(str(r.get("event")) for r in process.log_records())
        assert process.request("GET", "/metrics").status == 404
        assert process.stop() == 0


def test_free_port_helper_is_loopback() -> None:
    """The metrics listener in these tests binds 127.0.0.1 (the default): never another address."""
    assert metrics_env(free_port())["CARDVAULT_METRICS__ENABLED"] == "true"
