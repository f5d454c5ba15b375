"""An offline transformers ``CLIPTokenizer`` built from the BPE vocabulary open_clip ships.

open_clip's pip package carries ``bpe_simple_vocab_16e6.txt.gz``; from it we build the same
49,408-token vocabulary and merge list that ``laion/CLIP-ViT-bigG-14-laion2B-39B-b160k`` and
SDXL's ``tokenizer_2`` use, so no hub download is needed. The text is cleaned the way open_clip
cleans it (ftfy, HTML unescape, whitespace) before the BPE runs, so ids match
``open_clip.get_tokenizer("ViT-bigG-14")`` exactly.
"""

from __future__ import annotations

import gzip
import html
import importlib.util
from functools import lru_cache
from pathlib import Path

from transformers import CLIPTokenizer

__all__ = ["OpenCLIPTokenizer", "offline_tokenizer", "clean_text", "bpe_vocab_and_merges"]

CONTEXT_LENGTH = 77
N_MERGES = 49152 - 256 - 2  # open_clip keeps this many merges from the file


def _byte_alphabet() -> list[str]:
    """The 256 stand-in characters of byte-level BPE, in vocabulary order.

    Printable bytes stand for themselves and come first; the others map to chr(256 + n).
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    rest = [b for b in range(256) if b not in set(printable)]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(rest))]


def _open_clip_file(name: str) -> Path:
    """A data file of the installed open_clip package, found without importing open_clip
    (which imports timm: about a second of every load and of every Ray worker)."""
    spec = importlib.util.find_spec("open_clip")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    raise ModuleNotFoundError(f"open_clip's {name} not found: is open_clip_torch installed?")


@lru_cache(maxsize=1)
def bpe_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary (token -> id) and merges read from open_clip's shipped BPE file."""
    path = _open_clip_file("bpe_simple_vocab_16e6.txt.gz")
    lines = gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : N_MERGES + 1]]
    alphabet = _byte_alphabet()
    tokens = alphabet + [t + "</w>" for t in alphabet] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges  # type: ignore[return-value]


def clean_text(text: str) -> str:
    """open_clip's text cleaning: ftfy repair, double HTML unescape, collapsed whitespace."""
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return " ".join(text.split())


class OpenCLIPTokenizer(CLIPTokenizer):
    """``CLIPTokenizer`` that cleans text as open_clip does before tokenising.

    Saved with ``save_pretrained`` it reloads as a plain ``CLIPTokenizer`` (same vocabulary and
    merges), which skips only the ftfy/HTML cleaning step.
    """

    def _encode_plus(self, text, text_pair=None, *args, **kwargs):  # type: ignore[override]
        return super()._encode_plus(_clean_any(text), _clean_any(text_pair), *args, **kwargs)


def _clean_any(text):
    if isinstance(text, str):
        return clean_text(text)
    if isinstance(text, (list, tuple)) and text and isinstance(text[0], str):
        return [clean_text(t) for t in text]
    return text


def offline_tokenizer(
    model_max_length: int = CONTEXT_LENGTH, *, open_clip_cleaning: bool = True
) -> CLIPTokenizer:
    """The bigG / SDXL ``tokenizer_2`` tokenizer, built offline (49,408 tokens, pad ``"!"``).

    With ``open_clip_cleaning`` (default) it is an :class:`OpenCLIPTokenizer`, whose ids equal
    open_clip's; without it, a plain ``CLIPTokenizer`` like the one SDXL repos ship (no
    ftfy/HTML cleaning), which diffusers can save in and reload from a pipeline folder.
    """
    vocab, merges = bpe_vocab_and_merges()  # read once; building a tokenizer takes ~40 ms
    cls = OpenCLIPTokenizer if open_clip_cleaning else CLIPTokenizer
    return cls(
        vocab=dict(vocab),
        merges=list(merges),
        pad_token="!",
        model_max_length=model_max_length,
        # "!" is the pad token; a "!" typed in a prompt must stay the word "!" as in open_clip.
        split_special_tokens=True,
    )
