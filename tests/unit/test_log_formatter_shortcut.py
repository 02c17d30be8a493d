"""The formatter's shortcut for structlog events writes what ProcessorFormatter's full way writes."""

from __future__ import annotations

import logging
from typing import Any

import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from service.logs import JsonLinesFormatter, redact_event
from tests.support.cards import VISA

FULL_WAY = structlog.stdlib.ProcessorFormatter(
    processors=[
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
        structlog.processors.format_exc_info,
        redact_event,
        structlog.processors.JSONRenderer(sort_keys=False),
    ],
)
SHORTCUT = JsonLinesFormatter(foreign_pre_chain=[])


def structlog_record(event: dict[str, Any]) -> logging.LogRecord:
    """A record as structlog's ``wrap_for_formatter`` hands it to the standard logger."""
    logger = logging.getLogger("t")
    return logger.makeRecord(
        "t", logging.INFO, __file__, 0, event, (), None, extra={"_logger": logger, "_name": "info"}
    )


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["event", "path", "number", "cvc", "status", "note", "request_id", "timestamp", "exc_info"]),
        st.none()
        | st.booleans()
        | st.integers()
        | st.text(alphabet="0123456789 .-ab", max_size=30)
        | st.sampled_from([VISA, f"card {VISA}", "2026-11-21T12:37:36.574914Z"])
        | st.lists(st.integers(), max_size=2),
        max_size=7,
    )
)
def test_the_shortcut_writes_the_full_ways_line(event: dict[str, Any]) -> None:
    before = dict(event)
    assert SHORTCUT.format(structlog_record(dict(event))) == FULL_WAY.format(structlog_record(dict(event)))
    record = structlog_record(event)
    SHORTCUT.format(record)
    assert record.msg == before  # other handlers (pytest's caplog) still see the event as it was


def test_an_exception_event_takes_the_full_way() -> None:
    try:
        raise ValueError(f"bad {VISA}")
    except ValueError as exc:
        event = {"event": "failed", "exc_info": exc}
        line = SHORTCUT.format(structlog_record(dict(event)))
    assert line == FULL_WAY.format(structlog_record(dict(event)))
    assert "ValueError" in line
    assert VISA not in line
