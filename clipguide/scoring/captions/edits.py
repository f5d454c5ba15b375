"""The five kinds of one-binding edits behind :func:`clipguide.scoring.captions.hard_negatives`.

Each maker reads a prompt's tokens and noun phrases (:mod:`clipguide.scoring.captions.parse`) and returns
:class:`Negative` captions in prompt order; the public function filters and orders them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from clipguide.scoring.captions import lexicon as lex
from clipguide.scoring.captions.parse import NounPhrase, Token, chunk, tokenize

__all__ = ["ALL_KINDS", "MAKERS", "MAX_OBJECTS", "Negative", "PromptDoc", "negated_relation"]

ALL_KINDS = ("swap_attribute", "change_count", "swap_relation", "swap_objects", "drop_object")
MAX_OBJECTS = 16  # object phrases considered for pairwise edits (CLIP sees 77 tokens anyway)
_MAX_COUNT_UP = 4  # counts above four are moved down only

Edit = tuple[int, int, str]  # replace text[start:end] by the string


@dataclass(frozen=True)
class Negative:
    """A caption that differs from the prompt in one binding."""

    text: str
    kind: str
    detail: str


class PromptDoc:
    """A prompt's plain text, tokens and phrases, with lookups the edits share."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = tokenize(text)
        self.phrases = chunk(self.toks, text)
        self.objects = [p for p in self.phrases if p.is_object][:MAX_OBJECTS]
        # object phrases the prompt says are absent ("no people"): never edited
        self.negated = [p for p in self.phrases if p.negated]
        # objects whose words can be rewritten (not tags such as "1girl")
        self.editable = [p for p in self.objects if not any(c.isdigit() for c in p.head)]
        self.object_ids = {id(p) for p in self.objects}
        self.inside = {i for p in self.phrases for i in range(p.first_token, p.last_token + 1)}
        self.by_first = {p.first_token: p for p in self.phrases}
        self.by_last = {p.last_token: p for p in self.phrases}


def negated_relation(doc: PromptDoc, k: int) -> bool:
    """Whether relation token ``k`` is negated ("a circle not left of a square")."""
    return k > 0 and doc.toks[k - 1].cls == "neg"


def _apply(text: str, edits: list[Edit]) -> str:
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    return text


def _uncap(words: list[str], np: NounPhrase) -> list[str]:
    """Lower a sentence-initial capital when the phrase moves away from the start."""
    w = words[0] if words else ""
    if np.start == 0 and w[:1].isupper() and (len(w) == 1 or not w.isupper()):
        return [w[:1].lower() + w[1:], *words[1:]]
    return words


def _render(words: list[str]) -> str:
    """Join phrase words, fixing "a"/"an" before the new first word after it."""
    words = list(words)
    if len(words) > 1 and words[0].lower() in ("a", "an"):
        words[0] = lex.article_for(words[1], like=words[0])
    return " ".join(words)


def _slot(np: NounPhrase, role: str) -> int | None:
    return next((i for i, r in enumerate(np.roles) if r == role), None)


def _signature(words: Iterable[str], roles: Iterable[str]) -> tuple:
    """What a phrase asks for, regardless of word order and inflection."""
    return _signature_of(tuple(words), tuple(roles))


@lru_cache(maxsize=4096)
def _signature_of(words: tuple[str, ...], roles: tuple[str, ...]) -> tuple:
    parts = sorted(
        (r, lex.singularize(w.lower()) if r == "head" else w.lower())
        for w, r in zip(words, roles, strict=True)
        if r != "det" or w.lower() not in ("a", "an")
    )
    return tuple(parts)


def _coordinated(doc: PromptDoc, a: NounPhrase, b: NounPhrase) -> bool:
    """Whether only 'and'-like words, commas and other phrases stand between a and b."""
    return all(
        i in doc.inside or t.cls == "punct" or t.low in lex.COORDINATORS
        for i, t in enumerate(doc.toks[a.last_token + 1 : b.first_token], a.last_token + 1)
    )


def _same_clause(doc: PromptDoc, a: NounPhrase, b: NounPhrase) -> bool:
    """Whether no punctuation separates a and b, and b is not a's "of" complement."""
    between = doc.toks[a.last_token + 1 : b.first_token]
    of_linked = len(between) == 1 and between[0].low == "of"
    return not of_linked and not any(t.cls == "punct" for t in between)


def _trivial(doc: PromptDoc, a, b, new_a: tuple, new_b: tuple) -> bool:
    """Whether an edit of two coordinated phrases leaves what is asked for unchanged."""
    old = Counter([_signature(a.words, a.roles), _signature(b.words, b.roles)])
    new = Counter([_signature(*new_a), _signature(*new_b)])
    return old == new and _coordinated(doc, a, b)


# ------------------------------------------------------------------ swap_attribute
def _insert_at(np: NounPhrase, kind: str) -> int:
    """Where an attribute of ``kind`` goes in a phrase (English adjective order, roughly)."""
    rank = lex.ATTRIBUTE_KINDS_ORDER
    i = 0
    while i < len(np.roles) - 1:
        r, w = np.roles[i], np.words[i].lower()
        if r in ("det", "num", "poss") or (r in rank and rank[r] < rank[kind]):
            i += 1
        elif r == "other" and lex.looks_adjectival(w):
            i += 1
        else:
            break
    return i


def _attribute_edits(doc: PromptDoc, a: NounPhrase, b: NounPhrase, kind: str) -> Negative | None:
    ia, ib = _slot(a, kind), _slot(b, kind)
    wa, wb, ra, rb = list(a.words), list(b.words), list(a.roles), list(b.roles)
    if ia is not None and ib is not None:
        if wa[ia].lower() == wb[ib].lower():
            return None
        wa[ia], wb[ib] = wb[ib], _uncap([wa[ia]], a)[0] if ia == 0 else wa[ia]
        detail = f"{kind}: {a.words[ia]!r} <-> {b.words[ib]!r}"
    elif ia is not None or ib is not None:
        (src, ws, rs, i), (dst, wd, rd) = (
            ((a, wa, ra, ia), (b, wb, rb)) if ia is not None else ((b, wb, rb, ib), (a, wa, ra))
        )
        moved = ws.pop(i)
        moved = moved[:1].lower() + moved[1:] if src.start == 0 and i == 0 else moved
        rs.pop(i)
        at = _insert_at(dst, kind)
        wd.insert(at, moved)
        rd.insert(at, kind)
        detail = f"{kind}: {moved!r} moved from {src.head!r} to {dst.head!r}"
    else:
        return None
    if _trivial(doc, a, b, (wa, ra), (wb, rb)):
        return None
    edits = [(a.start, a.end, _render(wa)), (b.start, b.end, _render(wb))]
    return Negative(_apply(doc.text, edits), "swap_attribute", detail)


def _swap_attribute(doc: PromptDoc) -> list[Negative]:
    """Swaps of two attributes first (the harder negatives), then moves of one."""
    objs = doc.editable
    swaps, moves = [], []
    for kind in lex.ATTRIBUTE_KINDS:
        if not any(kind in np.roles for np in objs):
            continue
        for i, a in enumerate(objs):
            for b in objs[i + 1 :]:
                neg = _attribute_edits(doc, a, b, kind)
                if neg is not None:
                    (swaps if kind in a.roles and kind in b.roles else moves).append(neg)
    return swaps + moves


# ------------------------------------------------------------------ change_count
def _change_count(doc: PromptDoc) -> list[Negative]:
    out = []
    for np in doc.editable:
        if np.count is None:
            continue
        i = _slot(np, "num")
        i = 0 if i is None and np.roles[0] == "det" else i
        if i is None:
            continue
        n, like = np.count, np.words[i]
        like = "two" if like.lower() in ("a", "an") and like.islower() else like
        like = "Two" if like in ("A", "An") else like
        targets = ([n + 1] if n < _MAX_COUNT_UP else []) + ([n - 1] if n > 1 else [])
        for m in targets:
            words = list(np.words)
            words[i] = lex.format_number(m, like)
            words[-1] = lex.inflect(np.head, plural=m != 1)
            text = _apply(doc.text, [(np.start, np.end, _render(words))])
            out.append(Negative(text, "change_count", f"count of {np.head!r}: {n} -> {m}"))
    return out


# ------------------------------------------------------------------ swap_relation
def _neighbours(doc: PromptDoc, k: int) -> tuple[NounPhrase | None, NounPhrase | None]:
    """The phrase ending before token k in its clause, and the one starting right after it."""
    before = None
    for j in range(k - 1, -1, -1):
        if doc.toks[j].cls == "punct":
            break
        if j in doc.by_last:
            before = doc.by_last[j]
            break
    return before, doc.by_first.get(k + 1)


def _swap_relation(doc: PromptDoc) -> list[Negative]:
    out = []
    for k, t in enumerate(doc.toks):
        if t.cls != "rel" or negated_relation(doc, k):
            continue
        before, after = _neighbours(doc, k)
        if before is None or id(before) not in doc.object_ids:
            continue
        landmark = after is not None and id(after) in doc.object_ids
        opposite = lex.opposite_relation(t.low)
        if opposite and (landmark or t.low in lex.POSITIONAL_RELATIONS):
            opposite = opposite[:1].upper() + opposite[1:] if t.text[:1].isupper() else opposite
            text = _apply(doc.text, [(t.start, t.end, opposite)])
            out.append(Negative(text, "swap_relation", f"{t.text!r} -> {opposite!r}"))
        if landmark and t.low in lex.ASYMMETRIC_RELATIONS and before.last_token == k - 1:
            neg = _exchange(doc, before, after, t)
            if neg is not None:
                out.append(neg)
    return out


def _of_unit(doc: PromptDoc, np: NounPhrase, step: int) -> NounPhrase:
    """The outermost phrase of an "X of Y" chain through ``np``, walking left (-1) or right."""
    while True:
        k = np.first_token - 1 if step < 0 else np.last_token + 1
        if not (0 <= k < len(doc.toks)) or doc.toks[k].low != "of":
            return np
        nxt = doc.by_last.get(k - 1) if step < 0 else doc.by_first.get(k + 1)
        if nxt is None or not nxt.is_object:
            return np
        np = nxt


def _exchange(doc: PromptDoc, before: NounPhrase, after: NounPhrase, rel: Token) -> Negative | None:
    """Exchange the phrases (with their "of" complements) on the two sides of a relation."""
    a0, b1 = _of_unit(doc, before, -1), _of_unit(doc, after, +1)
    left, right = doc.text[a0.start : before.end], doc.text[after.start : b1.end]
    if left.lower() == right.lower():
        return None
    moved = " ".join(_uncap(left.split(" "), a0))
    edits = [(a0.start, before.end, right), (after.start, b1.end, moved)]
    detail = f"{left!r} and {right!r} exchanged around {rel.text!r}"
    return Negative(_apply(doc.text, edits), "swap_relation", detail)


# ------------------------------------------------------------------ swap_objects
def _swap_objects(doc: PromptDoc) -> list[Negative]:
    objs = doc.editable
    out = []
    for i, a in enumerate(objs):
        for b in objs[i + 1 :]:
            ha, hb = lex.singularize(a.head.lower()), lex.singularize(b.head.lower())
            if ha == hb or not _same_clause(doc, a, b) or not (a.determiner and b.determiner):
                continue
            if _coordinated(doc, a, b) and _same_as_attribute_swap(a, b):
                continue
            wa = [*a.words[:-1], lex.inflect(lex.singularize(b.head), a.plural)]
            wb = [*b.words[:-1], lex.inflect(lex.singularize(a.head), b.plural)]
            edits = [(a.start, a.end, _render(_uncap(wa, a))), (b.start, b.end, _render(wb))]
            detail = f"nouns {a.head!r} <-> {b.head!r}"
            out.append(Negative(_apply(doc.text, edits), "swap_objects", detail))
    return out


def _same_as_attribute_swap(a: NounPhrase, b: NounPhrase) -> bool:
    """Whether swapping the nouns of coordinated phrases says nothing new: their other words
    are the same, or differ in one attribute kind only (then an attribute swap says it)."""
    sa, sb = _signature(a.words[:-1], a.roles[:-1]), _signature(b.words[:-1], b.roles[:-1])
    kinds = {r for r, _ in set(sa) ^ set(sb)}
    return len(kinds) <= 1 and kinds <= set(lex.ATTRIBUTE_KINDS)


# ------------------------------------------------------------------ drop_object
def _drop_span(doc: PromptDoc, idx: int) -> tuple[int, int]:
    """Token range [lo, hi] to delete to drop phrase ``idx`` (see the module docstring)."""
    toks, np = doc.toks, doc.phrases[idx]
    lo = np.first_token
    while lo > 0 and toks[lo - 1].cls != "punct":
        lo -= 1
    hi = np.last_token
    while hi + 1 < len(toks) and toks[hi + 1].cls != "punct":
        hi += 1
    prev = next((p for p in reversed(doc.phrases[:idx]) if p.last_token >= lo), None)
    end, k = np.last_token, idx + 1  # the phrase with its "of" complements ("a glass of milk")
    while (
        k < len(doc.phrases)
        and toks[end + 1 : doc.phrases[k].first_token]
        == [t for t in toks[end + 1 : end + 2] if t.low == "of"]
        and end + 2 == doc.phrases[k].first_token
    ):
        end, k = doc.phrases[k].last_token, k + 1
    nxt = doc.phrases[k] if k < len(doc.phrases) and doc.phrases[k].first_token <= hi else None
    left = toks[prev.last_token + 1 if prev else lo : np.first_token]
    right = toks[end + 1 : nxt.first_token if nxt else hi + 1]
    first = np.first_token - len(left)
    if left and (left[-1].low in lex.COORDINATORS or left[-1].low in lex.COORDINATOR_PHRASES):
        return np.first_token - 1, end
    if left and prev and prev.is_object and left[-1].low == "of":
        return np.first_token - 1, end
    if nxt and len(right) == 1 and right[0].low in lex.COORDINATORS - {"with"}:
        return np.first_token, end + 1
    if left and prev and prev.is_object and left[-1].cls in ("rel", "prep", "adv", "verb"):
        j = np.first_token - 1
        if left[-1].cls in ("adv", "verb"):
            while j - 1 >= first and toks[j - 1].low in lex.AUXILIARIES:
                j -= 1
        return j, end
    if nxt:
        return np.first_token, nxt.first_token - 1
    if left and left[-1].cls in ("rel", "prep"):
        return np.first_token - 1, end
    if any(p.is_object for p in doc.phrases if lo <= p.first_token <= hi and p is not np):
        return np.first_token, end
    lo -= 1 if hi + 1 >= len(toks) and lo > 0 and toks[lo - 1].low == "," else 0
    hi += 1 if hi + 1 < len(toks) and toks[hi + 1].low == "," else 0
    return lo, hi


def _drop_object(doc: PromptDoc) -> list[Negative]:
    objs = doc.objects
    if len(objs) < 2:
        return []
    out = []
    for idx, np in enumerate(doc.phrases):
        if id(np) not in doc.object_ids:
            continue
        lo, hi = _drop_span(doc, idx)
        while lo > 0 and doc.toks[lo - 1].cls == "neg":  # "a circle not left of a square"
            lo -= 1
        text = _apply(doc.text, [(doc.toks[lo].start, doc.toks[hi].end, "")])
        text = " ".join(text.split()).replace(" ,", ",").replace(",,", ",")
        out.append(Negative(text, "drop_object", f"dropped {np.text!r}"))
    return out


MAKERS = {
    "swap_attribute": _swap_attribute,
    "change_count": _change_count,
    "swap_relation": _swap_relation,
    "swap_objects": _swap_objects,
    "drop_object": _drop_object,
}
