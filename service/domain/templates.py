"""Forward-proxy body templates: find ``{{ tok_….number }}`` references, check them, render them safely.

An agency's backend holds tokens, never cards; when it needs a card to reach a
processor the vault does not speak natively, it sends ``POST /v1/forward`` with
a body that *refers* to card fields and the vault fills them in.  Filling in
is where injection lives, so this module owns it, free of I/O:

* **Syntax.**  A reference is ``{{`` token id ``.`` field ``}}``, spaces, tabs
  and newlines allowed inside the braces; the token id is opaque (``tok_`` + 24)
  or pan-shaped (12-19 digits); the field is ``number``, ``exp_month``,
  ``exp_year``, ``cvc`` or ``name``.  Any other ``{{ … }}`` and any ``{{`` left
  without its ``}}`` is an error, so a typo never goes out as literal text
  carrying a token id.  A lone ``}}`` is ordinary text (JSON has plenty).
* **Escaping** follows the Content-Type the agency sends: JSON string escaping
  for ``application/json`` and ``*+json``, percent-encoding (``+`` for space)
  for ``application/x-www-form-urlencoded``, XML character escaping for
  ``application/xml``, ``text/xml`` and ``*+xml``; anything else is inserted
  verbatim, but a value with a control character is refused there rather
  than allowed to break lines.
* **No template syntax survives.**  Substitution is one pass, values are never
  re-read, and no escaping ever emits a brace from a value (JSON writes
  ``\\u007b``/``\\u007d``, form ``%7B``/``%7D``, XML ``&#123;``/``&#125;``, verbatim
  refuses braces), so a cardholder name cannot smuggle a reference to another
  token, neither into this render nor into a templating proxy downstream.

Errors (``TemplateError``) carry a stable ``code`` and, when a token is at fault,
its id; their messages never contain a value.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote_plus

MAX_REFERENCES: Final = 100
MAX_TOKENS: Final = 10

TOKEN_ID: Final = r"tok_[A-Za-z0-9_-]{24}|[0-9]{12,19}"  # noqa: S105 - a pattern, not a secret
# One block between double braces; no brace inside, bounded so scanning stays linear.
_BLOCK: Final = re.compile(r"\{\{(?P<inner>[^{}]{0,200})\}\}")
_WHITESPACE: Final = "[ \t\r\n]*"
_INNER: Final = re.compile(
    rf"{_WHITESPACE}(?P<token>{TOKEN_ID})\.(?P<field>[A-Za-z_]+){_WHITESPACE}",
)
#: A complete reference anywhere in a text: what must never survive rendering.
REFERENCE_PATTERN: Final = re.compile(rf"\{{\{{{_WHITESPACE}(?:{TOKEN_ID})\.[A-Za-z_]+{_WHITESPACE}\}}\}}")

# C0 controls, DEL, C1 controls, the Unicode line and paragraph separators, and lone surrogates.
_CONTROL: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_XML_UNREPRESENTABLE: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


class CardField(enum.StrEnum):
    NUMBER = "number"
    EXP_MONTH = "exp_month"
    EXP_YEAR = "exp_year"
    CVC = "cvc"
    NAME = "name"


class Escaping(enum.StrEnum):
    JSON = "json"
    FORM = "form"
    XML = "xml"
    VERBATIM = "verbatim"


class TemplateError(ValueError):
    """A template or a value that cannot be rendered; ``code`` is the API's problem code."""

    def __init__(self, code: str, message: str, *, token_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.token_id = token_id


@dataclass(frozen=True)
class Reference:
    """One ``{{ token.field }}`` in a template."""

    token_id: str
    field: CardField


Piece = str | Reference


@dataclass(frozen=True)
class Template:
    """A parsed body: literal text and references, in order."""

    pieces: tuple[Piece, ...]

    @property
    def references(self) -> tuple[Reference, ...]:
        return tuple(p for p in self.pieces if isinstance(p, Reference))

    @property
    def token_ids(self) -> tuple[str, ...]:
        """Every referenced token once, in order of first appearance."""
        return tuple(dict.fromkeys(r.token_id for r in self.references))

    @property
    def cvc_token_ids(self) -> tuple[str, ...]:
        """Tokens whose CVC the body uses (and the forward will therefore take)."""
        return tuple(dict.fromkeys(r.token_id for r in self.references if r.field is CardField.CVC))


def parse_template(text: str) -> Template:
    """Split ``text`` into literal pieces and references, or raise ``TemplateError`` (``template_invalid``)."""
    pieces: list[Piece] = []
    position = 0
    for block in _BLOCK.finditer(text):
        literal = text[position : block.start()]
        _no_open_braces(literal, position)
        pieces.append(literal)
        pieces.append(_reference(block.group("inner"), block.start()))
        position = block.end()
    tail = text[position:]
    _no_open_braces(tail, position)
    pieces.append(tail)
    template = Template(tuple(p for p in pieces if p != ""))
    if len(template.references) > MAX_REFERENCES:
        raise TemplateError("template_invalid", f"A body may hold at most {MAX_REFERENCES} references")
    if len(template.token_ids) > MAX_TOKENS:
        raise TemplateError("template_invalid", f"A body may refer to at most {MAX_TOKENS} tokens")
    return template


def _no_open_braces(literal: str, offset: int) -> None:
    found = literal.find("{{")
    if found >= 0:
        raise TemplateError(
            "template_invalid", f"'{{{{' at character {offset + found} does not start a valid token reference"
        )


def _reference(inner: str, offset: int) -> Reference:
    match = _INNER.fullmatch(inner)
    if match is None:
        raise TemplateError(
            "template_invalid",
            f"The reference at character {offset} is not {{{{ <token id>.<field> }}}}",
        )
    try:
        field = CardField(match.group("field"))
    except ValueError:
        raise TemplateError(
            "template_invalid",
            f"The reference at character {offset} names an unknown field; "
            f"use one of {', '.join(f.value for f in CardField)}",
            token_id=match.group("token"),
        ) from None
    return Reference(match.group("token"), field)


# --- escaping ----------------------------------------------------------------


def escaping_for(content_type: str | None) -> Escaping:
    """How values are escaped for a request body of this Content-Type (parameters and case ignored)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        return Escaping.JSON
    if media == "application/x-www-form-urlencoded":
        return Escaping.FORM
    if media in ("application/xml", "text/xml") or media.endswith("+xml"):
        return Escaping.XML
    return Escaping.VERBATIM


def escape(value: str, escaping: Escaping) -> str:
    """``value`` ready to stand in for a reference; ``ValueError`` (no value in its message) when it cannot."""
    if escaping is Escaping.JSON:
        # Inside a JSON string literal; ensure_ascii also escapes U+2028/U+2029 and lone surrogates.
        return json.dumps(value, ensure_ascii=True)[1:-1].replace("{", "\\u007b").replace("}", "\\u007d")
    if escaping is Escaping.FORM:
        try:
            return quote_plus(value, safe="", encoding="utf-8", errors="strict")
        except UnicodeEncodeError:
            raise ValueError("holds a character UTF-8 cannot carry") from None
    if escaping is Escaping.XML:
        if _XML_UNREPRESENTABLE.search(value):
            raise ValueError("holds a character XML 1.0 cannot carry")
        return "".join(_XML_ENTITIES.get(ch, ch) for ch in value)
    if _CONTROL.search(value):
        raise ValueError("holds a control character")
    if "{" in value or "}" in value:
        raise ValueError("holds a brace")
    return value


_XML_ENTITIES: Final = {
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
    '"': "&quot;",
    "'": "&apos;",
    "{": "&#123;",
    "}": "&#125;",
    "\t": "&#9;",
    "\n": "&#10;",
    "\r": "&#13;",
}


def render(template: Template, values: Mapping[Reference, str | None], escaping: Escaping) -> str:
    """The body with every reference replaced by its escaped value.

    ``values[ref]`` is None when the card has no such value (a token without a
    name): ``template_value_missing``.  A value the escaping cannot carry is
    ``template_value_unsafe``.  Both name the token, never the value.
    """
    escaped: dict[Reference, str] = {}
    out: list[str] = []
    for piece in template.pieces:
        if isinstance(piece, str):
            out.append(piece)
            continue
        if piece not in escaped:
            escaped[piece] = _escaped_value(piece, values.get(piece), escaping)
        out.append(escaped[piece])
    return "".join(out)


def _escaped_value(reference: Reference, value: str | None, escaping: Escaping) -> str:
    where = f"{reference.token_id}.{reference.field}"
    if value is None:
        raise TemplateError("template_value_missing", f"{where} has no value", token_id=reference.token_id)
    try:
        return escape(value, escaping)
    except ValueError as exc:
        raise TemplateError(
            "template_value_unsafe",
            f"{where} {exc} and cannot be sent as {escaping} (set a Content-Type that can escape it)",
            token_id=reference.token_id,
        ) from None
