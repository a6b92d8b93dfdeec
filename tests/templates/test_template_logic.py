"""The pure template logic: parsing, variables, rendering and escaping, locales, variants, SMS segments, push size."""

import html
import itertools
import math
from collections import Counter

import chevron
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.domain.channel_limits import GSM7_BASIC, GSM7_EXTENDED, PUSH_MAX_BYTES, sms_info
from actors.domain.rendering import RenderTooLarge, Rendered, TemplateSyntaxError, compile_template, parse, render, render_nodes, render_template, validate, variables_of
from actors.domain.template_choice import locale_chain, pick_variant
from protocol.channels import Channel
from protocol.template_schemas import TemplateSpec

# -- parsing and validation


@given(st.text(alphabet="{}#^/&>!= ab.\n", max_size=30))
def test_parse_either_compiles_or_says_why(source):
    try:
        nodes = parse(source)
    except TemplateSyntaxError as exc:
        assert str(exc)
    else:
        assert render_nodes(nodes, {"a": "1", "b": [1, 2]}) is not None


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("Hi {{name}", "unclosed tag"),
        ("{{#items}}x", "never closed"),
        ("{{/items}}", "not opened"),
        ("{{#a}}{{/b}}", "last open tag"),
        ("{{> footer}}", "partials are not supported"),
        ("{{{name}}", "triple mustache"),
        ("{{}}", "empty tag"),
        ("{{first name}}", "not a variable name"),
        ("{{#a}}" * 33 + "{{/a}}" * 33, "nested deeper than 32"),
    ],
)
def test_syntax_errors_say_what_is_wrong(source, message):
    with pytest.raises(TemplateSyntaxError, match=message):
        parse(source)


def spec(**fields):
    return msgspec.convert(fields, TemplateSpec)


def test_the_deepest_nesting_allowed_renders():
    assert render("{{#a}}" * 32 + "x" + "{{/a}}" * 32, {"a": True}) == "x"


def test_validation_names_each_bad_field():
    errors = validate(spec(
        default_locale="de",
        locales={
            "en": {"email": {"subject": "Hi {{name}"}},  # a syntax error, and neither text nor html
            "fr": {"sms": {"text": "ok"}, "push": {"title": "t", "data": {"deep": "{{#x}}"}}},
            "FR": {"web": {"title": "dup"}},
            "es": {},
        },
        variants={"A": {"weight": 0}, "B": {"weight": 0, "locales": {"fr": {"sms": {"text": "{{> p}}"}}}}},
    ))
    fields = {e.field for e in errors}
    assert fields == {
        "locales.en.email",
        "locales.en.email.subject",
        "locales.fr.push.data.deep",
        "locales.FR",
        "locales.es",
        "default_locale",
        "variants",
        "variants.B.locales.fr.sms.text",
    }


def test_variables_outside_sections_are_required_inside_optional():
    nodes = parse("Hi {{user.name}} {{#vip}}{{perk}}{{/vip}}{{^vip}}{{plain}}{{/vip}} {{{code}}} {{#l}}{{.}}{{/l}}")
    required, optional = variables_of(nodes)
    assert required == {"user.name", "code"}
    assert optional == {"vip", "perk", "plain", "l"}


def test_a_template_lists_the_variables_of_every_part():
    compiled = compile_template("t", 1, spec(locales={
        "en": {"email": {"subject": "{{a}}", "html": "{{#b}}{{c}}{{/b}}"}},
        "fr": {"sms": {"text": "{{a}} {{d}}"}},
    }, variants={"B": {"weight": 1, "locales": {"en": {"web": {"title": "{{e}}"}}}}}))
    assert compiled.variables.required == ["a", "d", "e"]
    assert compiled.variables.optional == ["b", "c"]


# -- rendering: chevron's output where both apply, escaping only in HTML

_text = st.text(alphabet="xyz <>&\"\n", max_size=6)  # no "'": Herald escapes it, chevron does not
_scalar = st.one_of(_text, st.integers(-3, 3))


@st.composite
def mustache(draw, depth=0):
    pieces = []
    for _ in range(draw(st.integers(1 if depth == 0 else 0, 4))):
        kind = draw(st.sampled_from(["text", "var", "raw", "amp", "dotted"] + (["section", "section", "inverted"] if depth < 3 else [])))
        if kind == "text":
            pieces.append(draw(_text))
        elif kind == "var":
            pieces.append("{{" + draw(st.sampled_from(["a", "b"])) + "}}")
        elif kind == "raw":
            pieces.append("{{{" + draw(st.sampled_from(["a", "b"])) + "}}}")
        elif kind == "amp":
            pieces.append("{{& a}}")
        elif kind == "dotted":
            pieces.append("{{d.a}}")
        else:
            # chevron mis-nests `{{^l}}` inside `{{#l}}` over a list (it counts only `#` tags when
            # it looks for the end of a list section, and can crash): no inverted `l` here
            keys = ["l", "l", "d", "f", "a", "missing"] if kind == "section" else ["d", "f", "a", "missing"]
            key = draw(st.sampled_from(keys))
            sigil = "#" if kind == "section" else "^"
            pieces.append(f"{{{{{sigil}{key}}}}}{draw(mustache(depth + 1))}{{{{/{key}}}}}")
    return "".join(pieces)


data_strategy = st.fixed_dictionaries({
    "a": _scalar,
    "b": _scalar,
    "d": st.fixed_dictionaries({"a": _text}),
    "f": st.booleans(),
    "l": st.lists(st.fixed_dictionaries({"a": _scalar, "b": _scalar}), max_size=3),
})


@settings(max_examples=400)
@given(mustache(), data_strategy)
def test_html_rendering_agrees_with_chevron(source, data):
    assert render(source, data, html=True) == chevron.render(source, data)


@settings(max_examples=200)
@given(mustache(), data_strategy)
def test_plain_rendering_is_chevron_without_escaping(source, data):
    raw = source.replace("{{{a}}}", "{{a}}").replace("{{{b}}}", "{{b}}")
    unescaped = raw.replace("{{a}}", "{{& a}}").replace("{{b}}", "{{& b}}").replace("{{d.a}}", "{{& d.a}}")
    assert render(raw, data) == chevron.render(unescaped, data)


@given(st.text(max_size=50))
def test_html_escapes_every_special_character_and_nothing_else(value):
    escaped = render("{{x}}", {"x": value}, html=True)
    assert not set("<>\"'") & set(escaped)
    assert html.unescape(escaped) == value
    assert render("{{{x}}}", {"x": value}, html=True) == value  # the author's explicit choice
    assert render("{{x}}", {"x": value}) == value  # text, SMS, push, web: never escaped


def test_an_inverted_section_inside_a_section_of_the_same_name():
    data = {"l": [{"a": 1}, {"a": 2}]}
    assert render("{{#l}}<{{a}}{{^l}}none{{/l}}>{{/l}}", data) == "<1><2>"
    assert render("{{#l}}{{/l}}{{^l}}none{{/l}}", {"l": []}) == "none"


def test_lookups_never_reach_python_attributes():
    data = {"name": "bob", "items": [1, 2]}
    assert render("{{name.upper}}|{{name.__class__}}|{{items.append}}|{{items.1}}", data) == "|||2"
    assert render("{{#name.upper}}x{{/name.upper}}", data) == ""


def test_values_print_as_json():
    assert render("{{t}} {{n}} {{f}} {{o}} {{e}}", {"t": True, "n": None, "f": 1.5, "o": {"k": [1]}, "e": []}) == "true  1.5 {\"k\":[1]} "


def test_nested_sections_over_a_long_list_stop_at_the_budget():
    nodes = parse("{{#l}}{{#l}}{{#l}}{{#l}}{{/l}}{{/l}}{{/l}}{{/l}}")
    with pytest.raises(RenderTooLarge):
        render_nodes(nodes, {"l": list(range(1, 200))}, budget=100_000)


# -- locales and variants


@given(st.from_regex(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}", fullmatch=True), st.sampled_from(["en", "fr", "pt-BR"]))
def test_locale_chain_goes_from_specific_to_the_default(requested, default):
    chain = locale_chain(requested, default)
    assert chain[0] == requested.lower()
    assert chain[-1] == default.lower()
    assert len(chain) == len(set(chain))
    for longer, shorter in itertools.pairwise(chain[:-1]):  # each drops one subtag; the default may be anything
        assert longer.startswith(shorter + "-")


def test_locale_chain_examples():
    assert locale_chain("fr-CA", "en") == ["fr-ca", "fr", "en"]
    assert locale_chain("fr_CA", "fr") == ["fr-ca", "fr"]
    assert locale_chain(None, "en") == ["en"]


@given(st.text(min_size=1, max_size=20), st.lists(st.integers(0, 5), min_size=1, max_size=5))
def test_the_variant_is_stable_and_never_a_zero_weight_one(user, weights):
    arms = [(f"V{i}", w) for i, w in enumerate(weights)]
    picked = pick_variant("welcome", user, arms)
    assert picked == pick_variant("welcome", user, list(reversed(arms)))  # order of declaration does not matter
    if sum(weights) == 0:
        assert picked == ""
    else:
        assert dict(arms)[picked] > 0


def test_variants_split_users_by_weight():
    counts = Counter(pick_variant("welcome", f"user-{i}", [("A", 3), ("B", 1)]) for i in range(20_000))
    assert abs(counts["A"] / 20_000 - 0.75) < 0.02
    assert counts.keys() == {"A", "B"}
    other = Counter(pick_variant("receipt", f"user-{i}", [("A", 3), ("B", 1)]) for i in range(2000))
    same = sum(pick_variant("welcome", f"user-{i}", [("A", 1), ("B", 1)]) == pick_variant("receipt", f"user-{i}", [("A", 1), ("B", 1)])
               for i in range(2000))
    assert abs(other["A"] / 2000 - 0.75) < 0.05
    assert 800 < same < 1200  # assignments of two templates are independent


# -- SMS segments


def test_sms_segment_boundaries():
    assert sms_info("a" * 160).segments == 1
    assert sms_info("a" * 161).segments == 2
    assert sms_info("a" * 306).segments == 2
    assert sms_info("a" * 307).segments == 3
    assert (sms_info("€" * 80).units, sms_info("€" * 80).segments) == (160, 1)  # extension characters count 2
    assert sms_info("€" * 81).segments == 2
    assert sms_info("a" * 152 + "€").segments == 1
    assert sms_info("a" * 152 + "€" + "a" * 9).segments == 2  # 163 septets
    assert sms_info("a" * 152 + "€" + "a" * 152).segments == 3  # the escape pair does not straddle segments 1 and 2
    assert sms_info("é" * 160).encoding == "GSM-7"
    assert (sms_info("ł" * 70).encoding, sms_info("ł" * 70).segments) == ("UCS-2", 1)
    assert sms_info("ł" * 71).segments == 2
    assert sms_info("ł" * 134).segments == 2
    assert sms_info("😀" * 35).units == 70  # a surrogate pair: two UTF-16 units
    assert sms_info("😀" * 34 + "ł").segments == 1


_sms_text = st.text(alphabet=st.sampled_from(sorted(GSM7_BASIC | GSM7_EXTENDED) + ["ł", "😀", "中"]), max_size=800)


@given(_sms_text)
def test_segments_bounds_and_encoding(text):
    info = sms_info(text)
    gsm = all(c in GSM7_BASIC or c in GSM7_EXTENDED for c in text)
    assert info.encoding == ("GSM-7" if gsm else "UCS-2")
    single, multi = (160, 153) if gsm else (70, 67)
    assert (info.segments == 1) == (info.units <= single)
    if info.segments > 1:
        assert math.ceil(info.units / multi) <= info.segments <= math.ceil(info.units / (multi - 1))
        assert info.per_segment == multi


@given(_sms_text, st.sampled_from(sorted(GSM7_BASIC | GSM7_EXTENDED) + ["ł", "😀"]))
def test_a_longer_sms_never_takes_fewer_segments(text, extra):
    assert sms_info(text + extra).segments >= sms_info(text).segments


# -- rendering a whole template for a recipient

WELCOME = spec(
    default_locale="en",
    locales={
        "en": {
            "email": {"subject": "Welcome,\n{{name}}", "text": "Hi {{name}}", "html": "<p>Hi {{name}}</p>"},
            "sms": {"text": "Hi {{name}}, code {{code}}"},
            "push": {"title": "Hi {{name}}", "data": {"deeplink": "app://welcome/{{code}}"}},
        },
        "fr": {"email": {"subject": "Bienvenue {{name}}", "text": "Salut {{name}}"}},
    },
    variants={"A": {"weight": 1}, "B": {"weight": 1, "locales": {"fr": {"email": {"subject": "Coucou {{name}}", "text": "Yo {{name}}"}}}}},
)


def welcome():
    return compile_template("welcome", 3, WELCOME)


def test_each_channel_falls_back_along_the_locale_chain():
    result = render_template(welcome(), [Channel.EMAIL, Channel.SMS], {"name": "Zoë <3", "code": "42"}, locale="fr-CA", variant="A")
    assert isinstance(result, Rendered)
    assert result.content.email.subject == "Bienvenue Zoë <3"  # fr, unescaped
    assert result.content.sms.text == "Hi Zoë <3, code 42"  # fr has no sms: en
    assert result.locales == {"email": "fr", "sms": "en"}
    assert result.tag == "welcome@3#A"
    assert result.sms.segments == 1


def test_a_variant_overrides_its_parts_only():
    b = render_template(welcome(), [Channel.EMAIL, Channel.PUSH], {"name": "Al", "code": "7"}, locale="fr", variant="B")
    assert b.content.email.subject == "Coucou Al" and b.content.email.text == "Yo Al"
    assert b.content.push.data == {"deeplink": "app://welcome/7"}
    en = render_template(welcome(), [Channel.EMAIL], {"name": "Al & <Bo>"}, locale="en-GB", variant="B")
    assert en.content.email.subject == "Welcome, Al & <Bo>"  # B changes nothing in English; a line break in a subject is a space
    assert en.content.email.html == "<p>Hi Al &amp; &lt;Bo&gt;</p>"
    assert en.content.email.text == "Hi Al & <Bo>"


def test_render_errors_name_the_field():
    t = welcome()
    assert [e.field for e in render_template(t, [Channel.WEB], {"name": "x"})] == ["channels"]
    missing = render_template(t, [Channel.SMS], {"name": None})
    assert [(e.field, e.message) for e in missing] == [
        ("data.code", "required by the template (locales.en.sms.text)"),
        ("data.name", "required by the template (locales.en.sms.text)"),
    ]
    long = render_template(t, [Channel.SMS], {"name": "ł" * 700, "code": 1})
    assert [e.field for e in long] == ["locales.en.sms.text"] and "11 UCS-2 segments" in long[0].message
    assert isinstance(render_template(t, [Channel.SMS], {"name": "ł" * 600, "code": 1}, sms_max_segments=10), Rendered)
    assert [e.field for e in render_template(t, [Channel.SMS], {"name": "ł" * 600, "code": 1}, sms_max_segments=5)] == [
        "locales.en.sms.text"
    ]


def test_push_payload_limit():
    t = compile_template("p", 1, spec(locales={"en": {"push": {"title": "t", "body": "{{body}}", "data": {"k": "{{v}}"}}}}))
    ok = render_template(t, [Channel.PUSH], {"body": "b" * 2000, "v": "v" * 2000})
    assert isinstance(ok, Rendered) and ok.push_bytes <= PUSH_MAX_BYTES
    too_big = render_template(t, [Channel.PUSH], {"body": "b" * 2000, "v": "é" * 1100})
    assert [e.field for e in too_big] == ["locales.en.push"] and "limit is 4096" in too_big[0].message


def test_rendered_content_must_fit_the_channel_schema():
    t = compile_template("w", 1, spec(locales={"en": {"web": {"title": "{{t}}", "url": "{{u}}"}}}))
    assert [e.field for e in render_template(t, [Channel.WEB], {"t": "x" * 300, "u": ""})] == ["locales.en.web.title"]
    assert render_template(t, [Channel.WEB], {"t": "ok", "u": ""}).content.web.url is None  # an empty url is no url
