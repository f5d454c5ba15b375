"""Weight syntax parsing and long-prompt chunking (no model)."""

import pytest
import torch

from clipguide.prompts import (
    PromptChunks,
    chunk_tensors,
    chunk_tokens,
    parse_prompt,
    plain_text,
    tokenize_prompt,
    word_ids,
)
from clipguide.tokenizer import offline_tokenizer


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
def test_malformed_prompts_name_the_position(prompt, fragment):
    with pytest.raises(ValueError, match="prompt has") as info:
        parse_prompt(prompt)
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
