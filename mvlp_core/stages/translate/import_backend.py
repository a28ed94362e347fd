"""The `import` backend: translations a user already has (Multi30k, an earlier MT run, a vendor).

One file (tsv, csv, jsonl or parquet, optionally .gz/.bz2/.zst for the text formats) is read once
into a dict. Rows are joined to captions by sample `key` or by the English text (`en` column), so
the same file serves any run whose captions it covers.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from mvlp_core.contract import Reject, StageError
from mvlp_core.spec import ImportSpec

FORMATS = (".tsv", ".csv", ".jsonl", ".parquet")
COMPRESSIONS = (".gz", ".bz2", ".zst")

Translations = dict[str, dict[str, str | None]]


def import_path(spec: ImportSpec | None) -> Path:
    """The import file, checked to exist and to have a readable format."""
    if spec is None:
        raise StageError(
            "translate.import: required when translate.backend is 'import' "
            "(path: a tsv/csv/jsonl/parquet file of existing translations)"
        )
    path = Path(spec.path).expanduser()
    if not path.is_file():
        raise StageError(
            f"translate.import.path: file {path} not found; give an existing tsv/csv/jsonl/parquet "
            "file (absolute, or relative to the current directory) or use translate.backend=hf"
        )
    file_format(path)
    return path


def file_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSIONS and suffixes[-2:-1] != [".parquet"]:
        suffixes = suffixes[:-1]
    if not suffixes or suffixes[-1] not in FORMATS:
        raise StageError(
            f"translate.import.path: cannot tell the format of {path.name}; name the file "
            f"*.tsv, *.csv, *.jsonl or *.parquet (text formats may end in {', '.join(COMPRESSIONS)})"
        )
    return suffixes[-1][1:]


def load_translations(path: Path, key_by: str, languages: list[str]) -> Translations:
    """Map join value (key or stripped English text) -> {lang: text or None}; first row wins."""
    join = "key" if key_by == "key" else "en"
    needed = [join, *languages]
    columns = _read_columns(path, file_format(path), needed, key_by)
    table: Translations = {}
    for i, value in enumerate(columns[join]):
        if value is None:
            continue
        table.setdefault(value.strip(), {lang: columns[lang][i] for lang in languages})
    return table


def _require_columns(path: Path, found: list[str], needed: list[str], key_by: str) -> None:
    """A missing column is a run-level error: every sample would be rejected for the same cause."""
    join = needed[0]
    missing = [c for c in needed if c not in found]
    if missing:
        raise StageError(
            f"translate.import.path: {path} has no column(s) {missing} (columns found: {found}). "
            f"With key_by={key_by} the file needs a '{join}' column and one column per target "
            f"language ({', '.join(needed[1:])}); rename the columns, drop the missing languages "
            "from `languages`, or set translate.import.key_by to match the file"
        )


def _read_columns(path: Path, fmt: str, needed: list[str], key_by: str) -> dict[str, list[str | None]]:
    if fmt == "parquet":
        found = pq.read_schema(path).names
        _require_columns(path, found, needed, key_by)
        table = pq.read_table(path, columns=needed)
        return {c: table.column(c).cast(pa.string()).to_pylist() for c in needed}
    if fmt == "jsonl":
        return _read_jsonl(path, needed, key_by)
    parse = pacsv.ParseOptions(delimiter="\t" if fmt == "tsv" else ",", newlines_in_values=True)
    with pacsv.open_csv(path, parse_options=parse) as reader:
        found = reader.schema.names
    _require_columns(path, found, needed, key_by)
    convert = pacsv.ConvertOptions(
        include_columns=needed,
        column_types={c: pa.string() for c in needed},
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    table = pacsv.read_csv(path, parse_options=parse, convert_options=convert)
    return {c: table.column(c).to_pylist() for c in needed}


def _read_jsonl(path: Path, needed: list[str], key_by: str) -> dict[str, list[str | None]]:
    columns: dict[str, list[str | None]] = {c: [] for c in needed}
    found: dict[str, None] = {}
    with pa.input_stream(str(path), compression="detect") as raw:
        for lineno, line in enumerate(io.TextIOWrapper(raw, encoding="utf-8"), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise StageError(
                    f"translate.import.path: {path} line {lineno} is not JSON ({err}); "
                    "write one JSON object per line"
                ) from None
            if not isinstance(row, dict):
                raise StageError(
                    f"translate.import.path: {path} line {lineno} is not a JSON object; "
                    "write one object per line"
                )
            found.update(dict.fromkeys(row))
            for c in needed:
                value = row.get(c)
                columns[c].append(None if value is None else str(value))
    _require_columns(path, list(found), needed, key_by)
    return columns


class ImportBackend:
    """Looks translations up in the import file; the file is read on first use, once."""

    def __init__(self, spec: ImportSpec | None, languages: list[str]) -> None:
        self.path = import_path(spec)
        self.key_by = spec.key_by
        self.languages = list(languages)
        self._table: Translations | None = None

    def problems(self) -> list[str]:
        """The checks `mvlp plan` runs: the file (found and named by its format in __init__) opens
        for reading."""
        try:
            with self.path.open("rb") as f:
                f.read(1)
        except OSError as err:
            return [
                f"translate.import.path: cannot read {self.path} ({err.strerror or err}); make it "
                "readable by the user that runs the pipeline"
            ]
        return []

    def load(self) -> None:
        if self._table is None:
            self._table = load_translations(self.path, self.key_by, self.languages)

    def provenance(self, lang: str) -> str:
        return f"import:{self.path.name}"

    def translate(self, keys: list[str], captions: list[str], lang: str) -> list[str | Reject]:
        self.load()
        joins = keys if self.key_by == "key" else [c.strip() for c in captions]
        out: list[str | Reject] = []
        for key, join in zip(keys, joins):
            row = self._table.get(join)
            if row is None:
                out.append(Reject(key, "missing_translation", f"no {self.key_by} match in {self.path.name}"))
            elif not (row[lang] or "").strip():
                out.append(Reject(key, "empty_translation", f"empty cell in {self.path.name}"))
            else:
                out.append(row[lang].strip())
        return out
