"""The project's own files: console script, Dockerfile, CI entry point, README's first commands."""

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class TestDockerfile:
    text = (REPO / "Dockerfile").read_text()

    def test_slim_base_and_non_root_user(self) -> None:
        """The image builds on a slim Python base and runs as an unprivileged user."""
        assert re.search(r"^FROM python:3\.11-slim", self.text, re.M)
        users = re.findall(r"^USER\s+(\S+)", self.text, re.M)
        assert users
        assert users[-1].split(":")[0] not in ("root", "0")

    def test_healthcheck_and_command(self) -> None:
        """The container probes /healthz through the CLI and runs `cardvault serve`."""
        assert re.search(r'^HEALTHCHECK .*CMD \["cardvault", "health"\]', self.text, re.M)
        assert re.search(r'^CMD \["cardvault", "serve"\]', self.text, re.M)

    def test_everything_copied_exists(self) -> None:
        """Every COPY source in the Dockerfile is a file or folder of the repo."""
        for line in re.findall(r"^COPY (.+)$", self.text, re.M):
            *sources, _ = line.split()
            for source in sources:
                assert (REPO / source).exists(), source


class TestEntryPoints:
    def test_python_dash_m_service(self) -> None:
        """`python -m service --help` runs the same command line as `cardvault`."""
        out = subprocess.run([sys.executable, "-m", "service", "--help"], capture_output=True, text=True, check=True)
        for command in ("serve", "agency", "keys", "config", "health"):
            assert command in out.stdout

    def test_ci_runs_the_readme_test_command(self) -> None:
        """.ci/run calls the test command the README opens with."""
        readme = (REPO / "README.md").read_text()
        commands = re.findall(r"^\s*(\S.*?)\s*(?:#.*)?$", readme.split("```", 2)[1], re.M)
        test_command = next(c for c in commands if "test" in c)
        assert "scripts/test" in test_command
        assert "scripts/test" in (REPO / ".ci" / "run").read_text()
        assert any("cardvault serve" in c for c in commands)
