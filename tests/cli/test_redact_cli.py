"""`cardvault redact FILE...`: streamed, byte-faithful, atomic, and never printing a number.

Most tests drive the click command in process (CliRunner); one runs the
installed `cardvault` program on a multi-megabyte file.  Only public test card
numbers appear as literals.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from service.cli import cli
from service.cli.redact import CHUNK_BYTES
from service.domain.stream_redaction import mask_whole_text
from tests.support.cards import AMEX, VISA
from tests.support.serve import run_cli_with_tty_stderr

TRANSCRIPT = (
    "From: pat@example.org\r\n"
    "Subject: my order\r\n\r\n"
    f"Please use {VISA[:4]} {VISA[4:8]} {VISA[8:12]} {VISA[12:]} (exp 12/30), my SSN is 078-05-1120.\r\n"
    f"Or the Amex {AMEX}. Call 502-555-0134, order #20240115.\r\n"
)
MASKED = (
    "From: pat@example.org\r\n"
    "Subject: my order\r\n\r\n"
    "Please use **** **** **** 4242 (exp 12/30), my SSN is ***-**-****.\r\n"
    "Or the Amex **** **** *** 0005. Call 502-555-0134, order #20240115.\r\n"
)


def run(*args: object) -> Result:
    return CliRunner().invoke(cli, ["redact", *map(str, args)], catch_exceptions=False)


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


class TestDefaultOutput:
    def test_writes_a_masked_copy_beside_the_file_and_counts(self, tmp_path: Path) -> None:
        """FILE.redacted holds the masked text, line endings kept; the summary counts and shows no number."""
        source = write(tmp_path / "mail.eml", TRANSCRIPT)
        result = run(source)
        assert result.exit_code == 0, result.output
        assert (tmp_path / "mail.eml.redacted").read_bytes() == MASKED.encode()
        assert source.read_bytes() == TRANSCRIPT.encode()
        assert result.stdout.splitlines() == [
            f"{source} -> {source}.redacted: 2 card numbers, 1 SSN",
            "1 file: 2 card numbers and 1 SSN masked",
        ]
        for number in (VISA, AMEX, "4242 4242", "078-05-1120", "1120"):
            assert number not in result.output

    def test_a_card_number_in_a_file_name_is_not_printed(self, tmp_path: Path) -> None:
        """The summary redacts a card number that is part of a file name."""
        source = write(tmp_path / f"card-{VISA}.txt", "nothing here")
        result = run(source)
        assert result.exit_code == 0
        assert VISA not in result.output
        assert "[REDACTED CARD ****4242]" in result.output
        assert (tmp_path / f"card-{VISA}.txt.redacted").read_text() == "nothing here"

    def test_json_summary(self, tmp_path: Path) -> None:
        """--json prints per-file counts and totals."""
        source = write(tmp_path / "a.txt", TRANSCRIPT)
        empty = write(tmp_path / "b.txt", "")
        result = run("--json", source, empty)
        assert result.exit_code == 0
        summary = json.loads(result.stdout)
        assert (summary["cards"], summary["ssns"]) == (2, 1)
        assert [(f["output"], f["cards"], f["bytes"]) for f in summary["files"]] == [
            (f"{source}.redacted", 2, len(TRANSCRIPT.encode())),
            (f"{empty}.redacted", 0, 0),
        ]
        assert (tmp_path / "b.txt.redacted").read_bytes() == b""

    def test_suffix(self, tmp_path: Path) -> None:
        """--suffix names the copies; an empty suffix (the input itself) is refused."""
        source = write(tmp_path / "a.txt", TRANSCRIPT)
        assert run("--suffix", ".clean", source).exit_code == 0
        assert (tmp_path / "a.txt.clean").read_bytes() == MASKED.encode()
        refused = run("--suffix", "", source)
        assert refused.exit_code == 1
        assert "use --in-place" in refused.output


class TestBytes:
    def test_bytes_that_are_not_utf8_and_line_endings_come_back_unchanged(self, tmp_path: Path) -> None:
        """Latin-1 letters, stray bytes, CR LF and a UTF-8 BOM survive byte for byte around the masked card."""
        raw = b"\xef\xbb\xbfCaf\xe9 \xff\xfe\x80 " + VISA.encode() + b"\r\n\xe9t\xe9\r\nend \xc3\xa9\n"
        source = write(tmp_path / "latin.txt", raw)
        assert run(source).exit_code == 0
        expected = b"\xef\xbb\xbfCaf\xe9 \xff\xfe\x80 **** **** **** 4242\r\n\xe9t\xe9\r\nend \xc3\xa9\n"
        assert (tmp_path / "latin.txt.redacted").read_bytes() == expected

    @pytest.mark.parametrize(
        "raw",
        ["call me".encode("utf-16"), "\ufeffhi".encode("utf-32-le"), b"PK\x03\x04\x00\x00binary"],
        ids=["utf-16", "utf-32", "nul-bytes"],
    )
    def test_wide_encodings_and_binary_files_are_refused_before_anything_is_written(
        self, tmp_path: Path, raw: bytes
    ) -> None:
        """UTF-16/32 or NUL bytes would hide digits: refused with what to do, and no other file is touched."""
        good = write(tmp_path / "good.txt", TRANSCRIPT)
        bad = write(tmp_path / "bad.txt", raw)
        result = run(good, bad)
        assert result.exit_code == 1
        assert "convert it to UTF-8" in result.output
        assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.txt", "good.txt"]


class TestChunkBoundaries:
    def test_numbers_straddling_chunk_boundaries_are_masked(self, tmp_path: Path) -> None:
        """A card across the first chunk boundary, an SSN and its keyword across the second: masked as if whole."""
        first = "x" * (CHUNK_BYTES - 9) + f" {VISA[:4]} {VISA[4:8]} {VISA[8:12]} {VISA[12:]} "
        second = "y" * (2 * CHUNK_BYTES - len(first) - 3) + " SSN: 078051120 and " + f"{AMEX} end\n"
        text = first + second
        assert text[CHUNK_BYTES - 9 : CHUNK_BYTES + 3] == f" {VISA[:4]} {VISA[4:8]} {VISA[8]}"[:12]
        assert text.index("SS") < 2 * CHUNK_BYTES < text.index("078051120") + 9
        source = write(tmp_path / "big.txt", text)
        result = run("--json", source)
        assert result.exit_code == 0
        output = (tmp_path / "big.txt.redacted").read_text()
        assert output == mask_whole_text(text).text
        assert "**** **** **** 4242" in output
        assert "SSN: *********" in output
        assert VISA[:8] not in output.replace("*", "")

    def test_utf8_characters_split_across_chunks_are_decoded_whole(self, tmp_path: Path) -> None:
        """A multi-byte character cut by the chunk boundary comes back intact."""
        text = "a" * (CHUNK_BYTES - 1) + "é" + f" {VISA}"
        source = write(tmp_path / "utf8.txt", text)
        assert run(source).exit_code == 0
        assert (tmp_path / "utf8.txt.redacted").read_text(encoding="utf-8") == "a" * (
            CHUNK_BYTES - 1
        ) + "é **** **** **** 4242"


class TestOverwriting:
    def test_an_existing_output_is_refused_without_force(self, tmp_path: Path) -> None:
        """Nothing is written when an output exists, for any file; --force replaces it."""
        first = write(tmp_path / "a.txt", TRANSCRIPT)
        second = write(tmp_path / "b.txt", TRANSCRIPT)
        existing = write(tmp_path / "b.txt.redacted", "keep me")
        refused = run(first, second)
        assert refused.exit_code == 1
        assert "already exists; use --force" in refused.output
        assert not (tmp_path / "a.txt.redacted").exists()
        assert existing.read_text() == "keep me"
        assert run("--force", first, second).exit_code == 0
        assert existing.read_bytes() == MASKED.encode()
        assert leftovers(tmp_path) == []

    def test_output_directory(self, tmp_path: Path) -> None:
        """--output DIR writes each copy there under its own name; a missing directory or a name clash is refused."""
        out = tmp_path / "clean"
        out.mkdir()
        (tmp_path / "x").mkdir()
        source = write(tmp_path / "mail.txt", TRANSCRIPT)
        clash = write(tmp_path / "x" / "mail.txt", TRANSCRIPT)
        assert run("--output", out, source).exit_code == 0
        assert (out / "mail.txt").read_bytes() == MASKED.encode()
        assert "no such directory" in run("--output", tmp_path / "nope", source).output
        assert "same output" in run("--force", "--output", out, source, clash).output
        assert "over itself" in run("--output", tmp_path, source).output

    def test_in_place_replaces_the_file_keeping_its_mode(self, tmp_path: Path) -> None:
        """--in-place swaps in the redacted copy by rename; the file keeps its permissions; no temp file is left."""
        source = write(tmp_path / "mail.txt", TRANSCRIPT)
        source.chmod(0o640)
        before = source.stat().st_ino
        result = run("--in-place", source)
        assert result.exit_code == 0
        assert source.read_bytes() == MASKED.encode()
        assert stat.S_IMODE(source.stat().st_mode) == 0o640
        assert source.stat().st_ino != before  # a new file renamed over the old one
        assert leftovers(tmp_path) == []
        assert "--in-place or --output" in run("--in-place", "--output", tmp_path, source).output

    def test_in_place_through_a_symlink_redacts_its_target(self, tmp_path: Path) -> None:
        """A symlink stays a symlink; the file it points at is redacted."""
        target = write(tmp_path / "real.txt", TRANSCRIPT)
        link = tmp_path / "link.txt"
        link.symlink_to(target)
        assert run("--in-place", link).exit_code == 0
        assert link.is_symlink()
        assert target.read_bytes() == MASKED.encode()

    def test_in_place_refuses_a_file_with_other_hard_links(self, tmp_path: Path) -> None:
        """Another hard link would keep the unredacted text, so --in-place refuses."""
        source = write(tmp_path / "mail.txt", TRANSCRIPT)
        os.link(source, tmp_path / "alias.txt")
        result = run("--in-place", source)
        assert result.exit_code == 1
        assert "hard links" in result.output
        assert source.read_bytes() == TRANSCRIPT.encode()


class TestFailures:
    def test_a_failure_midway_leaves_no_partial_output(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """The disk fills while the second file is written: the first is complete, the second absent, no temp file."""
        first = write(tmp_path / "a.txt", TRANSCRIPT)
        second = write(tmp_path / "b.txt", TRANSCRIPT)
        real_fsync = os.fsync
        calls = 0

        def disk_full_on_second_file(descriptor: int) -> None:
            nonlocal calls
            calls += 1
            if calls == 3:  # a.txt: temp file, then its directory; b.txt: its temp file
                raise OSError(28, "No space left on device")
            real_fsync(descriptor)

        monkeypatch.setattr(os, "fsync", disk_full_on_second_file)
        result = CliRunner().invoke(cli, ["redact", str(first), str(second)])
        assert result.exit_code == 1
        assert "No space left on device" in result.output
        assert (tmp_path / "a.txt.redacted").read_bytes() == MASKED.encode()
        assert not (tmp_path / "b.txt.redacted").exists()
        assert leftovers(tmp_path) == []
        assert "1 file: 2 card numbers and 1 SSN masked" in result.stderr

    def test_a_missing_file_is_named(self, tmp_path: Path) -> None:
        """An input that does not exist is one clear error, and nothing is written."""
        good = write(tmp_path / "a.txt", TRANSCRIPT)
        result = run(good, tmp_path / "missing.txt")
        assert result.exit_code == 1
        assert "missing.txt: no such file" in result.output
        assert not (tmp_path / "a.txt.redacted").exists()


@pytest.mark.slow
class TestInstalledProgram:
    def test_a_large_file_through_the_real_command(self, tmp_path: Path) -> None:
        """`cardvault redact` as a process at a terminal: a ~5 MB export with a card at every chunk boundary."""
        line = "[12:00] agent: thanks, noted. order 20240115, phone 502-555-0134\n"
        body = line * (5 * CHUNK_BYTES // len(line))
        pieces = []
        position = 0
        for boundary in range(CHUNK_BYTES, len(body), CHUNK_BYTES):
            pieces.append(body[position : boundary - 8])
            pieces.append(f" {VISA} ")
            position = boundary - 8
        pieces.append(body[position:])
        text = "".join(pieces)
        source = write(tmp_path / "export.mbox", text)
        done = run_cli_with_tty_stderr("redact", source, cwd=tmp_path).assert_ok()
        assert "4 card numbers" in done.stdout
        assert "redacting" in done.stderr
        assert "100%" in done.stderr  # the progress bar, drawn on the terminal
        output = (tmp_path / "export.mbox.redacted").read_text()
        assert output == mask_whole_text(text).text
        assert VISA not in output
