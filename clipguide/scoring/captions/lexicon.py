"""Word lists and English inflection for the caption rewriter (pure Python, no tagger).

No part-of-speech model can be loaded offline, so :mod:`clipguide.scoring.captions` reads prompts with
these closed word classes (determiners, numbers, attribute words by kind, spatial relations and
their opposites, connectors) plus a few suffix rules; every other word is a content word.
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = [
    "ATTRIBUTE_KINDS",
    "NEGATORS",
    "NUMBER_WORDS",
    "article_for",
    "attribute_kind",
    "format_number",
    "inflect",
    "is_plural",
    "looks_adjectival",
    "looks_participle",
    "opposite_relation",
    "parse_number",
    "pluralize",
    "singularize",
]


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# ------------------------------------------------------------------ attributes
BASE_COLOURS = _words(
    "red orange yellow green blue purple violet pink brown black white grey gray cyan magenta "
    "teal turquoise golden beige maroon navy crimson scarlet indigo lavender lilac olive amber "
    "ivory cream emerald azure ochre tan khaki burgundy coral peach mint charcoal aqua fuchsia "
    "silvery blonde blond ginger rust sepia"
)
# A tone word before a colour joins it ("light blue", "deep red").
COLOUR_TONES = _words("light dark pale bright deep pastel neon hot sky navy royal baby forest lime")
_COLOURISH = re.compile(r"(red|orang|yellow|green|blu|purpl|pink|brown|black|whit|gr[ae]y)ish$")
ATTRIBUTES: dict[str, frozenset[str]] = {
    "size": _words(
        "small large big tiny huge giant little massive enormous gigantic miniature colossal "
        "tall short medium mini long"
    ),
    "age": _words("old young ancient new modern vintage antique elderly"),
    "texture": _words(
        "striped spotted checkered plaid polka-dot fluffy furry fuzzy shiny glossy matte rusty "
        "smooth rough wet hairy spiky transparent translucent sparkly glittery iridescent"
    ),
    "shape": _words("round triangular rectangular circular oval spherical cubic hexagonal"),
    "material": _words(
        "wooden wood metal metallic glass stone marble plastic leather paper ceramic porcelain "
        "gold silver steel iron brass bronze copper velvet silk cotton wool woollen woolen "
        "knitted crystal concrete brick clay rubber denim chrome wicker bamboo straw"
    ),
}
ATTRIBUTE_KINDS = ("colour", "size", "age", "texture", "shape", "material")
# Usual English order of adjectives before a noun ("a small old fluffy round red wool hat").
ATTRIBUTE_KINDS_ORDER = {"size": 0, "age": 1, "texture": 2, "shape": 3, "colour": 4, "material": 5}
# Attribute words that are nouns when they end a phrase ("a glass of water", "a giant").
NOUNABLE = ATTRIBUTES["material"] | _words("giant")


@lru_cache(maxsize=8192)
def attribute_kind(word: str) -> str | None:
    """The attribute kind of a lower-case word (or tone+colour phrase), else None."""
    if word in BASE_COLOURS or _COLOURISH.fullmatch(word):
        return "colour"
    parts = re.split(r"[ -]", word)
    if len(parts) > 1 and all(p in BASE_COLOURS or p in COLOUR_TONES for p in parts):
        if parts[-1] in BASE_COLOURS or _COLOURISH.fullmatch(parts[-1]):
            return "colour"
    for kind, words in ATTRIBUTES.items():
        if word in words:
            return kind
    return None


# ------------------------------------------------------------------ closed classes
DETERMINERS = _words(
    "a an the this these those some any each every another several many few various multiple "
    "numerous both all his her their my your our its"
)
NUMBER_WORDS: dict[str, int] = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}
CONJUNCTIONS = _words("and or but nor plus & yet while whilst which that who whose whom where when")
COORDINATORS = _words("and or plus & with")  # connectors an object can be dropped with
COORDINATOR_PHRASES = frozenset({"as well as", "along with", "together with"})
PREPOSITIONS = _words(
    "of with without at from to for by through across along around among between against "
    "toward towards during via like off past beyond after before about amid amidst throughout "
    "onto per than as upon"
)
PRONOUNS = _words(
    "i me you he him she it we us they them something someone everything nothing everyone "
    "anything anyone somebody nobody"
)
VERBS = _words(
    "is are was were be been being am has have had do does did can could will would should may "
    "might must shall sits sit stands stand lies lie holds hold wears wear looks look seems "
    "appears rides sleeps swims dances carries floats hangs stares leans rests gazes smiles "
    "laughs eats reads jumps walks runs plays made"
)
# Words that say the phrase right after them is absent ("no people", "without a collar",
# "not a dog", "neither a cat nor a dog"); "or"/"of" carry the negation to the next phrase
# ("no cats or dogs", "without a glass of milk"). "no"/"not"/"neither"/"never" are their own
# word class; "without" stays a preposition and "nor" a conjunction.
NEGATORS = _words("no not neither never without nor")
NEGATION_CARRIERS = _words("or of")
AUXILIARIES = _words("is are was were be been being am has have had")
# Predicative words end a noun phrase and start none ("a fox asleep in ...", "... together").
PREDICATIVES = _words(
    "asleep awake alone alive afloat aglow ablaze adrift ajar aloft apart together everywhere "
    "nearby here there"
)
# Degree adverbs modify a following attribute ("a very large dog") and end a phrase after a head.
DEGREE_ADVERBS = _words("very too so really extremely quite super slightly")
ING_NOUNS = _words(
    "ring king wing thing string spring swing sling ceiling building painting drawing clothing "
    "wedding pudding dumpling sapling duckling earring morning evening lightning sibling "
    "stocking icing railing awning bedding landing offspring viking lighting rendering shading "
    "framing"
)
ED_NOUNS = _words("bed shed sled red hundred sacred")
LY_NOUNS = _words(
    "lily belly jelly family butterfly dragonfly firefly holly bully rally ally italy fly "
    "anomaly assembly"
)
ADJ_NOUNS = _words(
    "animal crystal metal petal cathedral hospital festival portal signal pedal canal coral "
    "mural mosaic music clinic fabric comic picnic relic mechanic arctic olive hive archive "
    "detective locomotive explosive handful spoonful relative native cable table vegetable "
    "stable bible fish dish wish"
)
_ADJ_SUFFIX = re.compile(r".{3,}(ic|ical|istic|ous|ful|ive|esque|ish|less|able|ible|ing|ed|ly)$")


@lru_cache(maxsize=8192)
def looks_adjectival(word: str) -> bool:
    """Whether a lower-case word looks like an adjective/participle/adverb by its suffix."""
    if word in ING_NOUNS or word in ED_NOUNS or word in LY_NOUNS or word in ADJ_NOUNS:
        return False
    if word.endswith(("eed", "fish", "dish")):  # "seaweed", "goldfish", "radish"
        return False
    return bool(_ADJ_SUFFIX.fullmatch(word))


def looks_participle(word: str) -> bool:
    """Whether a lower-case word looks like an -ing/-ed participle or an -ly adverb."""
    return looks_adjectival(word) and word.endswith(("ing", "ed", "ly"))


# Heads that name the picture, its style, light, time or weather rather than an object.
NON_OBJECT_HEADS = _words(
    "photo photograph photography picture image shot snapshot photoshoot render rendering "
    "illustration drawing painting sketch portrait artwork art style aesthetic concept "
    "wallpaper masterpiece quality resolution detail focus bokeh depth lens lighting light "
    "composition atmosphere mood vibe palette color colour tone contrast saturation grain noise "
    "view angle perspective close-up closeup frame scene version film cinematography engine "
    "octane artstation deviantart pixiv behance trend award hdr uhd hd dslr iso aperture "
    "exposure anime manga watercolor watercolour oil canvas acrylic gouache ink vector pixel "
    "cgi photorealism realism impressionism surrealism cubism minimalism expressionism "
    "renaissance baroque vaporwave synthwave cyberpunk steampunk fantasy sci-fi scifi foreground "
    "dawn dusk sunrise sunset twilight night nighttime day daytime daylight morning evening "
    "afternoon noon midnight hour time summer winter autumn rain fog mist haze weather "
    "pair couple group bunch herd flock swarm set lot number dozen handful variety kind sort "
    "type side top bottom middle center centre front back left right shadow reflection "
    "cinematic dramatic epic beautiful gorgeous cute stunning realistic photorealistic "
    "hyperrealistic detailed intricate elegant vibrant moody dreamy ethereal surreal whimsical "
    "minimalist retro futuristic sharp soft volumetric ambient natural dynamic symmetrical best "
    "ultra hyper highres lowres professional atmospheric magical mystical majestic serene "
    "peaceful cozy bright colorful colourful monochrome sepia solo trending unreal studio "
    "sunlight moonlight starlight candlelight backlight glow still poly headshot poster tale "
    "row breakfast lunch dinner lay underwater blurry funny scary creepy happy sad angry gloomy "
    "spooky fancy kawaii chibi"
)
# Names whose colour word is part of the name, read as one word ("a golden retriever").
COMPOUND_NOUNS = _words(
    "golden_retriever red_panda black_hole blue_whale golden_hour red_carpet green_screen "
    "black_widow blue_jay white_house ice_cream orange_juice red_wine white_wine green_tea "
    "black_tea silver_screen depth_of_field new_york still_life"
)
COMPOUND_NOUNS = frozenset(c.replace("_", " ") for c in COMPOUND_NOUNS)
NON_OBJECT_COMPOUNDS = frozenset({"golden hour", "silver screen", "depth of field", "still life"})
OBJECT_COMPOUNDS = frozenset(
    {("street", "light"), ("traffic", "light"), ("fairy", "light"), ("neon", "light")}
    | {("string", "light"), ("city", "light"), ("ceiling", "light")}
)

# ------------------------------------------------------------------ relations
_FLIPS = {
    "above": "below",
    "below": "above",
    "over": "under",
    "under": "over",
    "underneath": "on top of",
    "beneath": "above",
    "on top of": "underneath",
    "atop": "beneath",
    "on": "under",
    "in front of": "behind",
    "behind": "in front of",
    "in back of": "in front of",
    "inside": "outside",
    "outside": "inside",
    "inside of": "outside of",
    "outside of": "inside of",
    "within": "outside",
    "into": "out of",
    "in the foreground": "in the background",
    "in the background": "in the foreground",
    "at the top of": "at the bottom of",
    "at the bottom of": "at the top of",
}
_LEFT_RIGHT = ["left of", "right of"]
for _frame in ("", "to the ", "on the ", "on the far "):
    _LEFT_RIGHT += [f"{_frame}left of", f"{_frame}right of"]
    if _frame:
        _LEFT_RIGHT += [f"{_frame}left", f"{_frame}right"]
SYMMETRIC_RELATIONS = ("next to", "beside", "near", "close to", "alongside")
# Spatial phrases, longest first, each one token for the chunker; "in" has no opposite.
RELATIONS = tuple(
    sorted(
        set(_FLIPS) | set(_LEFT_RIGHT) | set(SYMMETRIC_RELATIONS) | {"in"},
        key=lambda r: (-len(r.split()), r),
    )
)
RELATION_WORDS = frozenset(r for r in RELATIONS if " " not in r)
# Relations whose two sides can be exchanged to make a different scene ("A on B" vs "B on A").
ASYMMETRIC_RELATIONS = frozenset(set(_FLIPS) | set(_LEFT_RIGHT) | {"in"})
# Phrases that only place their subject ("a cat on the left"): no landmark follows.
POSITIONAL_RELATIONS = frozenset(
    r for r in RELATIONS if not r.endswith(" of") and r.split()[0] in ("to", "on", "in")
) - {"on", "in"}


def opposite_relation(phrase: str) -> str | None:
    """The spatial opposite of a lower-case relation phrase, or None when it has none."""
    if phrase in _FLIPS:
        return _FLIPS[phrase]
    words = phrase.split()
    if "left" in words or "right" in words:
        return " ".join({"left": "right", "right": "left"}.get(w, w) for w in words)
    return None


# ------------------------------------------------------------------ numbers and inflection
def parse_number(word: str) -> int | None:
    """The value of a number word or a 1-4 digit numeral, else None."""
    if word in NUMBER_WORDS:
        return NUMBER_WORDS[word]
    if word.isascii() and word.isdigit() and len(word) <= 4:
        return int(word)
    return None


def format_number(n: int, like: str) -> str:
    """Write ``n`` the way ``like`` was written (digits stay digits, words stay words)."""
    if like.isdigit() or n > 20:
        return str(n)
    word = next(w for w, v in NUMBER_WORDS.items() if v == n)
    return _match_case(word, like)


_IRREGULAR = dict(
    pair.split(":")
    for pair in (
        "man:men woman:women child:children person:people mouse:mice goose:geese foot:feet "
        "tooth:teeth ox:oxen wolf:wolves leaf:leaves knife:knives wife:wives life:lives "
        "loaf:loaves shelf:shelves half:halves calf:calves elf:elves thief:thieves "
        "scarf:scarves cactus:cacti fungus:fungi die:dice potato:potatoes tomato:tomatoes "
        "hero:heroes volcano:volcanoes mango:mangoes bus:buses gas:gases lens:lenses "
        "canvas:canvases octopus:octopuses"
    ).split()
)
_IRREGULAR_SINGULAR = {v: k for k, v in _IRREGULAR.items()}
_IE_NOUNS = _words(
    "cookie movie pie tie zombie selfie brownie smoothie hippie rookie calorie prairie goalie "
    "genie pixie birdie beanie hoodie collie auntie sweetie lie magpie"
)
_MAN_REGULAR = _words("human german roman shaman talisman caiman ottoman walkman")
_MEN_SINGULAR = _words("omen amen specimen regimen abdomen stamen")
_UNCHANGED = _words(
    "sheep deer fish moose series species aircraft bison salmon trout swine hair fur water "
    "grass sand snow rice smoke fire foliage furniture luggage jewelry jewellery clothing"
)
_SINGULAR_S = _words(
    "glass grass dress bus lens moss chess news physics boss cactus octopus iris canvas gas "
    "atlas mattress bass compass princess goddess walrus hippopotamus platypus fungus "
    "octopus campus circus virus bonus corpus cosmos chaos asparagus hibiscus lotus citrus "
    "crocus nautilus pegasus cyclops"
)


def _match_case(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    if like[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


@lru_cache(maxsize=8192)
def pluralize(noun: str) -> str:
    """Plural of a singular noun (last word of a compound); common irregulars included."""
    head, sep, last = noun.rpartition(" ")
    low = last.lower()
    if low in _UNCHANGED or not low:
        out = low
    elif low in _IRREGULAR:
        out = _IRREGULAR[low]
    elif low.endswith("man") and low not in _MAN_REGULAR:
        out = low[:-3] + "men"
    elif re.search(r"(s|x|z|ch|sh)$", low):
        out = low + "es"
    elif re.search(r"[^aeiou]y$", low):
        out = low[:-1] + "ies"
    else:
        out = low + "s"
    return head + sep + _match_case(out, last)


@lru_cache(maxsize=8192)
def singularize(noun: str) -> str:
    """Singular of a noun (last word of a compound); returns the word if already singular."""
    head, sep, last = noun.rpartition(" ")
    low = last.lower()
    if not is_plural(low):
        return noun
    if low in _IRREGULAR_SINGULAR:
        out = _IRREGULAR_SINGULAR[low]
    elif low.endswith("men"):
        out = low[:-3] + "man"
    elif low[:-1] in _IE_NOUNS:
        out = low[:-1]
    elif low.endswith("ies") and len(low) > 4:
        out = low[:-3] + "y"
    elif re.search(r"(sses|xes|zzes|ches|shes)$", low):
        out = low[:-2]
    else:
        out = low[:-1]
    return head + sep + _match_case(out, last)


@lru_cache(maxsize=8192)
def is_plural(noun: str) -> bool:
    """Whether a noun's last word looks plural (regular -s forms and irregulars)."""
    low = noun.rpartition(" ")[2].lower()
    if low in _IRREGULAR_SINGULAR:
        return True
    if low.endswith("men") and low not in _MEN_SINGULAR and len(low) > 4:
        return True
    if low in _SINGULAR_S or low in _IRREGULAR or len(low) < 3 or not low.isalpha():
        return False
    return low.endswith("s") and not low.endswith(("ss", "us", "is"))


def inflect(noun: str, plural: bool) -> str:
    """The noun in the plural or the singular (uncountable/unchanging words stay)."""
    single = singularize(noun) if is_plural(noun) else noun
    return pluralize(single) if plural else single


_AN_EXCEPTIONS = ("uni", "use", "usu", "uti", "eu", "one", "once", "ure")
_AN_SILENT_H = ("hour", "honest", "honou", "honor", "heir")


def article_for(word: str, like: str = "a") -> str:
    """'a' or 'an' before ``word`` (by its sound, roughly), in the case of ``like``."""
    low = word.lower()
    if low[:1].isdigit():
        an = low.startswith(("8", "11", "18")) and not low.startswith(("110", "111"))
    else:
        an = (low[:1] in "aeio" and low[:1] != "" and not low.startswith(_AN_EXCEPTIONS)) or (
            low.startswith("u") and not low.startswith(_AN_EXCEPTIONS)
        )
        an = an or low.startswith(_AN_SILENT_H)
    return _match_case("an" if an else "a", like)
