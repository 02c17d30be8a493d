"""Forward body templates: parsing references, escaping by Content-Type, and rendering that cannot be subverted."""

from __future__ import annotations

import json
import string
from urllib.parse import parse_qs

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain.templates import (
    MAX_TOKENS,
    REFERENCE_PATTERN,
    CardField,
    Escaping,
    Reference,
    TemplateError,
    escape,
    escaping_for,
    parse_template,
    render,
)

TOKEN = "tok_" + "a1B2c3D4e5F6g7H8i9J0k-_Z"
OTHER = "tok_" + "Z" * 24
PAN_SHAPED = "4242000000004241"


def ref(field: CardField, token: str = TOKEN) -> Reference:
    return Reference(token, field)


def braces(token_id: str, field: str, pad: str = " ") -> str:
    """``{{ token.field }}`` as an agency writes it."""
    return "{{" + pad + token_id + "." + field + pad + "}}"


token_ids = st.one_of(
    st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=24, max_size=24).map(lambda s: "tok_" + s),
    st.text(alphabet=string.digits, min_size=12, max_size=19),
)
fields = st.sampled_from(list(CardField))
references = st.builds(Reference, token_ids, fields)
spacing = st.sampled_from(["", " ", "  ", "\t", "\n ", " \r\n"])
# Literal text around references: anything without braces (a template's own braces are tested apart).
literals = st.text(st.characters(exclude_characters="{}", exclude_categories=["Cs"]), max_size=30)
any_values = st.text(st.characters(exclude_categories=[]), max_size=40)


def reference_text(reference: Reference, before: str = " ", after: str = " ") -> str:
    return "{{" + before + f"{reference.token_id}.{reference.field}" + after + "}}"


class TestParsing:
    def test_references_are_found_with_or_without_spaces(self) -> None:
        """Spaces, tabs and newlines inside the braces are optional."""
        template = parse_template(f"a{{{{{TOKEN}.number}}}}b{{{{ \t{TOKEN}.cvc\n }}}}c")
        assert template.pieces == ("a", ref(CardField.NUMBER), "b", ref(CardField.CVC), "c")

    def test_pan_shaped_ids_are_token_ids(self) -> None:
        """A 12-19 digit id is a reference like an opaque one."""
        assert parse_template(braces(PAN_SHAPED, "exp_year")).references == (ref(CardField.EXP_YEAR, PAN_SHAPED),)

    def test_tokens_and_cvc_tokens_are_listed_once_in_order(self) -> None:
        """token_ids and cvc_token_ids deduplicate and keep first appearance."""
        body = " ".join(
            braces(t, f, "") for t, f in [(OTHER, "cvc"), (TOKEN, "number"), (OTHER, "name"), (OTHER, "cvc")]
        )
        template = parse_template(body)
        assert template.token_ids == (OTHER, TOKEN)
        assert template.cvc_token_ids == (OTHER,)

    def test_text_without_references_is_one_piece(self) -> None:
        """JSON with closing double braces is ordinary text."""
        assert parse_template('{"a": {"b": 1}}').pieces == ('{"a": {"b": 1}}',)

    @pytest.mark.parametrize(
        "body",
        [
            braces(TOKEN, "pin"),
            "{{ " + TOKEN + " }}",
            "{{ tok_short.number }}",
            "{{ 4242.number }}",
            braces(TOKEN, "number")[:-1],
            braces(TOKEN, "number")[:-2],
            "{{}}",
            "{{ number }}",
            braces(TOKEN, "number | upper"),
            braces(TOKEN, " number").replace(".", " ."),
            "text {{",
        ],
    )
    def test_anything_else_in_double_braces_is_refused(self, body: str) -> None:
        """A typo is an error, never literal text that goes out with a token id in it."""
        with pytest.raises(TemplateError) as caught:
            parse_template(body)
        assert caught.value.code == "template_invalid"

    def test_error_messages_do_not_echo_the_body(self) -> None:
        """A card number pasted between braces is not repeated in the error."""
        with pytest.raises(TemplateError) as caught:
            parse_template("{{ 4242424242424242 }}")
        assert "4242" not in str(caught.value)

    def test_too_many_tokens_are_refused(self) -> None:
        """A body may refer to at most MAX_TOKENS tokens."""
        body = " ".join(braces("tok_" + f"{i:024d}", "number") for i in range(MAX_TOKENS + 1))
        with pytest.raises(TemplateError, match="at most"):
            parse_template(body)

    @given(st.lists(st.tuples(literals, references, spacing, spacing), max_size=6), literals)
    def test_parsing_finds_exactly_the_references_written(
        self, parts: list[tuple[str, Reference, str, str]], tail: str
    ) -> None:
        """Whatever the literal text around them, the references come back in order."""
        body = "".join(lit + reference_text(r, a, b) for lit, r, a, b in parts) + tail
        assert parse_template(body).references == tuple(r for _, r, _, _ in parts)


class TestEscaping:
    @pytest.mark.parametrize(
        ("content_type", "expected"),
        [
            ("application/json", Escaping.JSON),
            ("Application/JSON; charset=utf-8", Escaping.JSON),
            ("application/vnd.api+json", Escaping.JSON),
            ("application/x-www-form-urlencoded", Escaping.FORM),
            ("application/xml", Escaping.XML),
            ("text/xml; charset=iso-8859-1", Escaping.XML),
            ("application/soap+xml", Escaping.XML),
            ("text/plain", Escaping.VERBATIM),
            (None, Escaping.VERBATIM),
            ("application/jsonx", Escaping.VERBATIM),
        ],
    )
    def test_the_content_type_chooses_the_escaping(self, content_type: str | None, expected: Escaping) -> None:
        """Media type only, case-insensitive, parameters ignored."""
        assert escaping_for(content_type) is expected

    def test_json_escaping_neutralises_quotes_and_braces(self) -> None:
        """A value cannot end its JSON string or form a brace."""
        assert escape('a"b\\c\n{x}', Escaping.JSON) == 'a\\"b\\\\c\\n\\u007bx\\u007d'

    def test_form_escaping_encodes_every_delimiter(self) -> None:
        """& = + % and space cannot split a form field."""
        assert escape("a&b=c+d%e f", Escaping.FORM) == "a%26b%3Dc%2Bd%25e+f"

    def test_xml_escaping_uses_entities(self) -> None:
        """Markup characters become entities; a control character XML cannot hold is refused."""
        assert escape("<a href='x'>&</a>", Escaping.XML) == "&lt;a href=&apos;x&apos;&gt;&amp;&lt;/a&gt;"
        with pytest.raises(ValueError, match="XML"):
            escape("a\x01b", Escaping.XML)

    @pytest.mark.parametrize("value", ["a\r\nb", "tab\there", "nul\x00", "del\x7f", "c1\x85", "ls\u2028", "{x"])
    def test_verbatim_refuses_control_characters_and_braces(self, value: str) -> None:
        """Without an escaping, a value that could break lines or form template syntax is refused."""
        with pytest.raises(ValueError, match="holds"):
            escape(value, Escaping.VERBATIM)

    def test_verbatim_keeps_ordinary_text(self) -> None:
        """Printable text, accents included, is inserted as it is."""
        assert escape("José O'Neil-Smith", Escaping.VERBATIM) == "José O'Neil-Smith"


class TestRendering:
    def test_references_are_replaced(self) -> None:
        """Every reference becomes its escaped value."""
        template = parse_template('{"n": "' + braces(TOKEN, "number") + '", "m": ' + braces(TOKEN, "exp_month") + "}")
        values = {ref(CardField.NUMBER): "4242424242424242", ref(CardField.EXP_MONTH): "7"}
        assert render(template, values, Escaping.JSON) == '{"n": "4242424242424242", "m": 7}'

    def test_a_missing_value_names_the_token(self) -> None:
        """A token without a name cannot fill a .name reference."""
        template = parse_template(braces(TOKEN, "name"))
        with pytest.raises(TemplateError) as caught:
            render(template, {ref(CardField.NAME): None}, Escaping.JSON)
        assert caught.value.code == "template_value_missing"
        assert caught.value.token_id == TOKEN

    def test_an_unsafe_value_names_the_token_not_the_value(self) -> None:
        """The refusal says which reference, never what the value was."""
        template = parse_template("name=" + braces(TOKEN, "name"))
        with pytest.raises(TemplateError) as caught:
            render(template, {ref(CardField.NAME): "Eve\r\nX-Evil: 1"}, Escaping.VERBATIM)
        assert caught.value.code == "template_value_unsafe"
        assert TOKEN in str(caught.value)
        assert "Evil" not in str(caught.value)

    def test_a_value_holding_a_reference_is_not_expanded(self) -> None:
        """Substitution is one pass: a name that looks like a reference stays inert text."""
        template = parse_template(json.dumps({"name": braces(TOKEN, "name")}))
        sneaky = braces(OTHER, "number")
        rendered = render(template, {ref(CardField.NAME): sneaky}, Escaping.JSON)
        assert json.loads(rendered) == {"name": sneaky}
        assert REFERENCE_PATTERN.search(rendered) is None

    @settings(max_examples=200)
    @given(
        st.lists(st.tuples(st.text(string.ascii_lowercase, min_size=1, max_size=8), references), max_size=8), st.data()
    )
    def test_json_round_trip_gives_back_exactly_the_values(
        self, entries: list[tuple[str, Reference]], data: st.DataObject
    ) -> None:
        """Rendering a JSON template and parsing the result gives back each value exactly, whatever it holds."""
        keys = list(dict.fromkeys(k for k, _ in entries))
        chosen = dict(entries)
        body = "{" + ", ".join(f'"{k}": "{reference_text(chosen[k])}"' for k in keys) + "}"
        values = {r: data.draw(any_values) for r in set(chosen.values())}
        rendered = render(parse_template(body), values, Escaping.JSON)
        assert json.loads(rendered) == {k: values[chosen[k]] for k in keys}

    @given(st.dictionaries(st.text(string.ascii_lowercase, min_size=1, max_size=8), references, max_size=6), st.data())
    def test_form_round_trip_gives_back_exactly_the_values(
        self, chosen: dict[str, Reference], data: st.DataObject
    ) -> None:
        """A form body parses back into exactly the values, one per field."""
        body = "&".join(f"{k}={reference_text(r, '', '')}" for k, r in chosen.items())
        values = {
            r: data.draw(st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=30))
            for r in chosen.values()
        }
        rendered = render(parse_template(body), values, Escaping.FORM)
        parsed = parse_qs(rendered, keep_blank_values=True, strict_parsing=bool(chosen))
        assert parsed == {k: [values[r]] for k, r in chosen.items()}

    @settings(max_examples=200)
    @given(
        st.lists(st.tuples(literals, references, spacing, spacing), max_size=6),
        literals,
        st.sampled_from(list(Escaping)),
        st.data(),
    )
    def test_no_template_syntax_survives_rendering(
        self,
        parts: list[tuple[str, Reference, str, str]],
        tail: str,
        escaping: Escaping,
        data: st.DataObject,
    ) -> None:
        """Whatever the values, the output holds no reference and no '{{': nothing is left to expand."""
        body = "".join(lit + reference_text(r, a, b) for lit, r, a, b in parts) + tail
        values = {r: data.draw(any_values) for _, r, _, _ in parts}
        template = parse_template(body)
        unrenderable = [v for v in values.values() if _refused(v, escaping)]
        if unrenderable:
            with pytest.raises(TemplateError, match="cannot be sent"):
                render(template, values, escaping)
            return
        rendered = render(template, values, escaping)
        assert REFERENCE_PATTERN.search(rendered) is None
        assert "{{" not in rendered


def _refused(value: str, escaping: Escaping) -> bool:
    try:
        escape(value, escaping)
    except ValueError:
        return True
    return False
