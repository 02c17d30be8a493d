"""`cardvault redact FILE...`: mask card numbers and SSNs in transcripts and mail exports on disk.

Agencies export chat transcripts and mailboxes that customers typed card
numbers into; this scrubs such files before they are stored or shared.  It
needs no Redis and no keys: it masks (``**** **** **** 4242``, ``***-**-****``)
exactly as ``POST /v1/redact`` does in mask mode.  Tokenize mode is API-only:
a token is only useful to the agency's backend, which can call the API, and
the command would otherwise need an agency's keys and the vault's Redis.

* **Streaming.**  Files are read in ``CHUNK_BYTES`` pieces through
  ``StreamRedactor``, which holds back only the undecided tail of a digit run,
  so a number straddling two chunks is masked like any other and memory stays
  flat whatever the size of the file.
* **Bytes are kept.**  Input is decoded as UTF-8 with ``surrogateescape``:
  bytes that are not UTF-8 (a Latin-1 mail, a stray binary attachment line)
  come back unchanged, and so do line endings.  Digits are ASCII, so numbers are
  found in any ASCII-compatible encoding.  UTF-16/32 text (a byte-order mark, or
  NUL bytes) would hide its digits, so such files are refused with a message.
* **Nothing half-written, nothing overwritten by surprise.**  Each output is
  written to a temporary file beside it, flushed to disk, then linked into
  place: an existing output is refused unless ``--force`` (then replaced
  atomically), and ``--in-place`` swaps the original for its redacted copy in
  one rename.  Every output is checked before any file is processed.
* **No numbers on the terminal.**  The summary counts what was masked; file
  names are shown with any card number in them redacted.
"""

from __future__ import annotations

import codecs
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

import click

from service.domain.redaction import redact_card_numbers
from service.domain.stream_redaction import StreamRedactor
from service.domain.text_scan import FindingKind
from service.errors import OperatorError

CHUNK_BYTES: Final = 1024 * 1024
SNIFF_BYTES: Final = 8192
DEFAULT_SUFFIX: Final = ".redacted"
_WIDE_BOMS: Final = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path


@dataclass(frozen=True)
class Outcome:
    job: Job
    cards: int
    ssns: int
    size: int


@click.command("redact")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--output",
    "-o",
    "output_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write each redacted copy into this directory, under the file's own name.",
)
@click.option(
    "--in-place",
    is_flag=True,
    help="Replace each file by its redacted copy (one atomic rename; the old bytes are not wiped from the disk).",
)
@click.option(
    "--suffix",
    default=DEFAULT_SUFFIX,
    show_default=True,
    help="Added to each file name when neither --output nor --in-place is given.",
)
@click.option("--force", "-f", is_flag=True, help="Overwrite outputs that already exist.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def redact(
    files: Sequence[Path],
    output_dir: Path | None,
    in_place: bool,
    suffix: str,
    force: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Mask card numbers and US Social Security numbers in text files (transcripts, mail exports).

    Each FILE is streamed (any size) to FILE.redacted, or into --output DIR, or
    over itself with --in-place. Cards become **** **** **** 4242 and SSNs
    ***-**-****, as POST /v1/redact does in mask mode (tokenize mode is API-only).
    The summary counts what was masked and never shows a number.
    """
    jobs = plan(files, output_dir=output_dir, in_place=in_place, suffix=suffix, force=force)
    for job in jobs:
        refuse_wide_or_binary(job.source)
    total = sum(job.source.stat().st_size for job in jobs)
    outcomes: list[Outcome] = []
    try:
        with click.progressbar(
            length=total, label="redacting", file=click.get_text_stream("stderr"), hidden=quiet
        ) as progress:
            for job in jobs:
                outcomes.append(redact_file(job, replace=force or in_place, advance=progress.update))
    except BaseException:
        if outcomes:  # those are complete; the failed one left nothing behind
            click.echo(_summary_lines(outcomes), err=True)
        raise
    click.echo(_summary_json(outcomes) if as_json else _summary_lines(outcomes))


def plan(files: Sequence[Path], *, output_dir: Path | None, in_place: bool, suffix: str, force: bool) -> list[Job]:
    """Where each file goes; refused as a whole (nothing done) if any output is unusable."""
    if in_place and output_dir is not None:
        raise OperatorError("give --in-place or --output, not both")
    if not in_place and output_dir is None and not suffix:
        raise OperatorError("--suffix may not be empty: the copy would overwrite its input (use --in-place)")
    if output_dir is not None and not output_dir.is_dir():
        raise OperatorError(f"{shown(output_dir)}: no such directory")
    jobs: list[Job] = []
    for given in files:
        source = given.resolve() if in_place else given  # --in-place rewrites the file a symlink points at
        if not source.is_file():
            raise OperatorError(f"{shown(given)}: no such file")
        if in_place:
            target = source
            if source.stat().st_nlink > 1:
                raise OperatorError(
                    f"{shown(given)} has other hard links, which would keep the unredacted text; "
                    "redact to a copy instead"
                )
        elif output_dir is not None:
            target = output_dir / source.name
        else:
            target = source.with_name(source.name + suffix)
        jobs.append(Job(source, target))
    _refuse_clashes(jobs, in_place=in_place, force=force)
    return jobs


def _refuse_clashes(jobs: Sequence[Job], *, in_place: bool, force: bool) -> None:
    targets = [job.target.resolve() for job in jobs]
    if len(set(targets)) != len(targets):
        raise OperatorError("two inputs would be written to the same output; give them different names")
    if in_place:
        return
    for job, target in zip(jobs, targets, strict=True):
        if target == job.source.resolve():
            raise OperatorError(f"{shown(job.source)} would be written over itself; use --in-place for that")
    existing = [job.target for job in jobs if job.target.exists()]
    if existing and not force:
        names = ", ".join(shown(path) for path in existing)
        raise OperatorError(f"{names} already exist{'s' if len(existing) == 1 else ''}; use --force to overwrite")


def refuse_wide_or_binary(path: Path) -> None:
    """UTF-16/32 (or binary) input would hide its digits between NUL bytes: refuse it with what to do."""
    with path.open("rb") as handle:
        head = handle.read(SNIFF_BYTES)
    if head.startswith(_WIDE_BOMS) or b"\x00" in head:
        raise OperatorError(
            f"{shown(path)} looks like UTF-16/UTF-32 or binary data (NUL bytes); "
            "convert it to UTF-8 first (iconv -f UTF-16 -t UTF-8)"
        )


def redact_file(job: Job, *, replace: bool, advance: Callable[[int], object] = lambda _: None) -> Outcome:
    """Stream ``job.source`` through the redactor into ``job.target``, atomically."""
    redactor = StreamRedactor()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
    size = 0
    with job.source.open("rb") as source, _atomic_output(job, replace=replace) as target:
        while chunk := source.read(CHUNK_BYTES):
            size += len(chunk)
            target.write(_encoded(redactor.feed(decoder.decode(chunk)).text))
            advance(len(chunk))
        target.write(_encoded(redactor.feed(decoder.decode(b"", final=True)).text + redactor.finish().text))
    return Outcome(job, redactor.counts[FindingKind.CARD], redactor.counts[FindingKind.SSN], size)


def _encoded(text: str) -> bytes:
    return text.encode("utf-8", errors="surrogateescape")


@contextmanager
def _atomic_output(job: Job, *, replace: bool) -> Iterator[IO[bytes]]:
    """A temporary file beside the target, put in place only when everything was written and synced."""
    target = job.target
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed below, on every path
        mode="wb", dir=target.parent, prefix=f".{target.name}.", suffix=".tmp", delete=False
    )
    temporary = Path(handle.name)
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, job.source.stat().st_mode & 0o777)
        if replace:
            os.replace(temporary, target)
        else:
            os.link(temporary, target)  # fails if the target appeared meanwhile: never overwrite by surprise
            temporary.unlink()
        _sync_directory(target.parent)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _sync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def shown(path: Path) -> str:
    """A path fit for the terminal: a card number in a file name is redacted too."""
    return redact_card_numbers(str(path))


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _summary_lines(outcomes: Sequence[Outcome]) -> str:
    lines = [
        f"{shown(o.job.source)} -> {shown(o.job.target)}: {_plural(o.cards, 'card number')}, {_plural(o.ssns, 'SSN')}"
        for o in outcomes
    ]
    cards, ssns = sum(o.cards for o in outcomes), sum(o.ssns for o in outcomes)
    lines.append(f"{_plural(len(outcomes), 'file')}: {_plural(cards, 'card number')} and {_plural(ssns, 'SSN')} masked")
    return "\n".join(lines)


def _summary_json(outcomes: Sequence[Outcome]) -> str:
    return json.dumps(
        {
            "files": [
                {
                    "input": shown(o.job.source),
                    "output": shown(o.job.target),
                    "bytes": o.size,
                    "cards": o.cards,
                    "ssns": o.ssns,
                }
                for o in outcomes
            ],
            "cards": sum(o.cards for o in outcomes),
            "ssns": sum(o.ssns for o in outcomes),
        },
        indent=2,
    )
