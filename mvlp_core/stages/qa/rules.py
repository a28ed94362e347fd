"""The `rules` questioner: question–answer pairs from English captions without a model.

A small lexicon tags words (determiners, numbers, colours, sizes, prepositions, verb forms), a
chunker groups them into noun phrases, prepositions and verb groups, and templates over those chunks
ask what/who/where/how-many/what-colour questions whose answers are spans of the caption. It reads
the synthetic world's grammar completely and common CC3M shapes ("a dog runs on the beach", "person
walking along the river") well enough; a caption it cannot read yields no candidates, which the
stage records as a reject rather than guessing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from mvlp_core.stages.qa.lexicon import (
    AUX,
    CLOSED,
    CLOTHING,
    COLOURS,
    CONJ,
    DETS,
    ED_NOUNS,
    ING_NOUNS,
    IRREGULAR_PLURALS,
    LOCATION,
    MULTI_PREPS,
    NUMBERS,
    PEOPLE,
    PLURAL_DETS,
    PREPS,
    SIZES,
    SPATIAL,
    TIME,
    VERBS_3SG,
    VERBS_BASE,
)
from mvlp_core.stages.qa.parser import QAPair

GENERATOR = "rules"
_TOKEN = re.compile(r"[A-Za-z0-9]+(?:[-'’][A-Za-z0-9]+)*|\S")
_NOUNISH = {"colour", "size", "word"}
_MAIN_VERBS = {"v3", "vbase", "ving", "ved"}
# closed word classes in the order they are tried
_CLOSED_CLASSES = (
    ("det", DETS),
    ("num", NUMBERS),
    ("colour", COLOURS),
    ("size", SIZES),
    ("prep", PREPS),
    ("aux", AUX),
    ("conj", CONJ),
    ("other", CLOSED),
)


@dataclass(frozen=True)
class Tok:
    text: str
    start: int
    end: int
    tag: str

    @property
    def low(self) -> str:
        return self.text.lower()


@dataclass(frozen=True)
class Chunk:
    """A noun phrase ("np"), preposition ("prep"), verb group ("verb") or other words ("other")."""

    kind: str
    toks: tuple[Tok, ...]
    parts: int = 1  # noun phrases joined by "and"

    @property
    def low(self) -> str:
        return " ".join(t.low for t in self.toks)

    @property
    def body(self) -> tuple[Tok, ...]:
        """A noun phrase without its leading determiner and number."""
        toks = self.toks
        if toks and toks[0].tag == "det":
            toks = toks[1:]
        return toks[1:] if toks and toks[0].tag == "num" else toks

    @property
    def number(self) -> Tok | None:
        return next((t for t in self.toks[:2] if t.tag == "num"), None)

    @property
    def head(self) -> str:
        return self.toks[-1].low

    @property
    def plural(self) -> bool:
        if self.parts > 1 or self.toks[0].low in PLURAL_DETS:
            return True
        if self.number is not None and self.number.low not in ("one", "1"):
            return True
        return _looks_plural(self.head)

    @property
    def verb(self) -> Tok:
        """A verb group's main verb (its last word)."""
        return self.toks[-1]


def _looks_plural(word: str) -> bool:
    if word in IRREGULAR_PLURALS:
        return True
    return len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is"))


def _word_tag(low: str, prev: Tok | None, prev2: Tok | None) -> str:
    """Tag of an open-class word; the previous words decide between verb and noun readings."""
    after_noun = prev is None or prev.tag == "word"
    verb_slot = after_noun or prev.tag == "aux"
    if verb_slot and len(low) > 4 and low.endswith("ing") and low not in ING_NOUNS:
        return "ving"
    if verb_slot and len(low) > 4 and low.endswith("ed") and low not in ED_NOUNS:
        return "ved"
    if low in VERBS_3SG and after_noun:
        return "v3"
    if low in VERBS_BASE and prev is not None and prev.tag == "word":
        if _looks_plural(prev.low) or (prev2 is not None and prev2.low in CONJ):
            return "vbase"
    return "word"


def tag(caption: str) -> list[Tok]:
    """The caption's tokens with their tags: closed word classes by list (the first that holds
    the word wins), open-class words by context (`_word_tag`)."""
    raw = [(m.group(0), m.start(), m.end()) for m in _TOKEN.finditer(caption)]
    toks: list[Tok] = []
    i = 0
    while i < len(raw):
        lows = [w.lower() for w, _, _ in raw[i : i + 4]]
        multi = next((p for p in MULTI_PREPS if tuple(lows[: len(p)]) == p), None)
        if multi:
            end = i + len(multi) - 1
            toks.append(Tok(caption[raw[i][1] : raw[end][2]], raw[i][1], raw[end][2], "prep"))
            i = end + 1
            continue
        text, start, end = raw[i]
        low = text.lower()
        prev, prev2 = (toks[-1] if toks else None), (toks[-2] if len(toks) > 1 else None)
        if not text[0].isalnum():
            kind = "punct"
        elif low.isdigit():
            kind = "num"
        else:
            kind = next((k for k, words in _CLOSED_CLASSES if low in words), None) or _word_tag(
                low, prev, prev2
            )
        toks.append(Tok(text, start, end, kind))
        i += 1
    return toks


def chunk(toks: list[Tok]) -> list[Chunk]:
    """Greedy chunks; "red and white" stays inside one noun phrase."""
    chunks: list[Chunk] = []
    i, n = 0, len(toks)
    while i < n:
        tag_ = toks[i].tag
        if tag_ in ("det", "num") or tag_ in _NOUNISH:
            j = i + (tag_ == "det")
            j += j < n and toks[j].tag == "num"
            k = j
            while k < n:
                colour_and = (
                    toks[k].low in CONJ
                    and k > j
                    and toks[k - 1].tag == "colour"
                    and k + 1 < n
                    and toks[k + 1].tag == "colour"
                )
                if toks[k].tag not in _NOUNISH and not colour_and:
                    break
                k += 1
            end = k if k > j else max(j, i + 1)
            chunks.append(Chunk("np" if k > j else "other", tuple(toks[i:end])))
            i = end
        elif tag_ == "prep":
            chunks.append(Chunk("prep", (toks[i],)))
            i += 1
        elif tag_ == "aux" or tag_ in _MAIN_VERBS:
            k = i
            while k < n and toks[k].tag == "aux":
                k += 1
            main = k < n and toks[k].tag in _MAIN_VERBS
            chunks.append(Chunk("verb" if main else "other", tuple(toks[i : k + main])))
            i = k + main
        else:
            chunks.append(Chunk("other", (toks[i],)))
            i += 1
    return chunks


def coordinate(chunks: list[Chunk]) -> list[Chunk]:
    """Join "NP and NP" into one plural noun phrase (the subject "a bride and groom")."""
    out: list[Chunk] = []
    for ch in chunks:
        if ch.kind == "np" and len(out) >= 2 and out[-1].low in CONJ and out[-2].kind == "np":
            conj, first = out.pop(), out.pop()
            ch = Chunk("np", first.toks + conj.toks + ch.toks, first.parts + ch.parts)
        out.append(ch)
    return out


def _text(caption: str, toks: tuple[Tok, ...]) -> str:
    return caption[toks[0].start : toks[-1].end]


def lemma(verb: str) -> str:
    """Base form of a third-person-singular verb ("runs" -> "run", "watches" -> "watch")."""
    low = verb.lower()
    irregular = {"is": "be", "has": "have", "does": "do", "goes": "go", "lies": "lie"}
    if low in irregular:
        return irregular[low]
    if low.endswith("ies") and len(low) > 4:
        return low[:-3] + "y"
    if low.endswith(("ches", "shes", "sses", "xes", "zes", "oes")):
        return low[:-2]
    return low[:-1] if low.endswith("s") else low


def third_person(verb: str) -> str:
    low = verb.lower()
    if low.endswith(("s", "sh", "ch", "x", "z", "o")):
        return low + "es"
    if low.endswith("y") and low[-2:-1] not in "aeiou":
        return low[:-1] + "ies"
    return low + "s"


class _Questions:
    """Templates over one caption's chunks; every answer is a span of the caption."""

    def __init__(self, caption: str) -> None:
        self.caption = caption
        self.chunks = chunk(tag(caption))
        self.phrases = coordinate(self.chunks)

    def the(self, np: Chunk) -> str:
        return "the " + _text(self.caption, np.body)

    @staticmethod
    def wh(np: Chunk) -> str:
        return "Who" if np.head in PEOPLE else "What"

    @staticmethod
    def is_are(np: Chunk) -> str:
        return "are" if np.plural else "is"

    @staticmethod
    def predicate(verb: Chunk | None) -> str:
        """The verb after What/Who ("What runs", "Who is walking"), singular as English asks."""
        if verb is None:
            return "is"
        main = verb.verb
        if main.tag == "v3":
            return main.text
        return third_person(main.text) if main.tag == "vbase" else f"is {main.text}"

    def frames(self) -> Iterator[tuple[Chunk, Chunk | None, Chunk, Chunk]]:
        """(X, verb or None, preposition, Y) for "X [verb] prep Y", Y not a time ("at sunset")."""
        ph = self.phrases
        for i, x in enumerate(ph):
            if x.kind != "np" or x.head in CLOTHING:  # "woman in a red dress walking ..."
                continue
            j = i + 1
            verb = ph[j] if j < len(ph) and ph[j].kind == "verb" else None
            j += verb is not None
            if j + 1 < len(ph) and ph[j].kind == "prep" and ph[j + 1].kind == "np":
                if ph[j + 1].head not in TIME:
                    yield x, verb, ph[j], ph[j + 1]

    def relation(self) -> Iterator[QAPair]:
        for x, verb, prep, y in self.frames():
            if prep.low in SPATIAL:
                question = f"{self.wh(x)} {self.predicate(verb)} {prep.toks[0].text} {self.the(y)}?"
                yield QAPair(question, _text(self.caption, x.toks))

    def where(self) -> Iterator[QAPair]:
        for x, verb, prep, y in self.frames():
            if prep.low not in LOCATION or (prep.low == "in" and y.head in CLOTHING):
                continue
            answer = _text(self.caption, prep.toks + y.toks)
            subject = self.the(x)
            if verb is None:
                question = f"Where {self.is_are(x)} {subject}?"
            elif verb.verb.tag == "v3":
                question = f"Where does {subject} {lemma(verb.verb.text)}?"
            elif verb.verb.tag == "vbase":
                question = f"Where do {subject} {verb.verb.text}?"
            else:
                question = f"Where {self.is_are(x)} {subject} {verb.verb.text}?"
            yield QAPair(question, answer)

    def subject(self) -> Iterator[QAPair]:
        ph = self.phrases
        if len(ph) >= 2 and ph[0].kind == "np" and ph[1].kind == "verb":
            rest = [t for ch in ph[2:] for t in ch.toks if t.tag != "punct"]
            tail = f" {_text(self.caption, tuple(rest))}" if rest else ""
            question = f"{self.wh(ph[0])} {self.predicate(ph[1])}{tail}?"
            yield QAPair(question, _text(self.caption, ph[0].toks))

    def object(self) -> Iterator[QAPair]:
        ph = self.phrases
        for i in range(len(ph) - 2):
            x, verb, y = ph[i : i + 3]
            if x.kind != "np" or verb.kind != "verb" or y.kind != "np" or verb.verb.tag == "ved":
                continue
            toks = y.toks
            j = i + 3
            while j + 1 < len(ph) and ph[j].low == "of" and ph[j + 1].kind == "np":
                toks += ph[j].toks + ph[j + 1].toks
                j += 2
            main = verb.verb
            if main.tag == "v3":
                ask = f"does {self.the(x)} {lemma(main.text)}"
            elif main.tag == "vbase":
                ask = f"do {self.the(x)} {main.text}"
            else:
                ask = f"{self.is_are(x)} {self.the(x)} {main.text}"
            yield QAPair(f"{self.wh(y)} {ask}?", _text(self.caption, toks))

    def count(self) -> Iterator[QAPair]:
        for np in self.chunks:
            number = np.number if np.kind == "np" and np.body else None
            if number is not None and number.low not in ("one", "1"):
                yield QAPair(f"How many {_text(self.caption, np.body)} are there?", number.text)

    def attribute(self, kind: str, template: str) -> Iterator[QAPair]:
        """Colour or size of a noun phrase: the phrase without that word is what is asked about."""
        for np in self.chunks:
            body = np.body if np.kind == "np" else ()
            idx = [i for i, t in enumerate(body) if t.tag == kind]
            if not idx or idx[-1] == len(body) - 1:
                continue
            first, last = idx[0], idx[-1]
            if kind == "colour":  # "red and white" is one answer
                while last + 2 < len(body) and body[last + 1].low in CONJ:
                    if body[last + 2].tag != "colour":
                        break
                    last += 2
            else:
                last = first
            rest = " ".join(t.text for t in body[:first] + body[last + 1 :])
            answer = _text(self.caption, body[first : last + 1])
            yield QAPair(template.format(be=self.is_are(np), rest=rest), answer)

    def all(self) -> list[QAPair]:
        generators = (
            self.relation(),
            self.count(),
            self.where(),
            self.subject(),
            self.object(),
            self.attribute("colour", "What color {be} the {rest}?"),
            self.attribute("size", "What size {be} the {rest}?"),
        )
        return list(dict.fromkeys(pair for gen in generators for pair in gen))


def questions(caption: str) -> list[QAPair]:
    """Candidate pairs for one caption, most informative first (relations, counts, places)."""
    return _Questions(caption or "").all()


class RulesQuestioner:
    """The `rules` backend: nothing to load, one caption at a time."""

    generator = GENERATOR

    def load(self) -> None:
        """Nothing to load; present so the stage treats every backend alike."""

    def candidates(self, captions: list[str]) -> list[list[QAPair]]:
        return [questions(c) for c in captions]
