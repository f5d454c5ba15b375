"""Weight syntax parsing and long-prompt chunking (no model)."""

import warnings

import pytest
import torch

from clipguide.conditioning.prompts import (
    MAX_WEIGHT,
    PromptChunks,
    PromptSyntaxWarning,
    chunk_tensors,
    chunk_tokens,
    parse_prompt,
    plain_text,
    tokenize_prompt,
    word_ids,
)
from clipguide.model.tokenizer import offline_tokenizer


@pytest.fixture(scope="module")
def tok():
    return offline_tokenizer()


def weights_of(prompt):
    return [(t, round(w, 6)) for sec in parse_prompt(prompt) for t, w in sec]


@pytest.mark.parametrize(
    "prompt, expected",
    [
        ("a cat", [("a cat", 1.0)]),
        ("a (red) cat", [("a ", 1.0), ("red", 1.1), (" cat", 1.0)]),
        ("a [red] cat", [("a ", 1.0), ("red", round(1 / 1.1, 6)), (" cat", 1.0)]),
        ("(red:1.3)", [("red", 1.3)]),
        ("( red : 0.5 )", [(" red ", 0.5)]),
        ("((red))", [("red", round(1.1 * 1.1, 6))]),
        ("((a) b:2)", [("a", 2.2), (" b", 2.0)]),
        ("[[a]]", [("a", round(1 / 1.21, 6))]),
        ("(a [b]:2)", [("a ", 2.0), ("b", round(2 / 1.1, 6))]),
        ("(a:-0.5) (b:0)", [("a", -0.5), (" ", 1.0), ("b", 0.0)]),
        ("(a:1e-1)", [("a", 0.1)]),
    ],
)
def test_weights(prompt, expected):
    assert weights_of(prompt) == expected


def test_explicit_weight_is_exact():
    assert parse_prompt("(a:1.3)") == [[("a", 1.3)]]
    assert parse_prompt("(a:1) b") == [[("a b", 1.0)]]


@pytest.mark.parametrize(
    "prompt, text",
    [
        (r"\(not weighted\)", "(not weighted)"),
        (r"a \[b\] \\ c", r"a [b] \ c"),
        (r"(time\: now:0.5)", "time: now"),
        (r"C:\path", r"C:\path"),
        ("ratio 16:9", "ratio 16:9"),
    ],
)
def test_escapes_and_literal_colons(prompt, text):
    sections = parse_prompt(prompt)
    assert "".join(t for t, _ in sections[0]) == text


def test_escaped_colon_weight_group():
    assert weights_of(r"(time\: now:0.5)") == [("time: now", 0.5)]


@pytest.mark.parametrize(
    "prompt, fragment",
    [
        ("a (red cat", "unclosed '(' opened at position 2"),
        ("a [red cat", "unclosed '[' opened at position 2"),
        ("a red) cat", "unexpected ')' at position 5"),
        ("a red] cat", "unexpected ']' at position 5"),
        ("(a]", "']' at position 2 closing '('"),
        ("(red:abc)", "non-numeric weight 'abc' at position 5"),
        ("(red:1.2.3)", "non-numeric weight '1.2.3'"),
        ("(red:inf)", "non-numeric weight 'inf'"),
        ("(red:)", "non-numeric weight ''"),
        ("[red:1.2]", "inside square brackets at position 4"),
    ],
)
def test_strict_malformed_prompts_name_the_position(prompt, fragment):
    with pytest.raises(ValueError, match="prompt has") as info:
        parse_prompt(prompt, strict=True)
    assert fragment in str(info.value)


def test_parse_rejects_non_strings():
    with pytest.raises(TypeError, match="prompt must be a str"):
        parse_prompt(["a"])


def test_break_makes_sections():
    assert parse_prompt("a cat BREAK (a dog)") == [[("a cat ", 1.0)], [(" ", 1.0), ("a dog", 1.1)]]
    assert len(parse_prompt("BREAKFAST BREAK")) == 1  # only the whole word, empty tails dropped
    assert parse_prompt("") == [[]]
    assert plain_text("a (red:1.3) cat BREAK dog") == "a red cat dog"


def test_chunk_tokens_prefers_comma_then_word():
    # 10 tokens; words end after tokens 2, 5 (comma), 7, 9
    bounds = [0, 0, 1, 0, 0, 2, 0, 1, 0, 1]
    ids = list(range(10))
    assert chunk_tokens(ids, bounds, chunk_size=7, comma_backtrack=3) == [(0, 6), (6, 10)]
    # comma too far back: cut after the last whole word instead
    assert chunk_tokens(ids, bounds, chunk_size=8, comma_backtrack=2) == [(0, 8), (8, 10)]
    # a word longer than a chunk is cut mid-word
    assert chunk_tokens(ids, [0] * 9 + [1], chunk_size=4) == [(0, 4), (4, 8), (8, 10)]
    assert chunk_tokens([], [], chunk_size=4) == [(0, 0)]
    with pytest.raises(ValueError, match="chunk_size"):
        chunk_tokens(ids, bounds, chunk_size=0)


def test_word_tokenization_matches_whole_prompt(tok):
    prompt = "A photo of a cat, sitting on a mat. Highly-detailed 8k!! (tokyo) café"
    whole = tok(prompt, add_special_tokens=False)["input_ids"]
    chunks = tokenize_prompt(prompt, [tok], parse_weights=False)
    assert chunks.ids == (tuple(whole),)
    assert set(chunks.weights[0]) == {1.0}


def test_long_prompt_chunks_keep_every_token_and_cut_at_words(tok):
    words = [f"word{i}" for i in range(120)]  # several tokens per word
    prompt = " ".join(words)
    whole = tok(prompt, add_special_tokens=False)["input_ids"]
    chunks = tokenize_prompt(prompt, [tok])
    assert len(whole) > 150 and len(chunks.ids) >= 3
    assert sum(chunks.ids, ()) == tuple(whole)  # nothing dropped, nothing added
    per_word = tok(words, add_special_tokens=False)["input_ids"]
    ends = {sum(len(w) for w in per_word[: k + 1]) for k in range(len(per_word))}
    start = 0
    for c in chunks.ids:
        assert 0 < len(c) <= 75
        start += len(c)
        assert start in ends  # every cut falls between words


def test_long_prompt_cuts_after_comma(tok):
    head = " ".join(["red"] * 60) + ", " + " ".join(["blue"] * 30)
    chunks = tokenize_prompt(head, [tok])
    assert len(chunks.ids[0]) == 61  # 60 words + the comma
    assert tok.convert_ids_to_tokens(chunks.ids[0][-1]).startswith(",")


def test_break_forces_new_chunk_and_weights_follow_tokens(tok):
    chunks = tokenize_prompt("a (red:1.5) cat BREAK [dog]", [tok])
    red = tok("red", add_special_tokens=False)["input_ids"]
    assert len(chunks.ids) == 2
    assert chunks.ids[0] == tuple(tok("a red cat", add_special_tokens=False)["input_ids"])
    assert chunks.weights[0] == (1.0,) + (1.5,) * len(red) + (1.0,)
    assert chunks.weights[1] == pytest.approx((1 / 1.1,))


def test_tokenizers_must_agree(tok):
    other = offline_tokenizer()
    other.add_tokens(["zzzcustom"])
    with pytest.raises(ValueError, match="tokenizers give different"):
        tokenize_prompt("a zzzcustom", [tok, other])


def test_chunk_tensors_wrap_and_pad():
    chunks = PromptChunks(((5, 6), (7,)), ((1.0, 2.0), (0.5,)))
    ids, w = chunk_tensors(chunks, bos=1, eos=2, pad=0, num_chunks=3, length=6)
    assert ids.tolist() == [[1, 5, 6, 2, 0, 0], [1, 7, 2, 0, 0, 0], [1, 2, 0, 0, 0, 0]]
    assert torch.equal(w[0], torch.tensor([1, 1, 2, 1, 1, 1.0]))
    assert torch.equal(w[1], torch.tensor([1, 0.5, 1, 1, 1, 1.0]))
    assert torch.equal(w[2], torch.ones(6))
    with pytest.raises(ValueError, match="num_chunks"):
        chunk_tensors(chunks, bos=1, eos=2, pad=0, num_chunks=1)


def test_word_ids_memo_follows_added_tokens():
    tok = offline_tokenizer()
    before = word_ids(tok, ["zzzcustom", "cat"])
    assert len(before[0]) > 1 and before == [
        tok(w, add_special_tokens=False)["input_ids"] for w in ["zzzcustom", "cat"]
    ]
    tok.add_tokens(["zzzcustom"])
    after = word_ids(tok, ["zzzcustom"])
    assert after == [[len(tok) - 1]]


# -- A1111 reading (defect: unbalanced prompts raised; A1111 reads them leniently) -------------
# Expected weights are those of the examples in the docstring of A1111's
# parse_prompt_attention (modules/prompt_parser.py of stable-diffusion-webui).
A1111_EXAMPLES = [
    ("normal text", [("normal text", 1.0)], None),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)], None),
    ("(unbalanced", [("unbalanced", 1.1)], "unclosed '(' at position 0"),
    (r"\(literal\]", [("(literal]", 1.0)], None),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)], None),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [
            ("a ", 1.0),
            ("house", 1.573),
            (" ", 1.1),
            ("on", 1.0),
            (" a ", 1.1),
            ("hill", 0.55),
            (", sun, ", 1.1),
            ("sky", 1.4641),
            (".", 1.1),
        ],
        "unclosed '(' at position 2",
    ),
]


@pytest.mark.parametrize("prompt, expected, warning", A1111_EXAMPLES)
def test_a1111_documented_examples(prompt, expected, warning):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = parse_prompt(prompt)
    assert [t for t, _ in got[0]] == [t for t, _ in expected]
    assert [w for _, w in got[0]] == pytest.approx([w for _, w in expected], rel=1e-12)
    ours = [w for w in caught if issubclass(w.category, PromptSyntaxWarning)]
    if warning is None:
        assert not ours
    else:
        assert len(ours) == 1 and warning in str(ours[0].message)
        assert ours[0].filename == __file__  # points at the caller, not into clipguide


@pytest.mark.parametrize(
    "prompt, expected, fragment",
    [
        ("a red) cat", [("a red) cat", 1.0)], "')' at position 5 closes nothing"),
        ("a red] cat", [("a red] cat", 1.0)], "']' at position 5 closes nothing"),
        ("([a)]", [("a", 1.0)], "')' at position 3 closes '(' at position 0 across '['"),
        ("(a]", [("a]", 1.1)], "']' at position 2 closes nothing"),
        ("[a (b", [("a ", 1 / 1.1), ("b", 1.0)], "unclosed '[' at position 0, '(' at position 3"),
        ("(red:1.2.3)", [("red:1.2.3", 1.1)], "malformed weight '1.2.3' at position 5"),
        ("(red:)", [("red:", 1.1)], "malformed weight '' at position 5"),
    ],
)
def test_lenient_repairs_warn_once_naming_positions(prompt, expected, fragment):
    with pytest.warns(PromptSyntaxWarning) as caught:
        got = weights_of(prompt)
    assert got == [(t, round(w, 6)) for t, w in expected]
    assert len(caught) == 1 and fragment in str(caught[0].message)
    assert "strict=True" in str(caught[0].message)


def test_several_repairs_make_one_warning():
    with pytest.warns(PromptSyntaxWarning) as caught:
        parse_prompt("a) b] (c [d")
    (message,) = [str(w.message) for w in caught]
    for fragment in ("position 1", "position 4", "'(' at position 6", "'[' at position 9"):
        assert fragment in message


@pytest.mark.parametrize(
    "prompt, expected",
    [
        ("(red:abc)", [("red:abc", 1.1)]),  # A1111: the ':' is text, the group is x1.1
        ("(16:9 ratio)", [("16:9 ratio", 1.1)]),
        ("[a:b]", [("a:b", round(1 / 1.1, 6))]),  # not prompt editing: no number
        ("a | b", [("a | b", 1.0)]),  # '|' outside square brackets is text
        ("(red:inf)", [("red:inf", 1.1)]),
    ],
)
def test_colons_a1111_reads_as_text_give_no_warning(prompt, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert weights_of(prompt) == expected


@pytest.mark.parametrize(
    "prompt, text, fragment",
    [
        ("a [cat:dog:0.5] b", "a cat:dog:0.5 b", "prompt editing"),
        ("a [dog:0.5]", "a dog:0.5", "prompt editing"),
        ("a [cat|dog] b", "a cat|dog b", "alternation"),
        ("a cat AND a dog", "a cat AND a dog", "composable diffusion"),
    ],
)
def test_unsupported_a1111_syntax_warns_and_strict_raises(prompt, text, fragment):
    with pytest.warns(PromptSyntaxWarning, match=fragment):
        sections = parse_prompt(prompt)
    assert "".join(t for t, _ in sections[0]) == text
    with pytest.raises(ValueError, match="prompt has") as info:
        parse_prompt(prompt, strict=True)
    assert "A1111" in str(info.value) and "position" in str(info.value)


def test_valid_prompts_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for prompt in ["a (red:1.3) [cat]", r"C:\path \(x\)", "ratio 16:9", "a BREAK b", "Ands"]:
            parse_prompt(prompt)
            parse_prompt(prompt, strict=True)


# -- weights beyond float32 (defect: gave inf embeddings silently) -----------------------------
@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize(
    "prompt, fragment",
    [
        ("a ((red circle:1e300):1e300)", "weight '1e300' at position 15"),
        ("a ((red circle:1e30):1e30)", "span 'red circle' at position 4"),
        ("(" * 2000 + "x" + ")" * 2000, "span 'x' at position 2000"),
        ("(" * 1000 + "x" + ")" * 1000, "1000 nested group weights"),
        ("(x:1e39)", "weight '1e39' at position 3"),
        ("(x:-1e39)", "weight '-1e39' at position 3"),
        ("(x:1e999)", "weight '1e999' at position 3"),
    ],
)
def test_weights_beyond_float32_are_refused(prompt, fragment, strict):
    with pytest.raises(ValueError, match="float32") as info:
        parse_prompt(prompt, strict=strict)
    assert fragment in str(info.value)


def test_largest_float32_weight_is_accepted():
    assert parse_prompt(f"(x:{MAX_WEIGHT!r})") == [[("x", MAX_WEIGHT)]]
    assert parse_prompt("(" * 900 + "x" + ")" * 900)[0][0][1] == pytest.approx(1.1**900)


# -- chunk size follows the tokenizer (defect: 75 hard-coded) ----------------------------------
def test_chunk_size_follows_model_max_length(tok):
    short = offline_tokenizer(model_max_length=32)
    prompt = " ".join(["red circle"] * 20)
    whole = short(prompt, add_special_tokens=False)["input_ids"]
    chunks = tokenize_prompt(prompt, [short])
    assert [len(c) for c in chunks.ids] == [30, 10]
    assert sum(chunks.ids, ()) == tuple(whole)
    ids, _ = chunk_tensors(chunks, bos=1, eos=2, pad=0, length=32)  # fits: no error
    assert ids.shape == (2, 32)
    assert len(tokenize_prompt(prompt, [tok]).ids) == 1  # 40 tokens fit CLIP's 75
    assert [len(c) for c in tokenize_prompt(prompt, [tok, short]).ids] == [30, 10]
