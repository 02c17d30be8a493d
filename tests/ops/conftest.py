"""Fixtures for the operations tests: real `cardvault serve` processes, stopped, restarted and scraped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.serve import ServeFactory


@pytest.fixture
def serve(tmp_path: Path, leak_sources: Any) -> Iterator[ServeFactory]:
    with ServeFactory(tmp_path, leak_sources) as factory:
        yield factory
