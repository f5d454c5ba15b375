"""Plain text of a prompt and a lexicon-driven noun-phrase chunker (no tagger, no model).

A noun phrase starts at a determiner, a number, an attribute word or a content word and runs
to its head noun, which is its last word before a preposition, a spatial relation, a
conjunction, punctuation, a verb, or a participle/adverb-like word that follows a head
("a red fox asleep in ...", "a man holding ..."). Such words before any head are modifiers
("a sleeping cat"). Spans index :func:`plain_prompt`'s output, not the raw prompt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

from clipguide.scoring.captions import lexicon as lex

__all__ = ["NounPhrase", "Token", "noun_phrases", "plain_prompt", "tokenize"]

_LORA = re.compile(r"<(?:lora|lyco|hypernet|embedding):[^>]*>", re.IGNORECASE)
_WEIGHT = re.compile(r":\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*$")
_BREAK = re.compile(r"\s*(?<!\S)BREAK(?!\S)\s*")
_ESCAPED = {c: chr(0xE000 + i) for i, c in enumerate("()[]:\\")}
_UNESCAPE = str.maketrans({v: k for k, v in _ESCAPED.items()})
_WORD = re.compile(r"[^\W_]+(?:['’\-][^\W_]+)*|\S")
_DANBOORU_COUNT = re.compile(r"\d+(girl|boy|other)s?")


def plain_prompt(prompt: str) -> str:
    """The prompt as plain text: A1111 weights, brackets and LoRA tags removed, BREAK -> ','.

    Lenient where :func:`clipguide.conditioning.prompts.parse_prompt` is strict: a stray bracket is dropped
    instead of raising, so any string gives a result. Whitespace is collapsed.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}: {prompt!r}")
    text = re.sub(r"\\([()\[\]:\\])", lambda m: _ESCAPED[m.group(1)], _LORA.sub(" ", prompt))
    out: list[str] = []
    opened: list[int] = []  # output length at each open bracket
    for c in text:
        if c in "([":
            opened.append(len(out))
        elif c in ")]":
            if opened:
                start = opened.pop()
                tail = "".join(out[max(start, len(out) - 40) :])  # a weight is short
                weight = _WEIGHT.search(tail)
                if weight:
                    del out[len(out) - len(tail) + weight.start() :]
        else:
            out.append(c)
    text = re.sub(r"\s+", " ", _BREAK.sub(", ", "".join(out).translate(_UNESCAPE)))
    text = re.sub(r"\s*,(\s*,)+", ",", text)
    return text.strip(" ,")


class Token(NamedTuple):
    """A word or lexicon phrase of the plain prompt with its class (and attribute kind)."""

    text: str
    low: str
    start: int
    end: int
    cls: str  # det num attr word poss adj adv pred rel prep conj verb pron style punct neg
    kind: str | None = None


_PHRASES: dict[tuple[str, ...], tuple[str, str | None]] = {
    **{tuple(r.split()): ("rel", None) for r in lex.RELATIONS},
    **{tuple(p.split()): ("style", None) for p in ("in the style of", "in style of")},
    **{tuple(p.split()): ("conj", None) for p in ("as well as", "along with", "together with")},
    **{tuple(p.split()): ("pron", None) for p in ("each other", "one another")},
    **{tuple(p.split()): ("word", None) for p in lex.COMPOUND_NOUNS},
}
_PHRASE_STARTS = frozenset(k[0] for k in _PHRASES)
_MAX_PHRASE = max(len(k) for k in _PHRASES)


@lru_cache(maxsize=8192)
def _word_class(low: str) -> tuple[str, str | None]:
    if not (low[0].isalnum()):
        return ("conj", None) if low == "&" else ("punct", None)
    if low in lex.NEGATORS and low not in ("without", "nor"):
        return "neg", None
    if low in lex.DETERMINERS:
        return "det", None
    if lex.parse_number(low) is not None:
        return "num", None
    for cls, words in (
        ("conj", lex.CONJUNCTIONS),
        ("prep", lex.PREPOSITIONS),
        ("pron", lex.PRONOUNS),
        ("verb", lex.VERBS),
    ):
        if low in words:
            return cls, None
    kind = lex.attribute_kind(low)
    if kind:
        return "attr", kind
    if low in lex.PREDICATIVES:
        return "pred", None
    if low in lex.DEGREE_ADVERBS or lex.looks_participle(low):
        return "adv", None
    if lex.looks_adjectival(low):
        return "adj", None
    if low.endswith(("'s", "’s")):
        return "poss", None
    return "word", None


def _merge_colours(toks: list[Token], text: str) -> list[Token]:
    """Join tone + colour ('light blue') and colour 'and' colour ('black and white')."""
    out: list[Token] = []
    for t in toks:
        prev = out[-1] if out else None
        if t.kind == "colour" and prev is not None:
            if prev.low in lex.COLOUR_TONES and prev.end + 1 == t.start:
                joined = text[prev.start : t.end]
                out[-1] = Token(joined, joined.lower(), prev.start, t.end, "attr", "colour")
                continue
            if prev.low == "and" and len(out) > 1 and out[-2].kind == "colour":
                first = out[-2]
                joined = text[first.start : t.end]
                out[-2:] = [Token(joined, joined.lower(), first.start, t.end, "attr", "colour")]
                continue
        out.append(t)
    return out


def tokenize(text: str) -> list[Token]:
    """Tokens of plain text; relation, style and compound phrases become one token each."""
    words = [(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]
    lows = [w.lower() for w, _, _ in words]
    toks: list[Token] = []
    i = 0
    while i < len(words):
        longest = min(_MAX_PHRASE, len(words) - i) if lows[i] in _PHRASE_STARTS else 1
        for k in range(longest, 1, -1):
            key = tuple(lows[i : i + k])
            hit = _PHRASES.get(key)
            if hit is None and k == 2:  # compound nouns in the plural
                hit = _PHRASES.get((key[0], lex.singularize(key[1])))
            if hit:
                start, end = words[i][1], words[i + k - 1][2]
                toks.append(Token(text[start:end], " ".join(key), start, end, *hit))
                i += k
                break
        else:
            low = lows[i]
            cls, kind = ("rel", None) if low in lex.RELATION_WORDS else _word_class(low)
            toks.append(Token(words[i][0], low, words[i][1], words[i][2], cls, kind))
            i += 1
    return _merge_colours(toks, text)


@dataclass(frozen=True)
class NounPhrase:
    """A noun phrase of the plain prompt.

    ``words``/``roles`` list its tokens; roles are ``det``, ``num``, ``poss``, an attribute kind
    (``colour``, ``size``, ``age``, ``texture``, ``shape``, ``material``), ``other`` (an
    unclassified modifier such as "birch" in "birch forest") and ``head``. ``count`` is the
    number asked for ("two", "3", 1 for "a"/"an"), None when unknown ("the cats", "cats").
    ``is_object`` is False for heads that name the picture, style, light, time or weather,
    and for negated phrases: ``negated`` is True for a phrase naming an object that the prompt
    says is absent ("no blue square", "without a collar", "not a dog", "no cats or dogs").
    """

    text: str
    start: int
    end: int
    determiner: str | None
    count: int | None
    head: str
    plural: bool
    is_object: bool
    words: tuple[str, ...]
    roles: tuple[str, ...]
    first_token: int  # index into tokenize(plain_prompt(prompt))
    last_token: int
    negated: bool = False

    @property
    def attributes(self) -> dict[str, tuple[str, ...]]:
        """Modifier words by kind (attribute kinds and 'other'), in prompt order."""
        out: dict[str, tuple[str, ...]] = {}
        for w, r in zip(self.words, self.roles, strict=True):
            if r not in ("det", "num", "poss", "head"):
                out[r] = out.get(r, ()) + (w,)
        return out


def _is_object(head: str, modifiers: list[str], before: Token | None, has_det: bool) -> bool:
    """False for heads naming style, light, camera, time, weather, credits ("by X")."""
    low = head.lower().rpartition(" ")[2]
    if len(low) == 1 and low.isascii():
        return False
    if any(ch.isdigit() for ch in low):
        return bool(_DANBOORU_COUNT.fullmatch(low))
    single = lex.singularize(low)
    if modifiers and (modifiers[-1].lower(), single) in lex.OBJECT_COMPOUNDS:
        return True
    if single in lex.NON_OBJECT_HEADS or low in lex.NON_OBJECT_HEADS:
        return False
    if lex.looks_adjectival(low) or (head.lower() in lex.NON_OBJECT_COMPOUNDS):
        return False
    if before is not None and (before.cls == "style" or (before.low == "by" and not has_det)):
        return False
    return True


def _close(
    toks: list[Token], slots: list[tuple[int, str]], text: str, negated: bool = False
) -> NounPhrase | None:
    """Build the phrase from its (token index, role) slots; None when it has no head.
    ``negated``: the phrase follows a negator (see :data:`lex.NEGATORS`)."""
    while slots and slots[-1][1] in ("det", "num", "poss"):
        slots.pop()
    if not slots:
        return None
    last_i, last_role = slots[-1]
    if last_role == "attr" and toks[last_i].low not in lex.NOUNABLE:
        return None
    roles = [
        toks[i].kind or "other" if r == "attr" else ("other" if r in ("word", "adv") else r)
        for i, r in slots
    ]
    roles[-1] = "head"
    words = [toks[i].text for i, _ in slots]
    first = slots[0][0]
    num = next((toks[i].low for i, r in slots if r == "num"), None)
    det = toks[first].text if slots[0][1] in ("det", "num") else None
    count = lex.parse_number(num) if num else None
    if count is None and det is not None and det.lower() in ("a", "an") and "poss" not in roles:
        count = 1
    head = words[-1]
    plural = lex.is_plural(head) or (count is not None and count > 1)
    before = toks[first - 1] if first > 0 else None
    modifiers = [w for w, r in zip(words, roles, strict=True) if r == "other"]
    start, end = toks[first].start, toks[last_i].end
    names_object = _is_object(head, modifiers, before, det is not None)
    return NounPhrase(
        text=text[start:end],
        start=start,
        end=end,
        determiner=det,
        count=count,
        head=head,
        plural=plural,
        is_object=names_object and not negated,
        words=tuple(words),
        roles=tuple(roles),
        first_token=first,
        last_token=last_i,
        negated=names_object and negated,
    )


def chunk(toks: list[Token], text: str) -> list[NounPhrase]:
    """Noun phrases of a token list (see the module docstring for the rules).

    A phrase that starts right after a negator ("no", "not", "without", "nor", ...), or after
    "or"/"of" following a negated phrase, is negated.
    """
    phrases: list[NounPhrase] = []
    slots: list[tuple[int, str]] = []
    has_head = False  # a content word that can end the phrase has been seen
    content = False  # a word, attribute or modifier has been seen
    pending = False  # the next phrase is negated
    negated = False  # the open phrase is negated

    def close() -> None:
        nonlocal has_head, content, negated
        if slots:
            np = _close(toks, slots, text, negated)
            if np is not None:
                phrases.append(np)
        slots.clear()
        has_head = content = negated = False

    def add(i: int, role: str) -> None:
        nonlocal pending, negated
        if not slots:
            negated, pending = pending, False
        slots.append((i, role))

    for i, t in enumerate(toks):
        if t.cls == "det" or t.cls == "num":
            if content:
                close()
            add(i, t.cls)
        elif t.cls == "poss":
            add(i, "poss")
        elif t.cls in ("attr", "word", "adj") or (t.cls == "adv" and not has_head):
            # "soft golden light": an attribute after a word stays in the phrase
            add(i, t.cls if t.cls in ("attr", "word") else "adv")
            has_head = has_head or t.cls == "word"
            content = True
        else:
            carried = bool(slots) and negated and t.low in lex.NEGATION_CARRIERS
            close()
            pending = carried or t.low in lex.NEGATORS
    close()
    return phrases


def noun_phrases(prompt: str) -> list[NounPhrase]:
    """Noun phrases of a free-form prompt, spans on ``plain_prompt(prompt)``.

    Includes phrases that are not objects (``is_object`` False: "85mm lens", "soft light").
    """
    text = plain_prompt(prompt)
    return chunk(tokenize(text), text)
