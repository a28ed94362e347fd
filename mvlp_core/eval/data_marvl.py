"""MaRVL (``marvl/zero_shot/annotations/marvl-<lang>.jsonl``, few-shot
``marvl/few_shot/annotations/marvl-<lang>_train<shots>.jsonl``, translate-test
``annotations_machine-translate/marvl-<lang>_gmt.jsonl``) and its English source NLVR2
(``nlvr2/annotations/<split>.jsonl``): a statement about a left and a right image, true or false.

MaRVL rows carry ``concept`` (``"39-Panci"``), ``language``, ``left_img``/``right_img`` (a file
name in the concept's folder; few-shot files include the folder), ``id`` and a boolean ``label``.
NLVR2 rows carry ``identifier`` (``dev-850-0-0``), ``sentence``, ``left_url``/``right_url`` and a
string label ``"True"``/``"False"``; their image files are ``<identifier minus -N>-img0/1.png``,
under ``train/<directory>/`` for training rows, which carry NLVR2's ``directory`` field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mvlp_core.eval.io import AnnotationError, read_jsonl, require

LABEL_WORDS = ("true", "false")


@dataclass(frozen=True)
class PairItem:
    id: str
    lang: str
    statement: str
    left: str  # image reference (see mvlp_core.eval.images)
    right: str
    label: bool
    concept: str = ""  # MaRVL: the concept's image folder
    directory: str = ""  # NLVR2 training rows: the image folder under train/


def _bool(value: object, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("True", "False"):
        return value == "True"
    raise AnnotationError(f"{where}: label {value!r}; expected true/false")


def load_marvl(path: str | Path) -> list[PairItem]:
    items = []
    for n, row in enumerate(read_jsonl(path), 1):
        where = f"{path}:{n}"
        require(row, ("concept", "language", "caption", "left_img", "right_img", "id", "label"), where)
        items.append(
            PairItem(
                str(row["id"]),
                row["language"],
                row["caption"],
                row["left_img"],
                row["right_img"],
                _bool(row["label"], where),
                row["concept"],
            )
        )
    return items


def _directory(value: object) -> str:
    """NLVR2's ``directory`` (an int in train.json: the training image's folder under ``train/``);
    "" where a row has none (dev, test)."""
    return "" if value is None or value == "" else str(value)


def load_nlvr2(path: str | Path) -> list[PairItem]:
    items = []
    for n, row in enumerate(read_jsonl(path), 1):
        where = f"{path}:{n}"
        require(row, ("identifier", "sentence", "left_url", "right_url", "label"), where)
        stem = row["identifier"].rsplit("-", 1)[0]
        items.append(
            PairItem(
                row["identifier"],
                "en",
                row["sentence"],
                f"{stem}-img0",
                f"{stem}-img1",
                _bool(row["label"], where),
                directory=_directory(row.get("directory")),
            )
        )
    return items


def load(path: str | Path) -> list[PairItem]:
    """MaRVL or NLVR2 by file name."""
    return load_nlvr2(path) if "nlvr2" in Path(path).parts else load_marvl(path)
