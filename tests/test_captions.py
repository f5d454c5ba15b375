"""The caption rewriter: noun phrases, hard negatives and parts (pure Python, no model).

The micro world's grammar gives an exact reference: every caption's one-binding edits are built
from its parsed ``Prompt`` and compared with the rewriter's output, and the scene drawn for the
caption is checked against each negative. Free-form prompts are checked by edit type and
against hand-labelled negatives (tests/data/freeform_prompts.json).
"""

from __future__ import annotations

import difflib
import json
import random
import re
import time
from collections import Counter
from pathlib import Path

import pytest

from clipguide.conditioning.prompts import plain_text
from clipguide.scoring.captions import (
    ALL_KINDS,
    hard_negatives,
    noun_phrases,
    plain_prompt,
    prompt_parts,
)
from clipguide.scoring.captions import lexicon as lex
from clipguide.shapes import TRAIN_FAMILIES, Group, Prompt, parse_caption, prompt_set, render
from clipguide.shapes.oracle import check
from clipguide.shapes.scenes import relation_holds

DATA = Path(__file__).parent / "data"
# freeform_prompts.json was labelled before the rewriter was run on it (and the lexicon was then
# tuned on it); freeform_prompts_heldout.json was labelled after, blind, and ran once before two
# lexicon fixes ("goldfish" read as an adjective, "each other" as a phrase): see the report.
DATASETS = {
    name: json.loads((DATA / f"{name}.json").read_text(encoding="utf-8"))
    for name in ("freeform_prompts", "freeform_prompts_heldout")
}
FREEFORM = DATASETS["freeform_prompts"]
ALL_FREEFORM = [row for rows in DATASETS.values() for row in rows]
MICRO = prompt_set(40, seed=77, families=TRAIN_FAMILIES)  # 320 captions, all families

# ------------------------------------------------------------------ micro-world reference

_OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def _with(g: Group, **kw) -> Group:
    fields = dict(shape=g.shape, count=g.count, exact=g.exact, colour=g.colour, size=g.size)
    return Group(**{**fields, **kw})


def _reference_negatives(p: Prompt) -> dict[str, str]:
    """Every one-binding edit of a parsed micro caption, text -> kind (first kind wins)."""
    rel, gs = p.relation, p.groups
    out: dict[str, list[Prompt]] = {k: [] for k in ALL_KINDS}
    if len(gs) == 2:
        a, b = gs
        for attr in ("colour", "size"):
            va, vb = getattr(a, attr), getattr(b, attr)
            if (va or vb) and va != vb:
                new = (_with(a, **{attr: vb}), _with(b, **{attr: va}))
                if rel or Counter(new) != Counter(gs):  # coordination has no order
                    out["swap_attribute"].append(Prompt(new, rel))
    for i, g in enumerate(gs):
        for n in [g.count + 1] * (g.count < 4) + [g.count - 1] * (g.count > 1):
            new = list(gs)
            new[i] = _with(g, count=n, exact=True)
            out["change_count"].append(Prompt(tuple(new), rel))
    if rel:
        out["swap_relation"] += [Prompt(gs, _OPPOSITE[rel]), Prompt(gs[::-1], rel)]
    if len(gs) == 2 and gs[0].shape != gs[1].shape:
        a, b = gs
        differ = {f for f in ("colour", "size") if getattr(a, f) != getattr(b, f)}
        if (a.count, a.exact) != (b.count, b.exact):
            differ.add("count")
        if rel or "count" in differ or len(differ) > 1:
            new = (_with(a, shape=b.shape), _with(b, shape=a.shape))
            out["swap_objects"].append(Prompt(new, rel))
    if len(gs) == 2:
        out["drop_object"] += [Prompt((g,)) for g in gs]
    texts: dict[str, str] = {}
    for kind in ALL_KINDS:
        for q in out[kind]:
            if q.text() != p.text():
                texts.setdefault(q.text(), kind)
    return texts


def _holds(objects, p: Prompt) -> bool:
    """oracle.check's requirements, read on a scene's true objects instead of detections."""
    found = [[o for o in objects if g.matches(o)] for g in p.groups]
    ok = all(
        len(m) == g.count if g.exact else len(m) >= g.count
        for g, m in zip(p.groups, found, strict=True)
    )
    if p.relation:
        a, b = found
        ok = ok and bool(a and b) and all(relation_holds(x, y, p.relation) for x in a for y in b)
    return ok


def test_micro_negatives_are_exactly_the_one_binding_edits():
    for scene in MICRO:
        got = {n.text: n.kind for n in hard_negatives(scene.caption)}
        assert got == _reference_negatives(parse_caption(scene.caption)), scene.caption


@pytest.mark.parametrize("variant", ["to the {}", "a photo of {}"])
def test_micro_negatives_survive_the_grammar_variants(variant):
    """ "to the left of" and "a photo of ..." are accepted by parse_caption: same edits."""
    for scene in MICRO[::3]:
        caption = scene.caption
        if variant.startswith("to"):
            caption = re.sub(r"\b(left|right) of\b", r"to the \1 of", caption)
        else:
            caption = variant.format(caption)
        parsed = parse_caption(caption)
        want = _reference_negatives(parsed)
        got = {parse_caption(n.text).text(): n.kind for n in hard_negatives(caption)}
        assert got == want, caption


def test_micro_every_family_gets_its_kind_of_negative():
    kinds_by_family: dict[str, set[str]] = {}
    for scene in MICRO:
        negs = hard_negatives(scene.caption)
        assert negs, scene.caption
        kinds_by_family.setdefault(scene.family, set()).update(n.kind for n in negs)
    assert "swap_relation" in kinds_by_family["position"]
    assert "swap_attribute" in kinds_by_family["color_attr"]
    assert "swap_attribute" in kinds_by_family["size"]
    assert kinds_by_family["counting"] == {"change_count"}
    assert "drop_object" in kinds_by_family["two_object"]
    assert kinds_by_family["composite"] == set(ALL_KINDS)


def test_micro_scene_of_the_caption_fails_its_negatives():
    """A scene drawn for the caption satisfies it but not (as a rule) its negatives."""
    failed, total = Counter(), Counter()
    for scene in MICRO:
        p = parse_caption(scene.caption)
        if not _holds(scene.objects, p):  # the scene generator's own slips are not ours
            continue
        for neg in hard_negatives(scene.caption):
            kind = neg.kind + ("/move" if "moved" in neg.detail else "")
            total[kind] += 1
            failed[kind] += not _holds(scene.objects, parse_caption(neg.text))
    rate = {k: failed[k] / total[k] for k in total}
    assert rate["drop_object"] == 0  # a dropped object asks for less: by design
    for kind in ("change_count", "swap_relation", "swap_objects"):
        assert rate[kind] == 1, (kind, rate)
    assert rate["swap_attribute"] >= 0.95, rate  # unasked attributes are random in a scene
    assert rate["swap_attribute/move"] >= 0.6, rate


def test_scene_check_agrees_with_the_oracle():
    """_holds reads scenes as oracle.check reads their rendered images."""
    agree = total = 0
    for scene in MICRO[::16]:
        image = render(scene, jitter=False)
        for text in [scene.caption, *(n.text for n in hard_negatives(scene.caption, limit=4))]:
            total += 1
            agree += check(image, text).ok == _holds(scene.objects, parse_caption(text))
    assert agree / total >= 0.95, (agree, total)


def test_micro_parts_are_the_groups():
    for scene in MICRO:
        p = parse_caption(scene.caption)
        parts = prompt_parts(scene.caption)
        texts = [g.text() for g in p.groups]
        assert parts == (texts if len(set(texts)) == 2 else []), scene.caption


# ------------------------------------------------------------------ free-form prompts

_NUMBERS = set("a one two three four five six seven eight nine ten eleven twelve".split())
_SPATIAL = set(
    "left right above below over under underneath beneath on top of in front behind inside "
    "outside to the foreground background at bottom atop into out within far".split()
)
_FUNCTION = set("a the of and with on in to at by or".split())


def _words(text: str) -> list[str]:
    words = re.findall(r"[\w'’-]+", text.lower())
    return ["a" if w == "an" else w for w in words]


def _is_number(w: str) -> bool:
    return w in _NUMBERS or w.isdigit()


def _inflected(a: str, b: str) -> bool:
    return a[:1] == b[:1] and difflib.SequenceMatcher(None, a, b).ratio() >= 0.4


def _blocks(a: list[str], b: list[str]) -> list[tuple[str, list[str], list[str]]]:
    ops = difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    return [(op, a[i1:i2], b[j1:j2]) for op, i1, i2, j1, j2 in ops if op != "equal"]


def edit_is_valid(prompt: str, neg: str, kind: str) -> bool:
    """Whether ``neg`` is ``prompt`` changed by one edit of ``kind``, judged on words alone."""
    a, b = _words(plain_prompt(prompt)), _words(neg)
    if a == b:
        return False
    blocks = _blocks(a, b)
    if kind == "swap_attribute" or kind == "swap_relation" and Counter(a) == Counter(b):
        return Counter(a) == Counter(b)
    if kind == "swap_objects":  # two nouns trade places, each inflected for its new phrase
        if len(a) != len(b):
            return False
        diff = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
        return len(diff) == 2 and all(
            _inflected(a[i], b[j]) and a[i] != a[j] for i, j in (diff, diff[::-1])
        )
    if kind == "swap_relation":
        return (
            len(blocks) == 1
            and blocks[0][0] == "replace"
            and set(blocks[0][1]) | set(blocks[0][2]) <= _SPATIAL
        )
    if kind == "change_count":
        if len(a) != len(b):
            return False
        changed = [(x, y) for x, y in zip(a, b, strict=True) if x != y]
        numbers = [(x, y) for x, y in changed if _is_number(x) and _is_number(y)]
        others = [(x, y) for x, y in changed if (x, y) not in numbers]
        return len(numbers) == 1 and len(others) <= 1 and all(_inflected(*p) for p in others)
    if kind == "drop_object":
        return (
            len(blocks) == 1
            and blocks[0][0] == "delete"
            and any(w not in _FUNCTION for w in blocks[0][1])
        )
    raise AssertionError(kind)


def test_edit_checker_rejects_wrong_edits():
    """The validity check used below can fail: wrong kinds and two edits are caught."""
    p = "two cats on a blue sofa next to a yellow lamp"
    assert edit_is_valid(p, "two cats on a yellow sofa next to a blue lamp", "swap_attribute")
    assert not edit_is_valid(p, "two cats on a green sofa next to a blue lamp", "swap_attribute")
    assert edit_is_valid(p, "three cats on a blue sofa next to a yellow lamp", "change_count")
    assert not edit_is_valid(
        p, "three cats on two blue sofas next to a yellow lamp", "change_count"
    )
    assert edit_is_valid(p, "two cats under a blue sofa next to a yellow lamp", "swap_relation")
    assert not edit_is_valid(p, "two cats under a red sofa next to a yellow lamp", "swap_relation")
    assert edit_is_valid(p, "two cats on a blue sofa", "drop_object")
    assert not edit_is_valid(p, "two cats on a sofa", "drop_object")
    assert not edit_is_valid(p, p, "swap_attribute")


def test_freeform_data_is_well_formed():
    assert len(FREEFORM) >= 60
    for row in ALL_FREEFORM:
        assert set(row) == {"prompt", "noun_phrases", "expected"}
        for e in row["expected"]:
            assert e["kind"] in ALL_KINDS
            assert edit_is_valid(row["prompt"], e["text"], e["kind"]), e


def test_freeform_labelled_negatives_are_produced():
    missing = []
    for row in ALL_FREEFORM:
        got = {(n.kind, n.text) for n in hard_negatives(row["prompt"])}
        missing += [e for e in row["expected"] if (e["kind"], e["text"]) not in got]
    assert not missing


@pytest.mark.parametrize("name", DATASETS)
def test_freeform_rate_of_prompts_with_a_valid_negative(name):
    multi = [r for r in DATASETS[name] if r["noun_phrases"] >= 2]
    assert len(multi) >= 20
    ok = 0
    valid = total = 0
    for row in multi:
        negs = hard_negatives(row["prompt"])
        flags = [edit_is_valid(row["prompt"], n.text, n.kind) for n in negs]
        valid, total = valid + sum(flags), total + len(flags)
        ok += any(flags)
    assert ok / len(multi) >= 0.8  # the goal; measured: 1.0 on both sets
    assert valid / total >= 0.95, (valid, total)  # measured: 718/718 and 310/310


@pytest.mark.parametrize("name", DATASETS)
def test_freeform_object_phrase_counts_match_the_labels(name):
    rows = DATASETS[name]
    agree = sum(
        sum(np.is_object for np in noun_phrases(r["prompt"])) == r["noun_phrases"] for r in rows
    )
    assert agree / len(rows) >= 0.9  # measured: 68/68 (tuned on), 24/25 (held out)


def test_freeform_is_fast():
    prompts = [r["prompt"] for r in ALL_FREEFORM]
    for p in prompts:  # warm the word caches
        hard_negatives(p)
    start = time.perf_counter()
    for p in prompts:
        hard_negatives(p)
    per_prompt = (time.perf_counter() - start) / len(prompts)
    assert per_prompt < 0.01  # ~0.7 ms measured; loose so a busy CI machine passes


# ------------------------------------------------------------------ noun phrases


def test_noun_phrases_of_a_free_form_prompt():
    prompt = (
        "a red fox asleep in a snowy birch forest at dawn, soft golden rim light, "
        "85mm lens, award-winning photo"
    )
    nps = noun_phrases(prompt)
    text = plain_prompt(prompt)
    assert all(text[n.start : n.end] == n.text for n in nps)
    objects = [n for n in nps if n.is_object]
    assert [n.text for n in objects] == ["a red fox", "a snowy birch forest"]
    fox, forest = objects
    assert (fox.determiner, fox.count, fox.head, fox.plural) == ("a", 1, "fox", False)
    assert fox.attributes == {"colour": ("red",)}
    assert forest.attributes == {"other": ("snowy", "birch")}
    light = next(n for n in nps if n.head == "light")
    assert not light.is_object and light.attributes["colour"] == ("golden",)


def test_style_light_camera_and_credits_are_not_objects():
    prompt = (
        "a red fox, 85mm lens, f/1.8, 8k, golden hour, soft rim lighting, trending on "
        "artstation, award-winning photo by greg rutkowski, in the style of monet, at dawn"
    )
    assert [n.text for n in noun_phrases(prompt) if n.is_object] == ["a red fox"]
    assert hard_negatives(prompt, kinds=["swap_attribute", "drop_object", "swap_objects"]) == []


def test_tags_with_digits_are_objects_but_not_rewritten():
    prompt = "1girl, blue eyes, red dress"
    assert [n.is_object for n in noun_phrases(prompt)] == [True, True, True]
    for neg in hard_negatives(prompt):
        if neg.kind != "drop_object":
            assert neg.text.startswith("1girl, "), neg


@pytest.mark.parametrize(
    ("prompt", "objects"),
    [
        ("a goldfish inside of a glass bowl", ["a goldfish", "a glass bowl"]),  # not "-ish"
        ("two knights facing each other", ["two knights"]),  # a pronoun, not a phrase
    ],
)
def test_held_out_misreadings_stay_fixed(prompt, objects):
    assert [n.text for n in noun_phrases(prompt) if n.is_object] == objects


def test_capitals_follow_the_sentence_start():
    texts = {n.text for n in hard_negatives("Red fox and a blue cat")}
    assert "Blue fox and a red cat" in texts
    texts = {n.text for n in hard_negatives("A cat left of a dog")}
    assert "A dog left of a cat" in texts


def test_noun_phrases_counts_sizes_and_plurals():
    a, b = noun_phrases("two large red squares and 3 small light-blue triangles")
    assert (a.count, a.plural, a.head) == (2, True, "squares")
    assert a.attributes == {"size": ("large",), "colour": ("red",)}
    assert (b.count, b.determiner, b.attributes["colour"]) == (3, "3", ("light-blue",))
    (c,) = noun_phrases("the cats")
    assert (c.count, c.plural, c.determiner) == (None, True, "the")
    (d,) = noun_phrases("a light blue vase")
    assert d.attributes == {"colour": ("light blue",)}


def test_noun_phrases_spans_follow_the_plain_text():
    prompt = "(red fox:1.3) in [snow] BREAK a ((cat)), <lora:x:0.5> \\(sic\\)"
    assert plain_prompt(prompt) == "red fox in snow, a cat, (sic)"
    nps = noun_phrases(prompt)
    assert [n.text for n in nps] == ["red fox", "snow", "a cat", "sic"]


@pytest.mark.parametrize(
    "prompt",
    [
        "a cat",
        "(a red fox:1.3) in the snow",
        "((masterpiece)), [blurry], a dog, 16:9",
        "a \\(literal\\) bracket and \\:colon",
        "nested ((a (b:1.2) c):0.8) end",
        "  spaces   and\ttabs\n ",
    ],
)
def test_plain_prompt_agrees_with_the_weight_parser(prompt):
    """On well-formed prompts plain_prompt reads weights as clipguide.conditioning.prompts does."""
    assert plain_prompt(prompt) == " ".join(plain_text(prompt).split())


# ------------------------------------------------------------------ negatives: examples


@pytest.mark.parametrize(
    ("prompt", "kind", "negative"),
    [
        (
            "a blue triangle and a cyan square",
            "swap_attribute",
            "a cyan triangle and a blue square",
        ),
        ("two red circles", "change_count", "three red circles"),
        ("one circle", "change_count", "two circles"),
        ("a cat", "change_count", "two cats"),
        ("an apple", "change_count", "two apples"),
        ("two geese", "change_count", "one goose"),
        ("3 boxes", "change_count", "4 boxes"),
        ("A puppy on a bed", "change_count", "Two puppies on a bed"),
        ("a circle left of a square", "swap_relation", "a square left of a circle"),
        ("a circle to the left of a square", "swap_relation", "a circle to the right of a square"),
        ("a cat on top of a box", "swap_relation", "a cat underneath a box"),
        ("a dog in front of a car", "swap_relation", "a dog behind a car"),
        ("A cup on a table", "swap_relation", "A table on a cup"),
        ("a cat and a dog", "drop_object", "a dog"),
        ("a man holding a red umbrella", "drop_object", "a man"),
        ("a woman, red dress, blue eyes", "drop_object", "a woman, blue eyes"),
        ("an orange cat and a blue bird", "swap_attribute", "a blue cat and an orange bird"),
        ("a red fox in a forest", "swap_attribute", "a fox in a red forest"),
        ("two red cats and a blue dog", "swap_objects", "two red dogs and a blue cat"),
    ],
)
def test_negative_examples(prompt, kind, negative):
    got = [(n.kind, n.text) for n in hard_negatives(prompt)]
    assert (kind, negative) in got, got


@pytest.mark.parametrize(
    ("prompt", "kind"),
    [
        ("a red circle and a blue circle", "swap_attribute"),  # same meaning
        ("a cat next to a dog", "swap_relation"),  # symmetric
        ("a red cat and a blue dog", "swap_objects"),  # says what the colour swap says
        ("a cat in the style of monet", "drop_object"),  # one object only
        ("the cats", "change_count"),  # no count asked
    ],
)
def test_no_negative_when_it_would_mean_the_same(prompt, kind):
    assert hard_negatives(prompt, kinds=[kind]) == []


def test_attribute_swaps_come_before_moves():
    negs = hard_negatives("a red cat next to a lamp on a blue mat", kinds=["swap_attribute"])
    assert [n.text for n in negs] == [
        "a blue cat next to a lamp on a red mat",
        "a cat next to a red lamp on a blue mat",
        "a red cat next to a blue lamp on a mat",
    ]


def test_counts_above_four_only_go_down():
    texts = [n.text for n in hard_negatives("ten lanterns", kinds=["change_count"])]
    assert texts == ["nine lanterns"]


# ------------------------------------------------------------------ negatives: contract


def test_order_is_deterministic_and_mixes_kinds():
    prompt = "two cats on a blue sofa next to a yellow lamp"
    negs = hard_negatives(prompt)
    assert negs == hard_negatives(prompt)
    assert [n.kind for n in negs[:5]] == list(ALL_KINDS)
    assert hard_negatives(prompt, limit=3) == negs[:3]
    assert hard_negatives(prompt, limit=0) == []
    only = hard_negatives(prompt, kinds=("drop_object",))
    assert only == [n for n in negs if n.kind == "drop_object"]


def test_no_duplicates_and_never_the_prompt():
    for prompt in [r["prompt"] for r in ALL_FREEFORM] + [s.caption for s in MICRO]:
        texts = [n.text.lower() for n in hard_negatives(prompt)]
        assert len(texts) == len(set(texts)), prompt
        assert " ".join(plain_prompt(prompt).lower().split()) not in texts


def _fuzz_prompts(n: int = 300) -> list[str]:
    rng = random.Random(0)
    pieces = [
        "a", "an", "two", "3", "red", "light", "blue", "and", "on", "top", "of", "left",
        "in front of", "the", "cat", "cats", "(", ")", "[", "]", ":1.2", "\\", ",", ".",
        "BREAK", "<lora:x:1>", "猫", "ü", "🙂", "-", "'s", "  ", "\n", "asleep", "holding",
    ]  # fmt: skip
    return [
        "".join(rng.choice(pieces) + rng.choice(["", " "]) for _ in range(rng.randint(0, 30)))
        for _ in range(n)
    ]


@pytest.mark.parametrize(
    "prompt",
    ["", " ", ",,,", "!!! ??? ...", "((((", "))))]]", "(a:1.2", "[a:b:0.5]", "🙂🙂", "a " * 5000]
    + _fuzz_prompts(),
)
def test_any_string_gives_a_result(prompt):
    negs = hard_negatives(prompt)
    assert isinstance(negs, list) and all(n.kind in ALL_KINDS for n in negs)
    assert all(n.text.strip() and n.text != plain_prompt(prompt) for n in negs)
    assert isinstance(prompt_parts(prompt), list)


def test_long_prompt_stays_fast():
    prompt = ", ".join(f"a red cat on a blue mat next to {i} green dogs" for i in range(200))
    start = time.perf_counter()
    negs = hard_negatives(prompt)
    assert negs and time.perf_counter() - start < 5


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"prompt": 3}, TypeError, ["prompt", "int"]),
        ({"prompt": None}, TypeError, ["prompt", "NoneType"]),
        ({"prompt": "a cat", "kinds": "drop_object"}, TypeError, ["kinds", "drop_object"]),
        ({"prompt": "a cat", "kinds": ["swap"]}, ValueError, ["kinds", "swap", "swap_attribute"]),
        ({"prompt": "a cat", "limit": -1}, ValueError, ["limit", "-1"]),
        ({"prompt": "a cat", "limit": 2.5}, ValueError, ["limit", "2.5"]),
        ({"prompt": "a cat", "limit": True}, ValueError, ["limit", "True"]),
    ],
)
def test_bad_arguments_are_named(kwargs, error, words):
    with pytest.raises(error) as info:
        hard_negatives(**kwargs)
    assert all(w in str(info.value) for w in words), str(info.value)


def test_parts_need_two_objects():
    assert prompt_parts("a blue triangle and a cyan square") == ["a blue triangle", "a cyan square"]
    assert prompt_parts("two cats on a blue sofa next to a yellow lamp, 8k, cinematic") == [
        "two cats",
        "a blue sofa",
        "a yellow lamp",
    ]
    assert prompt_parts("a red fox, golden hour, 85mm lens, award-winning photo") == []
    assert prompt_parts("a cat and a cat") == []
    with pytest.raises(TypeError, match="prompt"):
        prompt_parts(b"a cat")


# ------------------------------------------------------------------ lexicon


@pytest.mark.parametrize(
    ("singular", "plural"),
    [
        ("cat", "cats"),
        ("box", "boxes"),
        ("church", "churches"),
        ("city", "cities"),
        ("boy", "boys"),
        ("leaf", "leaves"),
        ("man", "men"),
        ("snowman", "snowmen"),
        ("child", "children"),
        ("sheep", "sheep"),
        ("glass", "glasses"),
        ("cookie", "cookies"),
        ("tomato", "tomatoes"),
        ("hot air balloon", "hot air balloons"),
        ("Fox", "Foxes"),
    ],
)
def test_inflection_round_trips(singular, plural):
    assert lex.pluralize(singular) == plural
    assert lex.singularize(plural) == singular
    assert lex.inflect(singular, plural=True) == plural
    assert lex.inflect(plural, plural=False) == singular


@pytest.mark.parametrize(
    ("word", "article"),
    [("apple", "an"), ("cat", "a"), ("hour", "an"), ("unicorn", "a"), ("umbrella", "an"),
     ("one-eyed", "a"), ("8k", "an"), ("European", "a")],
)  # fmt: skip
def test_article_for(word, article):
    assert lex.article_for(word) == article


def test_opposite_relations():
    assert lex.opposite_relation("to the left of") == "to the right of"
    assert lex.opposite_relation("above") == "below"
    assert lex.opposite_relation("in front of") == "behind"
    assert lex.opposite_relation("next to") is None
