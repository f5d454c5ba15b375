"""The offline tokenizer gives open_clip's ids on a varied corpus."""

import random

import open_clip
import pytest
import torch

from clipguide.model.tokenizer import offline_tokenizer

HAND = [
    "",
    " ",
    "a photo of a cat",
    "A Photo Of A CAT",
    "two red circles above a blue square",
    "Hello, world! How's it going? I'm fine; you'll see.",
    "price: $1,299.99 (20% off) #deal @shop",
    "3.14159 2718 0 007 1e-9",
    "Crème brûlée à la façon de Noël",
    "naïve café résumé coöperate",
    "Ångström Ærøskøbing Straße",
    "東京タワーの夜景",
    "北京烤鸭 和 上海小笼包",
    "한국어 문장입니다",
    "Привет, как дела?",
    "مرحبا بالعالم",
    "שלום עולם",
    "🚀🔥 rocket fire 🎉",
    "👩‍👩‍👧‍👦 family emoji",
    "flag 🇫🇷 and 🇯🇵",
    "&amp; &lt;b&gt;bold&lt;/b&gt; &quot;q&quot; &#39;s &nbsp;x",
    "&amp;amp; double-escaped",
    "“curly quotes” and ‘single’ — em dash – en dash …",
    "tabs\tand\nnewlines\r\nand   many    spaces",
    "   leading and trailing   ",
    "UPPER lower MiXeD",
    "don't won't can't it's we've they're I'd",
    "(masterpiece:1.3), [ugly], (((best quality)))",
    "a, b, c, d, e, f, g",
    "http://example.com/path?query=1&x=2",
    "email@example.com",
    "C++ and C# and F#",
    "snake_case camelCase kebab-case",
    "1st 2nd 3rd 4th",
    "½ ¼ ¾ ² ³",
    "mojibake: Ã©tÃ© cafÃ©",
    "zero\u200bwidth space",
    "non\u00a0breaking",
    "ﬁ ligature ﬂ",
    "fullwidth ＡＢＣ １２３",
]

ALPHABET = (
    list("abcdefghijklmnopqrstuvwxyz ABCXYZ0123456789,.;:!?'\"()[]{}<>-_/\\&#%@*+=")
    + list("éèàçüöñøåßœæ東京日本中文한🚀🎉👍™©®°±µ")
    + ["&amp;", "&lt;", "&gt;", "&quot;", "  ", "\t", "\n"]
)


def _corpus() -> list[str]:
    rng = random.Random(1234)
    out = list(HAND)
    for _ in range(150):
        n = rng.randint(1, 60)
        out.append("".join(rng.choice(ALPHABET) for _ in range(n)))
    words = (
        "red green blue circle square triangle above below left right of the a two three".split()
    )
    for k in (60, 80, 120, 200, 400):
        out.append(" ".join(rng.choice(words) for _ in range(k)))  # far past 77 tokens
        out.append(", ".join(rng.choice(words) for _ in range(k)))
    return out


@pytest.fixture(scope="module")
def tokenizers():
    return offline_tokenizer(), open_clip.get_tokenizer("ViT-bigG-14")


def test_vocabulary_matches_bigg(tokenizers):
    tok, _ = tokenizers
    assert len(tok) == 49408
    assert tok.pad_token == "!" and tok.pad_token_id == 0
    assert (tok.bos_token_id, tok.eos_token_id) == (49406, 49407)
    assert tok.model_max_length == 77


def test_ids_identical_to_open_clip_on_corpus(tokenizers):
    tok, ref = tokenizers
    corpus = _corpus()
    assert len(corpus) >= 200
    ours = tok(corpus, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    theirs = ref(corpus)
    bad = [
        s for s, a, b in zip(corpus, ours.input_ids, theirs, strict=True) if not torch.equal(a, b)
    ]
    assert not bad, f"{len(bad)} strings differ, e.g. {bad[:3]!r}"


def test_long_prompt_keeps_end_token(tokenizers):
    tok, _ = tokenizers
    ids = tok("word " * 300, padding="max_length", max_length=77, truncation=True).input_ids
    assert len(ids) == 77 and ids[0] == 49406 and ids[-1] == 49407


def test_decode_round_trips_words():
    tok = offline_tokenizer()
    ids = tok("flat colours, two red circles!").input_ids
    assert tok.decode(ids, skip_special_tokens=True) == "flat colours , two red circles !"
