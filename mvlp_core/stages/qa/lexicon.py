"""Word lists for the rules questioner: closed classes, verb forms and the nouns that change a
template (people take "Who", times and clothes are not places)."""

from __future__ import annotations


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


DETS = _words(
    "a an the this that these those some many several its his her their our my your another each every"
)
PLURAL_DETS = _words("these those some many several")
NUMBERS = _words("one two three four five six seven eight nine ten eleven twelve twenty dozens")
COLOURS = _words(
    "red green blue yellow black white purple orange pink brown grey gray golden silver beige "
    "turquoise violet navy"
)
SIZES = _words("small big large tiny huge giant little")
PREPS = _words(
    "on in at by near with from of into onto over under above below beneath underneath behind "
    "beside between along across through around inside outside during for against toward towards "
    "among within without after before like about off past beyond upon amid via to down"
)
MULTI_PREPS = sorted(
    (
        tuple(p.split())
        for p in (
            "to the left of",
            "to the right of",
            "in front of",
            "on top of",
            "next to",
            "left of",
            "right of",
            "close to",
            "in the middle of",
        )
    ),
    key=len,
    reverse=True,
)
SPATIAL = {
    "above",
    "below",
    "under",
    "over",
    "beneath",
    "underneath",
    "behind",
    "beside",
    "near",
    "on",
    "inside",
    "next to",
    "in front of",
    "on top of",
    "to the left of",
    "to the right of",
    "left of",
    "right of",
    "close to",
    "in the middle of",
}
LOCATION = SPATIAL | _words(
    "in at along across through around by outside into onto against among within beyond down"
)
AUX = _words("is are was were be being been has have had")
CONJ = _words("and &")
CLOSED = _words(
    "it he she they them him there here very not out up away together just also so then what "
    "who which whom whose i we you me us or but while as when where why how"
)
VERBS_3SG = _words(
    "attends arrives walks runs sits stands poses holds rides looks jumps flies swims lies sleeps "
    "eats drinks waits smiles speaks talks reads watches wears carries takes makes gets goes comes "
    "sings dances celebrates hangs grows crosses climbs drives enjoys kicks throws catches hits "
    "scores competes prepares cooks paints writes visits greets hugs kisses rests relaxes stares "
    "reaches floats shines rises surrounds stretches overlooks sails flows crawls grazes blooms "
    "gestures laughs skates surfs skis performs gathers"
)
VERBS_BASE = _words(
    "pose sit stand walk play look wait smile celebrate perform gather dance sing enjoy relax ride "
    "run swim eat drink hold watch hang"
)
ING_NOUNS = _words(
    "building buildings painting paintings ceiling clothing evening morning wedding weddings ring "
    "rings king thing things something nothing everything spring string wing wings swing sibling "
    "siblings railing lighting housing parking meeting drawing drawings pudding icing frosting "
    "bedding landing opening setting ending beginning crossing earring earrings awning dumpling "
    "dumplings topping toppings"
)
ED_NOUNS = _words("hundred sacred naked wicked rugged speed steed breed")
IRREGULAR_PLURALS = _words("people men women children feet teeth mice geese sheep fish deer police")
PEOPLE = _words(
    "man men woman women person people boy boys girl girls child children kid kids baby babies "
    "actor actors actress artist artists player players team bride groom couple family chef "
    "musician musicians singer dancer dancers athlete athletes student students tourist tourists "
    "worker workers businessman businesswoman politician celebrity author model soldier soldiers "
    "officer doctor teacher guy lady ladies friends crowd fans fan footballer footballers runner "
    "cyclist rider skier surfer audience visitors visitor"
)
TIME = _words(
    "sunset sunrise dawn dusk night day daytime morning evening afternoon noon midnight winter "
    "summer spring autumn fall christmas time times year years weekend season moment beginning end"
)
CLOTHING = _words(
    "dress dresses shirt shirts suit suits jacket coat hat uniform uniforms costume costumes jeans "
    "clothes clothing outfit sweater gown skirt t-shirt glasses sunglasses"
)
