"""schemathesis against ``openapi.yaml`` and a real ``cardvault serve``: every phase, every check, no card data back.

schemathesis (a tool we did not write) reads the spec and runs its four phases
against the running service: the spec's own examples, the coverage phase
(boundary and invalid values of every parameter and field), fuzzing, and the
stateful phase, which follows the spec's links (create a token, then read,
delete, list or charge it; create a charge, then read, capture, void or refund
it; create a checkout session, then read or complete it).  Every built-in check
runs (``--checks all``: no 5xx, status code, content type, headers and body
schema conform to the spec, valid data accepted and invalid data refused,
authentication enforced, deleted resources gone), plus the hooks' own
``no_card_data_in_responses``: no card number or CVC from the request, and no
card-shaped number at all, in any response.

The run is bounded and repeatable: a fixed seed, 25 examples per operation,
two workers, no shrinking (``schemathesis.toml``).  Agreed exceptions, each
explained there: 402/409/422 count as a valid request's answer (a Luhn check,
an expired card, a declined card, an unregistered URL are rules JSON Schema
cannot state) and 413 as an invalid one's.  The serve runs with velocity limits
off (they would answer most of the run with 429; tests/http/test_velocity.py
covers them) and short processor timeouts (the sandbox's slow card would
otherwise hold each charge 25 s).

By hand, against any running vault (see the README's External scanners)::

    CARDVAULT_SCAN_URL=https://127.0.0.1:8443 CARDVAULT_SCAN_CA_FILE=var/tls/dev-cert.pem \\
    CARDVAULT_SCAN_SECRET_KEY=sk_... CARDVAULT_SCAN_PUBLISHABLE_KEY=pk_... \\
    CARDVAULT_SCAN_HOOKS=tests/scanners/schemathesis_hooks.py PYTHONPATH=. \\
    schemathesis --config-file tests/scanners/schemathesis.toml run openapi.yaml --checks all
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import leaks
from tests.support.serve import ServeFactory, ServeProcess, run_cli

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SHOP = "https://shop.example.gov"
RUN_TIMEOUT = 420


def schemathesis_argv() -> list[str]:
    script = Path(sys.executable).with_name("schemathesis")
    assert script.exists(), f"schemathesis is not installed next to {sys.executable} (pip install -e '.[test]')"
    return [str(script)]


@pytest.fixture(scope="module")
def scanned_serve(tmp_path_factory: pytest.TempPathFactory, leak_sources: Any) -> Iterator[ServeProcess]:
    directory = tmp_path_factory.mktemp("schemathesis-serve")
    env = {
        "CARDVAULT_VELOCITY__ENABLED": "false",
        "CARDVAULT_PROCESSORS__TIMEOUT_SECONDS": "2",
        "CARDVAULT_PROCESSORS__SANDBOX_SLOW_SECONDS": "3",
    }
    with ServeFactory(directory, leak_sources) as factory:
        process = factory(env=env).start()
        yield process
        process.stop()


def create_agency(serve: ServeProcess) -> dict[str, Any]:
    """An agency with an https origin (checkout URLs must be https on it), made by the CLI beside serve."""
    result = run_cli("agency", "create", "scan", "--origin", SHOP, "--data-dir", serve.data_dir, env=serve.env)
    result.assert_ok()
    start = result.stdout.index("{\n") if "{\n" in result.stdout else result.stdout.index("{")
    created: dict[str, Any] = json.loads(result.stdout[start:])
    return created


@pytest.mark.timeout(RUN_TIMEOUT + 60)
def test_schemathesis_finds_nothing(scanned_serve: ServeProcess, tmp_path: Path) -> None:
    agency = create_agency(scanned_serve)
    report = tmp_path / "schemathesis.ndjson"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "CARDVAULT_SCAN_URL": scanned_serve.url,
        "CARDVAULT_SCAN_CA_FILE": str(scanned_serve.cert_file),
        "CARDVAULT_SCAN_HOOKS": str(HERE / "schemathesis_hooks.py"),
        "CARDVAULT_SCAN_SECRET_KEY": agency["secret_key"],
        "CARDVAULT_SCAN_PUBLISHABLE_KEY": agency["publishable_key"],
        "NO_COLOR": "1",
    }
    argv = [
        *schemathesis_argv(),
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "run",
        str(REPO / "openapi.yaml"),
        "--checks",
        "all",
        "--report",
        "ndjson",
        "--report-ndjson-path",
        str(report),
    ]
    done = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)
    output = done.stdout + done.stderr
    summary = output[output.rfind("SUMMARY") :] if "SUMMARY" in output else output[-4000:]
    assert done.returncode == 0, f"schemathesis found problems (exit {done.returncode}):\n{output[-12000:]}"
    # It really ran every phase over every operation, and reached past authentication.
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in summary, summary
    assert "Tested: " in summary, summary
    selected = summary.split("Selected: ", 1)[1].split("\n", 1)[0]
    tested = summary.split("Tested: ", 1)[1].split("\n", 1)[0]
    assert selected.split("/")[0] == tested.strip(), summary
    # Its own record of the traffic, read back independently of the hooks: no card data in any answer.
    bodies = list(response_bodies(report))
    assert len(bodies) > 100, f"the report recorded only {len(bodies)} responses"
    leaked = [text[:80] for text in bodies if leaks.cards_in_text(text) or leaks.card_shaped_numbers(text)]
    assert not leaked, leaked


def response_bodies(report: Path) -> Iterator[str]:
    """Every response body in schemathesis' NDJSON report (``ScenarioFinished`` events, base64 content)."""
    for line in report.read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        finished = event.get("ScenarioFinished")
        if not finished:
            continue
        for interaction in (finished.get("recorder") or {}).get("interactions", {}).values():
            content = ((interaction or {}).get("response") or {}).get("content") or {}
            if "$base64" in content:
                yield base64.b64decode(content["$base64"]).decode("utf-8", "replace")
