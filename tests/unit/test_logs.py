"""Logs: JSON lines, and nothing logged on any path contains a card number or CVC."""

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from service.logs import configure_logging
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
