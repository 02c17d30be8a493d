"""Properties of the forward proxy's body templates (``service.domain.templates``).

``tests/unit/domain/test_templates.py`` already checks JSON and form round trips
and that no template syntax survives rendering; these add XML and verbatim
round trips, escaping on its own, and that parsing any text at all either
succeeds or fails with ``TemplateError``.
"""

from __future__ import annotations

import json
import string
import xml.etree.ElementTree as ET
from urllib.parse import unquote_plus

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from service.domain.templates import (
    REFERENCE_PATTERN,
    CardField,
    Escaping,
    Reference,
    Template,
    TemplateError,
    escape,
    parse_template,
    render,
)

from . import PROPERTIES

token_ids = st.one_of(
    st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=24, max_size=24).map(lambda s: "tok_" + s),
    st.text(alphabet=string.digits, min_size=12, max_size=19),
)
references = st.builds(Reference, token_ids, st.sampled_from(list(CardField)))
spacing = st.sampled_from(["", " ", "\t", "\n "])
valid_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
# What XML 1.0 can hold (the escaper refuses the rest).
xml_text = st.text(
    st.characters(exclude_categories=["Cs", "Cc"], exclude_characters="\ufffe\uffff") | st.sampled_from("\t\n"),
    max_size=40,
)
# What a verbatim body can hold: no control characters, no braces.
verbatim_text = st.text(
    st.characters(exclude_categories=["Cs", "Cc"], exclude_characters="{}\u2028\u2029\x7f"), max_size=40
)
literals = st.text(st.characters(exclude_characters="{}<>&", exclude_categories=["Cs", "Cc"]), max_size=20)


def written(reference: Reference, before: str = " ", after: str = " ") -> str:
    return "{{" + before + f"{reference.token_id}.{reference.field}" + after + "}}"


class TestEscaping:
    @PROPERTIES
    @given(st.text(max_size=60))
    def test_json_escaping_reads_back_exactly_and_never_emits_a_brace(self, value: str) -> None:
        """Inside quotes, the escaped value is a JSON string equal to the value (lone surrogates included)."""
        escaped = escape(value, Escaping.JSON)
        assert "{" not in escaped
        assert "}" not in escaped
        assert json.loads(f'"{escaped}"') == value

    @PROPERTIES
    @given(valid_text)
    def test_form_escaping_reads_back_exactly(self, value: str) -> None:
        """Percent-encoding leaves nothing but unreserved characters, and decodes to the value."""
        escaped = escape(value, Escaping.FORM)
        assert set(escaped) <= set(string.ascii_letters + string.digits + "%+-._~")
        assert unquote_plus(escaped) == value


class TestRoundTrips:
    @PROPERTIES
    @given(st.lists(st.tuples(references, xml_text), min_size=1, max_size=5, unique_by=lambda p: p[0]))
    def test_xml_bodies_parse_back_to_exactly_the_values(self, entries: list[tuple[Reference, str]]) -> None:
        """Each value rendered into an XML element (and an attribute) parses back unchanged."""
        body = "<card>" + "".join(f'<v i="{written(r)}">{written(r)}</v>' for r, _ in entries) + "</card>"
        values = dict(entries)
        rendered = render(parse_template(body), values, Escaping.XML)
        elements = ET.fromstring(rendered).findall("v")
        assert [(e.text or "", e.get("i")) for e in elements] == [(v, v) for _, v in entries]

    @PROPERTIES
    @given(st.lists(st.tuples(literals, references, spacing, spacing, verbatim_text), max_size=5), literals)
    def test_verbatim_bodies_are_the_literals_and_values_in_order(
        self, parts: list[tuple[str, Reference, str, str, str]], tail: str
    ) -> None:
        """Without escaping, rendering is concatenation: literal, value, literal, ... exactly."""
        chosen = {r: value for _, r, _, _, value in parts}
        body = "".join(literal + written(r, a, b) for literal, r, a, b, _ in parts) + tail
        expected = "".join(literal + chosen[r] for literal, r, _, _, _ in parts) + tail
        assert render(parse_template(body), chosen, Escaping.VERBATIM) == expected

    @PROPERTIES
    @given(st.text(st.characters(exclude_characters="{", exclude_categories=["Cs"]), max_size=80))
    def test_text_without_an_opening_brace_pair_is_all_literal(self, text: str) -> None:
        """No "{{", no reference: the template is the text, rendered as it is under every escaping."""
        template = parse_template(text)
        assert template.references == ()
        for escaping in Escaping:
            assert render(template, {}, escaping) == text


class TestParsing:
    @PROPERTIES
    @given(st.lists(st.sampled_from([*"{}. \tab01_", "tok_", "tok_" + "A" * 24, "4" * 16, "number"]), max_size=30))
    def test_any_text_parses_or_is_refused_as_template_invalid(self, soup: list[str]) -> None:
        """Brace soup never crashes the parser: a Template, or TemplateError template_invalid."""
        text = "".join(soup)
        try:
            template = parse_template(text)
        except TemplateError as error:
            refused = error
        else:
            refused = None
        if refused is not None:
            assert refused.code == "template_invalid"
            return
        assert isinstance(template, Template)
        literal = "".join(p for p in template.pieces if isinstance(p, str))
        assert "{{" not in literal

    @PROPERTIES
    @given(st.lists(st.tuples(literals, references), min_size=1, max_size=6), st.data())
    def test_a_reference_with_an_unknown_field_is_refused_naming_its_token(
        self, parts: list[tuple[str, Reference]], data: st.DataObject
    ) -> None:
        """Rename one field to something unknown: the whole body is refused, naming that token."""
        index = data.draw(st.integers(0, len(parts) - 1))
        bad_field = data.draw(st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=10))
        assume(bad_field not in {f.value for f in CardField})
        pieces = [literal + written(r) for literal, r in parts]
        literal, reference = parts[index]
        pieces[index] = literal + "{{ " + reference.token_id + "." + bad_field + " }}"
        with pytest.raises(TemplateError) as raised:
            parse_template("".join(pieces))
        assert raised.value.code == "template_invalid"
        assert raised.value.token_id == reference.token_id

    @PROPERTIES
    @given(st.lists(st.tuples(literals, references, spacing, spacing), max_size=8), literals)
    def test_every_reference_written_is_found_once_in_order(
        self, parts: list[tuple[str, Reference, str, str]], tail: str
    ) -> None:
        """The parsed references are exactly the written ones; the literal pieces are the text between them."""
        body = "".join(literal + written(r, a, b) for literal, r, a, b in parts) + tail
        template = parse_template(body)
        assert template.references == tuple(r for _, r, _, _ in parts)
        assert "".join(p for p in template.pieces if isinstance(p, str)) == "".join(lit for lit, *_ in parts) + tail
        assert len(REFERENCE_PATTERN.findall(body)) == len(parts)
