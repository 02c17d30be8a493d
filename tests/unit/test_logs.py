"""Logs: JSON lines, and nothing logged on any path contains a card number or CVC."""

import contextlib
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from service.logs import JsonLinesHandler, configure_logging, sole_json_handler
from tests.support import leaks
from tests.support.cards import AMEX, CVC, VISA


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """Logs of one test into a string; the session's log handlers come back afterwards."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    captured = io.StringIO()
    configure_logging("debug", captured)
    yield captured
    root.handlers = saved
    root.setLevel(level)


@contextlib.contextmanager
def only_the_configured_handler() -> Iterator[None]:
    """Without pytest's own log capture on the root logger (it joins every test's call phase): the access line
    then takes the way it takes in `cardvault serve`, straight to the one handler."""
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = [h for h in saved if isinstance(h, JsonLinesHandler)]
    try:
        yield
    finally:
        root.handlers = saved


class TestRedaction:
    def test_structlog_event_values_are_redacted(self, stream: io.StringIO) -> None:
        """A card number passed as an event value is masked to its last four."""
        structlog.get_logger("t").info("oops", note=f"card {VISA[:4]} {VISA[4:8]} {VISA[8:12]} {VISA[12:]}", cvc=CVC)
        text = stream.getvalue()
        record = json.loads(text)
        assert not leaks.cards_in_text(text)
        assert record["cvc"] == "[REDACTED]"
        assert "4242" in record["note"]

    def test_exception_messages_and_tracebacks_are_redacted(self, stream: io.StringIO) -> None:
        """An exception whose message holds a card number is logged without it."""
        try:
            raise ValueError(f"bad card {AMEX}")
        except ValueError:
            structlog.get_logger("t").exception("failed")
            logging.getLogger("aiohttp.server").exception("library failed")
        text = stream.getvalue()
        assert "ValueError" in text
        assert not leaks.cards_in_text(text)
        assert not leaks.non_json_lines(text)

    def test_standard_library_loggers_go_through_the_redactor(self, stream: io.StringIO) -> None:
        """Libraries logging through `logging` with %-args are rendered as redacted JSON too."""
        logging.getLogger("aiohttp.access").info("GET /v1/tokens/%s", VISA)
        text = stream.getvalue()
        assert json.loads(text)["logger"] == "aiohttp.access"
        assert not leaks.cards_in_text(text)


class TestAccessLine:
    def test_is_what_the_structlog_chain_would_write(self, stream: io.StringIO) -> None:
        """The access logger's direct record renders exactly as the same event through structlog (key order too),
        redacted the same way."""
        from aiohttp import web
        from aiohttp.test_utils import make_mocked_request

        from service.logs import AccessLogger

        request = make_mocked_request("GET", f"/v1/tokens/{VISA}?q=1")
        response = web.Response(status=404, headers={"X-Request-Id": "req_0123456789abcdef01234567"})
        structlog.contextvars.bind_contextvars(worker=2)
        try:
            with only_the_configured_handler():
                assert sole_json_handler(logging.getLogger("cardvault.access"), logging.INFO) is not None
                AccessLogger(logging.getLogger("aiohttp.access"), "").log(request, response, 0.01234)
                structlog.get_logger("cardvault.access").info(
                    "request",
                    method="GET",
                    path=request.path,
                    status=404,
                    duration_ms=12.34,
                    request_id="req_0123456789abcdef01234567",
                    remote=None,
                    scheme="http",
                )
        finally:
            structlog.contextvars.unbind_contextvars("worker")
        direct, chained = (json.loads(line) for line in stream.getvalue().splitlines())
        direct.pop("timestamp")
        chained.pop("timestamp")
        assert list(direct.items()) == list(chained.items())
        assert not leaks.cards_in_text(stream.getvalue())


class TestRedactEventShortcut:
    @settings(max_examples=400, deadline=None)
    @given(
        st.dictionaries(
            st.sampled_from(["event", "path", "number", "cvc", "status", "note", "n", "request_id", "x"]),
            st.none()
            | st.booleans()
            | st.integers()
            | st.floats(allow_nan=False)
            | st.text(alphabet="0123456789 .-ab\x00", max_size=40)
            | st.sampled_from([VISA, f"card {AMEX}", "4242 4242 4242 4242", "req_0123456789abcdef01234567"])
            | st.lists(st.integers(), max_size=2),
            max_size=8,
        )
    )
    def test_flat_events_come_out_as_the_full_walk_makes_them(self, event: dict[str, Any]) -> None:
        """Whether or not the one-search shortcut applies, the result is what redact_value makes of the event."""
        from service.domain.redaction import redact_value
        from service.logs import redact_event

        assert redact_event(None, "info", dict(event)) == redact_value(dict(event))


class TestAccessLineWay:
    """The access line goes straight to the configured handler only when nothing else would see the record."""

    @staticmethod
    def log_one() -> None:
        from aiohttp import web
        from aiohttp.test_utils import make_mocked_request

        from service.logs import AccessLogger

        request = make_mocked_request("POST", "/v1/tokens")
        response = web.Response(status=201, headers={"X-Request-Id": "req_abcdefabcdefabcdefabcdef"})
        AccessLogger(logging.getLogger("aiohttp.access"), "").log(request, response, 0.002)

    def test_a_log_capture_beside_the_handler_sees_the_line_too(
        self, stream: io.StringIO, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.INFO, logger="cardvault.access"):
            self.log_one()
        assert [r.msg["path"] for r in caplog.records if r.name == "cardvault.access"] == ["/v1/tokens"]
        assert json.loads(stream.getvalue())["path"] == "/v1/tokens"

    def test_a_filter_on_the_access_logger_is_honoured(self, stream: io.StringIO) -> None:
        access = logging.getLogger("cardvault.access")
        drop_all = logging.Filter("nothing.matches")
        access.addFilter(drop_all)
        try:
            with only_the_configured_handler():
                self.log_one()
        finally:
            access.removeFilter(drop_all)
        assert stream.getvalue() == ""
        with only_the_configured_handler():
            self.log_one()
        assert json.loads(stream.getvalue())["status"] == 201

    def test_a_handler_level_above_info_keeps_the_line_out(self, stream: io.StringIO) -> None:
        (handler,) = (h for h in logging.getLogger().handlers if isinstance(h, JsonLinesHandler))
        handler.setLevel(logging.WARNING)
        with only_the_configured_handler():
            self.log_one()
        assert stream.getvalue() == ""

    def test_the_direct_line_is_the_records_line(self, stream: io.StringIO) -> None:
        """Written directly and through a LogRecord (a second handler forces that way), the same JSON."""
        with only_the_configured_handler():
            assert sole_json_handler(logging.getLogger("cardvault.access"), logging.INFO) is not None
            self.log_one()
        other = io.StringIO()
        extra = logging.StreamHandler(other)
        (configured,) = (h for h in logging.getLogger().handlers if isinstance(h, JsonLinesHandler))
        extra.setFormatter(configured.formatter)
        with only_the_configured_handler():
            logging.getLogger().addHandler(extra)
            assert sole_json_handler(logging.getLogger("cardvault.access"), logging.INFO) is None
            self.log_one()
        direct, by_record, copy = (json.loads(line) for line in (stream.getvalue() + other.getvalue()).splitlines())
        for line in (direct, by_record, copy):
            line.pop("timestamp")
        assert list(direct.items()) == list(by_record.items()) == list(copy.items())
