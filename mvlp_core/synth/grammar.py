"""The synthetic world's grammar: scenes of coloured shapes, described in en, de, fr, cs, ja and zh.

Every caption is assembled from word tokens that carry a semantic role (``det0``, ``size0``,
``col0``, ``shape0``, ``num0``, ``rel``, ``rel_of``, ..., index 0 for the first object and 1 for the
second). Tokens with the same role in two languages translate each other, so gold word alignments
fall out of the construction instead of being annotated. Tokens without a role (Japanese の,
Chinese 的/有, French d' after au-dessus) stay unaligned, as do English words a language leaves
out (articles in Czech and Japanese).

The vocabulary is deliberately tiny (6 colours, 6 shapes, 4 relations, 2 sizes, 2 counts) so a
small model learns it on a CPU, but each language is inflected properly: German gender and case
(nominative, accusative, dative after über/unter/von), French gender and number agreement,
prenominal size and elision (d'un, l'étoile), Czech gender and case (instrumental after nad/pod,
genitive after od, accusative object), Japanese head-final order with の and the counter つ,
Chinese measure words (个, 颗) and 的. Japanese and Chinese are written without spaces; spans
locate their tokens.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace

LANGS = ("en", "de", "fr", "cs", "ja", "zh")
TARGET_LANGS = LANGS[1:]
COLOURS = ("red", "green", "blue", "yellow", "black", "purple")
SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond")
RELATIONS = ("above", "below", "left", "right")
CONVERSE = {"above": "below", "below": "above", "left": "right", "right": "left"}
SIZES = ("small", "medium", "big")  # "medium" is never said: it is the unmarked, borderline size
COUNTS = (2, 3)
KINDS = ("single", "count", "relation")


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    size: str = "medium"


@dataclass(frozen=True)
class Scene:
    """What an image shows and its caption says.

    ``single``: one object (its size is said unless medium); ``count``: 2-3 copies of one medium
    object; ``relation``: two medium objects of different shapes, ``objects[0] REL objects[1]``.
    """

    kind: str
    objects: tuple[Obj, ...]
    relation: str | None = None

    @property
    def count(self) -> int:
        return len(self.objects)

    def canonical(self) -> Scene:
        """The same meaning with below/right turned into above/left, to compare descriptions."""
        if self.kind == "relation" and self.relation in ("below", "right"):
            return Scene("relation", self.objects[::-1], CONVERSE[self.relation])
        return self


def random_scene(rng: random.Random) -> Scene:
    """Draw a scene: 30% single, 20% count, 50% relation."""
    kind = rng.choices(KINDS, weights=(3, 2, 5))[0]
    if kind == "single":
        obj = Obj(rng.choice(SHAPES), rng.choice(COLOURS), rng.choice(SIZES))
        return Scene("single", (obj,))
    if kind == "count":
        obj = Obj(rng.choice(SHAPES), rng.choice(COLOURS))
        return Scene("count", (obj,) * rng.choice(COUNTS))
    first, second = rng.sample(SHAPES, 2)
    pair = (Obj(first, rng.choice(COLOURS)), Obj(second, rng.choice(COLOURS)))
    return Scene("relation", pair, rng.choice(RELATIONS))


@dataclass(frozen=True)
class _Tok:
    text: str
    role: str | None = None
    glue: bool = False  # no space before this token (French elision)


@dataclass(frozen=True)
class Realisation:
    """A caption in one language with its word tokens, their character spans and roles."""

    lang: str
    text: str
    words: tuple[str, ...]
    spans: tuple[tuple[int, int], ...]
    roles: tuple[str | None, ...]


def _mods(obj: Obj, i: int) -> list[tuple[str, str]]:
    """(English attribute, role) pairs in English order: size (if said), then colour."""
    mods = [(obj.size, f"size{i}")] if obj.size != "medium" else []
    return mods + [(obj.colour, f"col{i}")]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


class Language(ABC):
    """One language's realisation of captions, GQA-style questions and two-image statements."""

    code = ""
    sep = " "

    def realise(self, scene: Scene, case: str = "nom") -> Realisation:
        text, words, spans, roles = "", [], [], []
        for tok in self.caption(scene, case):
            if text and self.sep and not tok.glue:
                text += self.sep
            spans.append((len(text), len(text) + len(tok.text)))
            text += tok.text
            words.append(tok.text)
            roles.append(tok.role)
        return Realisation(self.code, text, tuple(words), tuple(spans), tuple(roles))

    def text(self, scene: Scene, case: str = "nom") -> str:
        return self.realise(scene, case).text

    @abstractmethod
    def caption(self, scene: Scene, case: str) -> list[_Tok]:
        """The caption's tokens; ``case`` matters where the language declines (de, cs)."""

    @abstractmethod
    def noun(self, shape: str) -> str:
        """The shape's name, singular (MaRVL concepts)."""

    @abstractmethod
    def colour_q(self, shape: str, plural: bool) -> str:
        """What colour is the SHAPE / are the SHAPEs?"""

    @abstractmethod
    def exist_q(self, obj: Obj) -> str:
        """Is there a COLOUR SHAPE?"""

    @abstractmethod
    def relation_q(self, a: Obj, rel: str, b: Obj) -> str:
        """Is the A REL the B?"""

    @abstractmethod
    def what_q(self, rel: str, b: Obj) -> str:
        """What is REL the B?"""

    @abstractmethod
    def shape_q(self, colour: str) -> str:
        """Which shape is COLOUR?"""

    @abstractmethod
    def statement(self, side: str, scene: Scene) -> str:
        """The left/right image shows CAPTION."""


class English(Language):
    code = "en"
    _PLURAL = {
        "circle": "circles",
        "square": "squares",
        "triangle": "triangles",
        "star": "stars",
        "cross": "crosses",
        "diamond": "diamonds",
    }
    _NUM = {2: "two", 3: "three"}
    _REL = {
        "above": ["above"],
        "below": ["below"],
        "left": ["to", "the", "left", "of"],
        "right": ["to", "the", "right", "of"],
    }
    _REL_ROLES = {"to": "rel_to", "the": "rel_the", "of": "rel_of"}

    def _np(self, obj: Obj, i: int, n: int = 1) -> list[_Tok]:
        toks = [_Tok("a", f"det{i}")] if n == 1 else [_Tok(self._NUM[n], f"num{i}")]
        toks += [_Tok(word, role) for word, role in _mods(obj, i)]
        return toks + [_Tok(obj.shape if n == 1 else self._PLURAL[obj.shape], f"shape{i}")]

    def caption(self, scene: Scene, case: str) -> list[_Tok]:
        if scene.kind != "relation":
            return self._np(scene.objects[0], 0, scene.count)
        rel = [_Tok(w, self._REL_ROLES.get(w, "rel")) for w in self._REL[scene.relation]]
        return self._np(scene.objects[0], 0) + rel + self._np(scene.objects[1], 1)

    def noun(self, shape: str) -> str:
        return shape

    def _the(self, obj: Obj) -> str:
        return f"the {obj.colour} {obj.shape}"

    def colour_q(self, shape: str, plural: bool) -> str:
        if plural:
            return f"What color are the {self._PLURAL[shape]}?"
        return f"What color is the {shape}?"

    def exist_q(self, obj: Obj) -> str:
        return f"Is there {self.text(Scene('single', (obj,)))}?"

    def relation_q(self, a: Obj, rel: str, b: Obj) -> str:
        return f"Is {self._the(a)} {' '.join(self._REL[rel])} {self._the(b)}?"

    def what_q(self, rel: str, b: Obj) -> str:
        return f"What is {' '.join(self._REL[rel])} {self._the(b)}?"

    def shape_q(self, colour: str) -> str:
        return f"Which shape is {colour}?"

    def statement(self, side: str, scene: Scene) -> str:
        return f"The {side} image shows {self.text(scene)}."


class German(Language):
    code = "de"
    _NOUN = {
        "circle": ("Kreis", "Kreise", "m"),
        "square": ("Quadrat", "Quadrate", "n"),
        "triangle": ("Dreieck", "Dreiecke", "n"),
        "star": ("Stern", "Sterne", "m"),
        "cross": ("Kreuz", "Kreuze", "n"),
        "diamond": ("Raute", "Rauten", "f"),
    }
    _ADJ = {
        "red": "rot",
        "green": "grün",
        "blue": "blau",
        "yellow": "gelb",
        "black": "schwarz",
        "purple": "violett",
        "small": "klein",
        "big": "groß",
    }
    _INDEF = {
        "nom": {"m": "ein", "f": "eine", "n": "ein"},
        "acc": {"m": "einen", "f": "eine", "n": "ein"},
        "dat": {"m": "einem", "f": "einer", "n": "einem"},
    }
    _MIXED = {
        "nom": {"m": "er", "f": "e", "n": "es"},
        "acc": {"m": "en", "f": "e", "n": "es"},
        "dat": {"m": "en", "f": "en", "n": "en"},
    }  # adjective endings after ein-words
    _DEF = {"nom": {"m": "der", "f": "die", "n": "das"}, "dat": {"m": "dem", "f": "der", "n": "dem"}}
    _WEAK = {"nom": "e", "dat": "en"}  # adjective endings after der-words (singular)
    _NUM = {2: "zwei", 3: "drei"}
    _REL = {
        "above": [("über", "rel")],
        "below": [("unter", "rel")],
        "left": [("links", "rel"), ("von", "rel_of")],
        "right": [("rechts", "rel"), ("von", "rel_of")],
    }

    def _np(self, obj: Obj, i: int, n: int, case: str) -> list[_Tok]:
        sg, pl, gender = self._NOUN[obj.shape]
        if n == 1:
            toks = [_Tok(self._INDEF[case][gender], f"det{i}")]
            ending, noun = self._MIXED[case][gender], sg
        else:  # bare plural after a numeral: strong ending, nominative = accusative
            toks, ending, noun = [_Tok(self._NUM[n], f"num{i}")], "e", pl
        toks += [_Tok(self._ADJ[word] + ending, role) for word, role in _mods(obj, i)]
        return toks + [_Tok(noun, f"shape{i}")]

    def caption(self, scene: Scene, case: str) -> list[_Tok]:
        head = self._np(scene.objects[0], 0, scene.count if scene.kind == "count" else 1, case)
        if scene.kind != "relation":
            return head
        rel = [_Tok(word, role) for word, role in self._REL[scene.relation]]
        return head + rel + self._np(scene.objects[1], 1, 1, "dat")

    def noun(self, shape: str) -> str:
        return self._NOUN[shape][0]

    def _the(self, obj: Obj, case: str) -> str:
        sg, _, gender = self._NOUN[obj.shape]
        return f"{self._DEF[case][gender]} {self._ADJ[obj.colour]}{self._WEAK[case]} {sg}"

    def _pp(self, rel: str, b: Obj) -> str:
        words = " ".join(word for word, _ in self._REL[rel])
        return f"{words} {self._the(b, 'dat')}".replace("von dem ", "vom ")

    def colour_q(self, shape: str, plural: bool) -> str:
        sg, pl, gender = self._NOUN[shape]
        if plural:
            return f"Welche Farbe haben die {pl}?"
        return f"Welche Farbe hat {self._DEF['nom'][gender]} {sg}?"

    def exist_q(self, obj: Obj) -> str:
        return f"Gibt es {self.text(Scene('single', (obj,)), 'acc')}?"

    def relation_q(self, a: Obj, rel: str, b: Obj) -> str:
        return f"Ist {self._the(a, 'nom')} {self._pp(rel, b)}?"

    def what_q(self, rel: str, b: Obj) -> str:
        return f"Was ist {self._pp(rel, b)}?"

    def shape_q(self, colour: str) -> str:
        return f"Welche Form ist {self._ADJ[colour]}?"

    def statement(self, side: str, scene: Scene) -> str:
        adj = {"left": "linke", "right": "rechte"}[side]
        return f"Das {adj} Bild zeigt {self.text(scene, 'acc')}."


class French(Language):
    code = "fr"
    _NOUN = {
        "circle": ("cercle", "cercles", "m"),
        "square": ("carré", "carrés", "m"),
        "triangle": ("triangle", "triangles", "m"),
        "star": ("étoile", "étoiles", "f"),
        "cross": ("croix", "croix", "f"),
        "diamond": ("losange", "losanges", "m"),
    }
    _ADJ = {
        "red": ("rouge", "rouge"),
        "green": ("vert", "verte"),
        "blue": ("bleu", "bleue"),
        "yellow": ("jaune", "jaune"),
        "black": ("noir", "noire"),
        "purple": ("violet", "violette"),
        "small": ("petit", "petite"),
        "big": ("grand", "grande"),
    }  # (masculine, feminine)
    _NUM = {2: "deux", 3: "trois"}
    # relation words before "de"; "de" itself fuses with the next article (d'un, du, de l')
    _REL = {
        "above": [("au-dessus", "rel")],
        "below": [("au-dessous", "rel")],
        "left": [("à", "rel_to"), ("gauche", "rel")],
        "right": [("à", "rel_to"), ("droite", "rel")],
    }
    _DE_ROLE = {"above": None, "below": None, "left": "rel_of", "right": "rel_of"}

    def _adj(self, word: str, gender: str, n: int) -> str:
        return self._ADJ[word][gender == "f"] + ("s" if n > 1 else "")

    def _np(self, obj: Obj, i: int, n: int) -> list[_Tok]:
        sg, pl, gender = self._NOUN[obj.shape]
        if n == 1:
            toks = [_Tok("une" if gender == "f" else "un", f"det{i}")]
        else:
            toks = [_Tok(self._NUM[n], f"num{i}")]
        if obj.size != "medium":  # petit/grand go before the noun, colours after it
            toks.append(_Tok(self._adj(obj.size, gender, n), f"size{i}"))
        toks.append(_Tok(sg if n == 1 else pl, f"shape{i}"))
        return toks + [_Tok(self._adj(obj.colour, gender, n), f"col{i}")]

    def caption(self, scene: Scene, case: str) -> list[_Tok]:
        head = self._np(scene.objects[0], 0, scene.count if scene.kind == "count" else 1)
        if scene.kind != "relation":
            return head
        rel = [_Tok(word, role) for word, role in self._REL[scene.relation]]
        second = self._np(scene.objects[1], 1, 1)
        second[0] = replace(second[0], glue=True)
        return head + rel + [_Tok("d'", self._DE_ROLE[scene.relation])] + second

    def noun(self, shape: str) -> str:
        return self._NOUN[shape][0]

    def _the(self, shape: str, colour: str | None, de: bool = False) -> str:
        sg, _, gender = self._NOUN[shape]
        phrase = sg + (" " + self._adj(colour, gender, 1) if colour else "")
        if sg[0] in "aeéiou":
            return ("de l'" if de else "l'") + phrase
        if gender == "f":
            return ("de la " if de else "la ") + phrase
        return ("du " if de else "le ") + phrase

    def _pp(self, rel: str, b: Obj) -> str:
        words = " ".join(word for word, _ in self._REL[rel])
        return f"{words} {self._the(b.shape, b.colour, de=True)}"

    def colour_q(self, shape: str, plural: bool) -> str:
        if plural:
            return f"De quelle couleur sont les {self._NOUN[shape][1]} ?"
        return f"De quelle couleur est {self._the(shape, None)} ?"

    def exist_q(self, obj: Obj) -> str:
        return f"Y a-t-il {self.text(Scene('single', (obj,)))} ?"

    def relation_q(self, a: Obj, rel: str, b: Obj) -> str:
        pronoun = "elle" if self._NOUN[a.shape][2] == "f" else "il"
        return f"{_cap(self._the(a.shape, a.colour))} est-{pronoun} {self._pp(rel, b)} ?"

    def what_q(self, rel: str, b: Obj) -> str:
        return f"Qu'y a-t-il {self._pp(rel, b)} ?"

    def shape_q(self, colour: str) -> str:
        return f"Quelle forme est {self._adj(colour, 'f', 1)} ?"  # agrees with "forme" (f)

    def statement(self, side: str, scene: Scene) -> str:
        where = {"left": "gauche", "right": "droite"}[side]
        return f"L'image de {where} montre {self.text(scene)}."


class Czech(Language):
    code = "cs"
    # nominative, accusative, genitive, instrumental singular; nominative plural; gender
    _NOUN = {
        "circle": ("kruh", "kruh", "kruhu", "kruhem", "kruhy", "m"),
        "square": ("čtverec", "čtverec", "čtverce", "čtvercem", "čtverce", "m"),
        "triangle": ("trojúhelník", "trojúhelník", "trojúhelníku", "trojúhelníkem", "trojúhelníky", "m"),
        "star": ("hvězda", "hvězdu", "hvězdy", "hvězdou", "hvězdy", "f"),
        "cross": ("kříž", "kříž", "kříže", "křížem", "kříže", "m"),
        "diamond": ("kosočtverec", "kosočtverec", "kosočtverce", "kosočtvercem", "kosočtverce", "m"),
    }
    _CASES = ("nom", "acc", "gen", "ins", "pl")
    _STEM = {
        "red": "červen",
        "green": "zelen",
        "blue": "modr",
        "yellow": "žlut",
        "black": "čern",
        "purple": "fialov",
        "small": "mal",
        "big": "velk",
    }
    _ENDING = {
        "m": {"nom": "ý", "acc": "ý", "gen": "ého", "ins": "ým", "pl": "é"},  # inanimate
        "f": {"nom": "á", "acc": "ou", "gen": "é", "ins": "ou", "pl": "é"},
    }
    _NUM = {2: {"m": "dva", "f": "dvě"}, 3: {"m": "tři", "f": "tři"}}
    _REL = {
        "above": ([("nad", "rel")], "ins"),
        "below": ([("pod", "rel")], "ins"),
        "left": ([("vlevo", "rel"), ("od", "rel_of")], "gen"),
        "right": ([("vpravo", "rel"), ("od", "rel_of")], "gen"),
    }

    def _np(self, obj: Obj, i: int, n: int, case: str) -> list[_Tok]:
        forms, gender = self._NOUN[obj.shape][:5], self._NOUN[obj.shape][5]
        # 2-4 take the nominative plural, which equals the accusative plural for these nouns
        form = case if n == 1 else "pl"
        toks = [] if n == 1 else [_Tok(self._NUM[n][gender], f"num{i}")]
        ending = self._ENDING[gender][form]
        toks += [_Tok(self._STEM[word] + ending, role) for word, role in _mods(obj, i)]
        return toks + [_Tok(forms[self._CASES.index(form)], f"shape{i}")]

    def _pp(self, rel: str, b: Obj) -> list[_Tok]:
        words, case = self._REL[rel]
        return [_Tok(word, role) for word, role in words] + self._np(b, 1, 1, case)

    def caption(self, scene: Scene, case: str) -> list[_Tok]:
        head = self._np(scene.objects[0], 0, scene.count if scene.kind == "count" else 1, case)
        if scene.kind != "relation":
            return head
        return head + self._pp(scene.relation, scene.objects[1])

    def noun(self, shape: str) -> str:
        return self._NOUN[shape][0]

    def colour_q(self, shape: str, plural: bool) -> str:
        if plural:
            return f"Jakou barvu mají {self._NOUN[shape][4]}?"
        return f"Jakou barvu má {self._NOUN[shape][0]}?"

    def exist_q(self, obj: Obj) -> str:
        return f"Je tam {self.text(Scene('single', (obj,)))}?"

    def relation_q(self, a: Obj, rel: str, b: Obj) -> str:
        return f"Je {self.text(Scene('relation', (a, b), rel))}?"

    def what_q(self, rel: str, b: Obj) -> str:
        return "Co je " + " ".join(tok.text for tok in self._pp(rel, b)) + "?"

    def shape_q(self, colour: str) -> str:
        return f"Který tvar je {self._STEM[colour]}ý?"  # agrees with "tvar" (m)

    def statement(self, side: str, scene: Scene) -> str:
        which = {"left": "Levý", "right": "Pravý"}[side]
        return f"{which} obrázek ukazuje {self.text(scene, 'acc')}."


class Japanese(Language):
    code = "ja"
    sep = ""
    _NOUN = {
        "circle": "円",
        "square": "正方形",
        "triangle": "三角形",
        "star": "星",
        "cross": "十字",
        "diamond": "ひし形",
    }
    _ADJ = {
        "red": ("赤い",),
        "green": ("緑", "の"),
        "blue": ("青い",),
        "yellow": ("黄色い",),
        "black": ("黒い",),
        "purple": ("紫", "の"),
        "small": ("小さな",),
        "big": ("大きな",),
    }
    _NUM = {2: "二つ", 3: "三つ"}
    _REL = {"above": "上", "below": "下", "left": "左", "right": "右"}

    def _np(self, obj: Obj, i: int, n: int = 1) -> list[_Tok]:
        toks = [_Tok(self._NUM[n], f"num{i}"), _Tok("の")] if n > 1 else []
        for word, role in _mods(obj, i):
            head, *rest = self._ADJ[word]
            toks += [_Tok(head, role)] + [_Tok(particle) for particle in rest]
        return toks + [_Tok(self._NOUN[obj.shape], f"shape{i}")]

    def _flat(self, obj: Obj) -> str:
        return "".join(tok.text for tok in self._np(obj, 0))

    def caption(self, scene: Scene, case: str) -> list[_Tok]:
        if scene.kind != "relation":
            return self._np(scene.objects[0], 0, scene.count)
        a, b = scene.objects
        where = [_Tok("の"), _Tok(self._REL[scene.relation], "rel"), _Tok("の")]
        return self._np(b, 1) + where + self._np(a, 0)

    def noun(self, shape: str) -> str:
        return self._NOUN[shape]

    def colour_q(self, shape: str, plural: bool) -> str:
        return f"{self._NOUN[shape]}は何色ですか？"

    def exist_q(self, obj: Obj) -> str:
        return f"{self._flat(obj)}はありますか？"

    def relation_q(self, a: Obj, rel: str, b: Obj) -> str:
        return f"{self._flat(a)}は{self._flat(b)}の{self._REL[rel]}にありますか？"

    def what_q(self, rel: str, b: Obj) -> str:
        return f"{self._flat(b)}の{self._REL[rel]}には何がありますか？"

    def shape_q(self, colour: str) -> str:
        return f"{''.join(self._ADJ[colour])}図形はどれですか？"

    def statement(self, side: str, scene: Scene) -> str:
        return f"{self._REL[side]}の画像には{self.text(scene)}があります。"


class Chinese(Language):
    code = "zh"
    sep = ""
    _NOUN = {
        "circle": ("圆形", "个"),
        "square": ("正方形", "个"),
        "triangle": ("三角形", "个"),
        "star": ("星星", "颗"),
        "cross": ("十字", "个"),
        "diamond": ("菱形", "个"),
    }  # (noun, measure word)
    _COLOUR = {
        "red": "红色",
        "green": "绿色",
        "blue": "蓝色",
        "yellow": "黄色",
        "black": "黑色",
        "purple": "紫色",
    }
    _SIZE = {"small": "小", "big": "大"}
    _NUM = {1: "一", 2: "两", 3: "三"}
    _REL = {"above": "上方", "below": "下方", "left": "左边", "right": "右边"}

    def _np(self, obj: Obj, i: int, n: int = 1) -> list[_Tok]:
        noun, measure = self._NOUN[obj.shape]
        toks = [
            _Tok(self._NUM[n] + measure, f"det{i}" if n == 1 else f"num{i}"),
            _Tok(self._COLOUR[obj.colour], f"col{i}"),
            _Tok("的"),
        ]
        if obj.size != "medium":
            toks.append(_Tok(self._SIZE[obj.size], f"size{i}"))
        return toks + [_Tok(noun, f"shape{i}")]

    def _bare(self, obj: Obj) -> str:
        return self._COLOUR[obj.colour] + self._NOUN[obj.shape][0]

    def caption(self, scene: Scene, case: str) -> list[_Tok]:
        if scene.kind != "relation":
            return self._np(scene.objects[0], 0, scene.count)
        a, b = scene.objects  # existential: "B 的 REL 有 一个 A"
        return [
            _Tok(self._COLOUR[b.colour], "col1"),
            _Tok(self._NOUN[b.shape][0], "shape1"),
            _Tok("的"),
            _Tok(self._REL[scene.relation], "rel"),
            _Tok("有"),
        ] + self._np(a, 0)

    def noun(self, shape: str) -> str:
        return self._NOUN[shape][0]

    def colour_q(self, shape: str, plural: bool) -> str:
        return f"{self._NOUN[shape][0]}是什么颜色的？"

    def exist_q(self, obj: Obj) -> str:
        return f"有{self._COLOUR[obj.colour]}的{self._NOUN[obj.shape][0]}吗？"

    def relation_q(self, a: Obj, rel: str, b: Obj) -> str:
        subject = f"{self._COLOUR[a.colour]}的{self._NOUN[a.shape][0]}"
        return f"{subject}在{self._bare(b)}的{self._REL[rel]}吗？"

    def what_q(self, rel: str, b: Obj) -> str:
        return f"{self._bare(b)}的{self._REL[rel]}有什么？"

    def shape_q(self, colour: str) -> str:
        return f"哪个图形是{self._COLOUR[colour]}的？"

    def statement(self, side: str, scene: Scene) -> str:
        where = {"left": "左", "right": "右"}[side]
        if scene.kind == "relation":  # the caption is already an existential clause
            return f"{where}图中，{self.text(scene)}。"
        return f"{where}图中有{self.text(scene)}。"


_LANGUAGES: dict[str, Language] = {
    lang.code: lang for lang in (English(), German(), French(), Czech(), Japanese(), Chinese())
}


def language(code: str) -> Language:
    try:
        return _LANGUAGES[code]
    except KeyError:
        raise ValueError(f"the synthetic world speaks {', '.join(LANGS)}, not {code!r}") from None


def realise(scene: Scene, lang: str) -> Realisation:
    """The caption of ``scene`` in ``lang`` (nominative), with word tokens, spans and roles."""
    return language(lang).realise(scene)


def caption(scene: Scene, lang: str = "en") -> str:
    return realise(scene, lang).text


def gold_links(en: Realisation, xx: Realisation) -> list[tuple[int, int]]:
    """Sure links [en_word, xx_word]: every pair of tokens that realise the same role."""
    return [
        (i, j)
        for i, role in enumerate(en.roles)
        if role is not None
        for j, other in enumerate(xx.roles)
        if other == role
    ]
