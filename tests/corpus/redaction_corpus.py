"""The labelled corpus for measuring free-text redaction: templates on disk, numbers made at run time.

``tests/corpus/redaction/*.txt`` hold realistic documents (chat transcripts,
e-mails, web-form comments) separated by lines of ``~~~``.  Numbers are written
as markers, ``[[kind:argument]]``, that ``render`` replaces with a value and
records where it put it, so the labels can never drift from the text:

positives
    ``[[card:4242 4242 4242 4242]]``  a public test card, written as given;
    ``[[gencard:BRAND:FORMAT]]``      a card made now (BRAND: visa, mastercard, amex, discover,
                                      diners, jcb, unionpay, maestro, or ``any`` for a Luhn-valid
                                      number no brand issues; FORMAT below);
    ``[[ssn:078-05-1120]]``           an SSN written as given;
    ``[[genssn:STYLE]]``              an issuable SSN made now: ``dash``, ``space``, ``bare`` (put it after
                                      a keyword), or ``dots`` (123.45.6789), a style the finder is known
                                      to miss, as it misses an SSN run into a house number (the
                                      corpus has both, so the SSN figures say so).
decoys (labelled too, so the report can say which kind fooled the finder)
    ``[[order:N]]`` N random digits, ``[[phone]]``, ``[[isbn13]]``, ``[[isbn10]]``, ``[[date]]``,
    ``[[usps]]``, ``[[ups]]``, ``[[fedex]]``, ``[[invoice]]``, ``[[amount]]``, ``[[zip]]``,
    ``[[routing]]``, ``[[account]]``, ``[[ssnlike]]`` (SSN-shaped, never issued), ``[[claim]]``
    (a claim number shaped AAA-GG-SSSS).

Card formats: ``plain``, ``spaces``/``dashes``/``dots`` (fours from the left), ``amex`` (4-6-5 with
spaces), ``amexdash`` (4-6-5 dashes), ``mixed`` (fours, random separators), ``pairs`` (twos with
spaces).

Only public test card numbers may be written in the files (a test checks it); every other
number exists only in memory, from a seeded ``random.Random``, so the figures are reproducible.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.unit.domain import GENERATOR_PREFIXES, reference_luhn_valid, with_check_digit

CORPUS_DIR = Path(__file__).parent / "redaction"
DOCUMENT_SEPARATOR = re.compile(r"^~~~$", re.MULTILINE)
MARKER = re.compile(r"\[\[([a-z0-9]+)(?::([^\]]*))?\]\]")
POSITIVE_KINDS = {"card": "card", "gencard": "card", "ssn": "ssn", "genssn": "ssn"}


@dataclass(frozen=True)
class Label:
    """What was written at ``text[start:end]``: ``kind`` is card, ssn, or decoy:<name>."""

    kind: str
    start: int
    end: int


@dataclass(frozen=True)
class Document:
    source: str  # file name and document number
    text: str
    labels: tuple[Label, ...]


def templates() -> Iterator[tuple[str, str]]:
    """(where, template) for every document of every corpus file."""
    for path in sorted(CORPUS_DIR.glob("*.txt")):
        for index, template in enumerate(DOCUMENT_SEPARATOR.split(path.read_text(encoding="utf-8"))):
            if template.strip():
                yield f"{path.name}#{index + 1}", template.strip("\n") + "\n"


def documents(renders: int, seed: int = 2026) -> list[Document]:
    """Every template rendered ``renders`` times, each time with other numbers."""
    rng = random.Random(seed)
    return [render(where, template, rng) for _ in range(renders) for where, template in templates()]


def render(where: str, template: str, rng: random.Random) -> Document:
    pieces: list[str] = []
    labels: list[Label] = []
    position = 0
    length = 0
    for marker in MARKER.finditer(template):
        literal = template[position : marker.start()]
        pieces.append(literal)
        length += len(literal)
        kind, argument = marker.group(1), marker.group(2) or ""
        value = _GENERATORS[kind](argument, rng)
        labels.append(Label(POSITIVE_KINDS.get(kind, f"decoy:{kind}"), length, length + len(value)))
        pieces.append(value)
        length += len(value)
        position = marker.end()
    pieces.append(template[position:])
    return Document(where, "".join(pieces), tuple(labels))


# --- numbers ---------------------------------------------------------------------------------

_BRANDS: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
for _prefix, _lengths, _brand in GENERATOR_PREFIXES:
    _BRANDS.setdefault(_brand.value, []).append((_prefix, _lengths))
_UNBRANDED_PREFIXES = ("1", "7", "9", "0")  # no brand issues these: still card numbers to redact


def _digits(rng: random.Random, count: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(count))


def _card_number(brand: str, rng: random.Random) -> str:
    if brand == "any":
        prefix, lengths = rng.choice(_UNBRANDED_PREFIXES), tuple(range(12, 20))
    else:
        prefix, lengths = rng.choice(_BRANDS[brand])
    length = rng.choice(lengths)
    return with_check_digit(prefix + _digits(rng, length - len(prefix) - 1))


def _groups(number: str, sizes: list[int]) -> list[str]:
    groups, rest = [], number
    for size in sizes:
        if not rest:
            break
        groups.append(rest[:size])
        rest = rest[size:]
    return [*groups, rest] if rest else groups


def _written(number: str, style: str, rng: random.Random) -> str:
    fours = _groups(number, [4] * 5)
    if style == "plain":
        return number
    if style in ("spaces", "dashes", "dots"):
        return {"spaces": " ", "dashes": "-", "dots": "."}[style].join(fours)
    if style == "amex":
        return " ".join(_groups(number, [4, 6]))
    if style == "amexdash":
        return "-".join(_groups(number, [4, 6]))
    if style == "mixed":
        return "".join(g + rng.choice(" .-") for g in fours[:-1]) + fours[-1]
    if style == "pairs":
        return " ".join(_groups(number, [2] * 10))
    raise ValueError(f"unknown card format {style!r}")


def _gencard(argument: str, rng: random.Random) -> str:
    brand, _, style = argument.partition(":")
    return _written(_card_number(brand, rng), style or "plain", rng)


def _ssn_digits(rng: random.Random) -> str:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    return f"{area:03d}{rng.randint(1, 99):02d}{rng.randint(1, 9999):04d}"


def _genssn(style: str, rng: random.Random) -> str:
    digits = _ssn_digits(rng)
    if style == "bare":
        return digits
    separator = {"dash": "-", "space": " ", "dots": "."}[style]
    return separator.join((digits[:3], digits[3:5], digits[5:]))


def _phone(_: str, rng: random.Random) -> str:
    area, exchange, line = rng.randint(201, 989), rng.randint(200, 999), rng.randint(0, 9999)
    return rng.choice(
        [
            f"({area}) {exchange}-{line:04d}",
            f"{area}-{exchange}-{line:04d}",
            f"{area}.{exchange}.{line:04d}",
            f"+1 {area} {exchange} {line:04d}",
            f"1-{area}-{exchange}-{line:04d}",
        ]
    )


def _isbn13(_: str, rng: random.Random) -> str:
    body = "978" + _digits(rng, 9)
    check = (10 - sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body)) % 10) % 10
    full = body + str(check)
    return f"{full[:3]}-{full[3]}-{full[4:7]}-{full[7:12]}-{full[12]}"


def _isbn10(_: str, rng: random.Random) -> str:
    body = _digits(rng, 9)
    check = sum((10 - i) * int(d) for i, d in enumerate(body)) % 11
    last = "X" if (11 - check) % 11 == 10 else str((11 - check) % 11)
    return f"{body[0]}-{body[1:4]}-{body[4:9]}-{last}"


def _date(_: str, rng: random.Random) -> str:
    year, month, day = rng.randint(2019, 2031), rng.randint(1, 12), rng.randint(1, 28)
    return rng.choice([f"{year}-{month:02d}-{day:02d}", f"{month}/{day}/{year}", f"{month:02d}/{year % 100:02d}"])


def _usps(_: str, rng: random.Random) -> str:
    number = "9400" + _digits(rng, 18)
    return " ".join(_groups(number, [4] * 5))


def _ups(_: str, rng: random.Random) -> str:
    return "1Z" + "".join(rng.choice("0123456789ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(16))


def _fedex(_: str, rng: random.Random) -> str:
    number = _digits(rng, 12)
    return rng.choice([number, " ".join(_groups(number, [4, 4]))])


def _invoice(_: str, rng: random.Random) -> str:
    return rng.choice([f"INV-{rng.randint(2019, 2031)}-{_digits(rng, 12)}", _digits(rng, rng.randint(20, 24))])


def _amount(_: str, rng: random.Random) -> str:
    return f"${rng.randint(1, 99_999):,}.{rng.randint(0, 99):02d}"


def _zip(_: str, rng: random.Random) -> str:
    return f"{rng.randint(10000, 99999)}-{rng.randint(0, 9999):04d}"


def _routing(_: str, rng: random.Random) -> str:
    while True:
        digits = _digits(rng, 9)
        weights = (3, 7, 1) * 3
        if sum(int(d) * w for d, w in zip(digits, weights, strict=True)) % 10 == 0:
            return digits


def _ssnlike(_: str, rng: random.Random) -> str:
    area = rng.choice(["000", "666", f"9{rng.randint(0, 99):02d}"])
    return f"{area}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


def _claim(_: str, rng: random.Random) -> str:
    return f"{rng.randint(100, 899):03d}-{rng.randint(10, 99):02d}-{rng.randint(1000, 9999):04d}"


def _order(argument: str, rng: random.Random) -> str:
    count = int(argument or "8")
    return str(rng.randint(1, 9)) + _digits(rng, count - 1)


def _account(_: str, rng: random.Random) -> str:
    return _digits(rng, rng.randint(10, 12))


_GENERATORS: dict[str, Callable[[str, random.Random], str]] = {
    "card": lambda argument, _: argument,
    "gencard": _gencard,
    "ssn": lambda argument, _: argument,
    "genssn": _genssn,
    "order": _order,
    "phone": _phone,
    "isbn13": _isbn13,
    "isbn10": _isbn10,
    "date": _date,
    "usps": _usps,
    "ups": _ups,
    "fedex": _fedex,
    "invoice": _invoice,
    "amount": _amount,
    "zip": _zip,
    "routing": _routing,
    "ssnlike": _ssnlike,
    "claim": _claim,
    "account": _account,
}


def committed_card_like_numbers() -> set[str]:
    """Every Luhn-valid 12-19 digit window (whole groups) written literally in the corpus files."""
    found = set()
    for path in CORPUS_DIR.glob("*.txt"):
        for run in re.finditer(r"[0-9]+(?:[ .-][0-9]+)*", path.read_text(encoding="utf-8")):
            groups = re.split(r"[ .-]", run.group())
            for first in range(len(groups)):
                for last in range(first, len(groups)):
                    digits = "".join(groups[first : last + 1])
                    if 12 <= len(digits) <= 19 and reference_luhn_valid(digits):
                        found.add(digits)
    return found
