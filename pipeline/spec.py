"""Dataset specs: a YAML file describing modalities, relations, splits and training, validated on load.

`load_spec` turns the YAML into frozen dataclasses or raises `SpecError` naming the spec file and the key path
of the first problem (`spec.yaml: relations[1].modalities: unknown modality 'tag'`), so a bad spec fails before
any data is read. Data paths resolve relative to the spec file's folder, or to `data_root` when given.
"""

from __future__ import annotations

import codecs
import glob
import hashlib
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from hyperlearn.config import TrainingConfig
from hyperlearn.rundir import LossKind

Format = Literal["csv", "tsv", "jsonl", "parquet"]
Duplicates = Literal["last", "first", "mean", "sum", "max"]

SUFFIX_FORMATS: dict[str, Format] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
DEFAULT_SEPARATORS: dict[str, str] = {"csv": ",", "tsv": "\t"}
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


class SpecError(ValueError):
    """A dataset spec that cannot be used; the message names the spec file and the key path."""


@dataclass(frozen=True)
class SourceSpec:
    """One data file and how to parse it. `names` replaces the header (or supplies one when header is false)."""

    path: Path
    format: Format
    sep: str | None = None
    header: bool = True
    names: tuple[str, ...] | None = None
    encoding: str = "utf-8"

    @property
    def delimiter(self) -> str:
        """The field separator of a csv/tsv source: `sep`, else the format's default."""
        return self.sep if self.sep is not None else DEFAULT_SEPARATORS[self.format]


@dataclass(frozen=True)
class FeatureSpec:
    """Side data of a modality: one row per entity key, numeric columns standardised, categorical one-hot."""

    source: SourceSpec
    key: str
    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    standardise: bool = True


@dataclass(frozen=True)
class KnnSpec:
    k: int = 10


@dataclass(frozen=True)
class PairsSpec:
    """Given intra-modal pairs (e.g. friendships): two key columns and an optional weight column."""

    source: SourceSpec
    columns: tuple[str, str]
    weight: str | None = None


@dataclass(frozen=True)
class GraphSpec:
    """Recipe of a modality's graph: k-NN over its features, given pairs, or the union of both."""

    knn: KnnSpec | None = None
    pairs: PairsSpec | None = None


@dataclass(frozen=True)
class ModalitySpec:
    name: str
    features: FeatureSpec | None = None
    graph: GraphSpec | None = None


@dataclass(frozen=True)
class RelationSpec:
    """A cross-modal relation: one row of its sources is one observed tuple, a key per modality and a value.

    `value` is a column name, or a constant (1.0 for "observed"). `sources` is {"all": ...} for one source that
    is split at random, or {"train": ..., "test": ...} for a given split.
    """

    name: str
    modalities: tuple[str, ...]
    key_columns: tuple[str, ...]
    value: str | float
    loss: LossKind
    weight: float
    time: str | None
    duplicates: Duplicates
    sources: dict[str, SourceSpec]

    @property
    def order(self) -> int:
        return len(self.modalities)

    @property
    def value_column(self) -> str | None:
        return self.value if isinstance(self.value, str) else None


@dataclass(frozen=True)
class SplitSpec:
    """Random hold-out: `test` of all entries (single-source relations), then `validation` of the train part."""

    test: float = 0.1
    validation: float = 0.05
    seed: int = 0


@dataclass(frozen=True)
class DatasetSpec:
    """A whole dataset spec. `spec_hash` is the SHA-256 of the spec file's parsed content ("" when built in code)."""

    name: str
    spec_path: Path
    modalities: tuple[ModalitySpec, ...]
    relations: tuple[RelationSpec, ...]
    split: SplitSpec = field(default_factory=SplitSpec)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    spec_hash: str = ""

    def modality(self, name: str) -> ModalitySpec:
        """The modality called `name` (KeyError when the spec has none)."""
        for modality in self.modalities:
            if modality.name == name:
                return modality
        raise KeyError(f"{self.spec_path}: no modality {name!r}")

    def relation(self, name: str) -> RelationSpec:
        """The relation called `name` (KeyError when the spec has none)."""
        for relation in self.relations:
            if relation.name == name:
                return relation
        raise KeyError(f"{self.spec_path}: no relation {name!r}")


def load_spec(path: Path, data_root: Path | None = None) -> DatasetSpec:
    """Read and validate a dataset spec; raise SpecError naming the file and key path of the first problem."""
    path = Path(path)
    try:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=_SpecLoader)
    except OSError as error:
        raise SpecError(f"{path}: cannot read the spec: {error.strerror or error}") from error
    except yaml.YAMLError as error:
        raise SpecError(f"{path}: not valid YAML: {error}") from error
    base = Path(data_root) if data_root is not None else path.resolve().parent
    try:
        return _dataset(document, path.resolve(), base)
    except _Invalid as error:
        raise SpecError(f"{path}: {error}") from None


# --- YAML loading: mappings remember keys given twice, so the error can name the key path ---------------------


class _Mapping(dict):
    """A YAML mapping that also records keys given more than once (PyYAML would keep the last silently)."""

    repeated: dict[Any, int]


class _SpecLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _SpecLoader, node: yaml.MappingNode):  # a generator, as PyYAML expects
    mapping = _Mapping()
    mapping.repeated = {}
    yield mapping
    mapping.update(loader.construct_mapping(node, deep=True))
    seen: Counter = Counter()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        seen[key] += 1
        if seen[key] == 2:
            mapping.repeated[key] = key_node.start_mark.line + 1


_SpecLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)


# --- typed accessors that name the key path --------------------------------------------------------------------


class _Invalid(Exception):
    """A problem at a key path; load_spec adds the file name and raises SpecError."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}" if where else message)


def _at(where: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else key


def _mapping(node: Any, where: str) -> dict:
    if not isinstance(node, dict):
        raise _Invalid(where, f"expected a mapping, got {_kind(node)}")
    if repeated := _first_repeated(node):
        key, line = repeated
        raise _Invalid(where, f"key {key!r} given twice (line {line})")
    return node


def _first_repeated(node: dict) -> tuple[Any, int] | None:
    """(key, line) of the first key given twice in a YAML mapping, if any."""
    return next(iter(getattr(node, "repeated", {}).items()), None)


def _fields(node: Any, where: str, required: tuple[str, ...] = (), optional: tuple[str, ...] = ()) -> dict:
    """The mapping at `where`, after checking that it has every required key and no unknown one."""
    mapping = _mapping(node, where)
    allowed = (*required, *optional)
    for key in mapping:
        if key not in allowed:
            raise _Invalid(_at(where, str(key)), f"unknown key; allowed here: {', '.join(allowed)}")
    for key in required:
        if key not in mapping:
            raise _Invalid(_at(where, key), "required key is missing")
    return mapping


def _kind(node: Any) -> str:
    return "nothing" if node is None else f"{type(node).__name__} {node!r}"


def _string(node: Any, where: str) -> str:
    if not isinstance(node, str) or not node:
        raise _Invalid(where, f"expected a non-empty string, got {_kind(node)}")
    return node


def _name(node: Any, where: str) -> str:
    name = _string(node, where)
    if not _NAME.fullmatch(name):
        rule = "letters, digits, '_', '.', '-', not starting with '.' or '-'"
        raise _Invalid(where, f"{name!r} is not a valid name ({rule})")
    return name


def _number(node: Any, where: str) -> float:
    if isinstance(node, bool) or not isinstance(node, (int, float)) or not math.isfinite(node):
        raise _Invalid(where, f"expected a finite number, got {_kind(node)}")
    return float(node)


def _fraction(node: Any, where: str) -> float:
    value = _number(node, where)
    if not 0 <= value < 1:
        raise _Invalid(where, f"must be in [0, 1), got {value}")
    return value


def _integer(node: Any, where: str, minimum: int) -> int:
    if isinstance(node, bool) or not isinstance(node, int):
        raise _Invalid(where, f"expected an integer, got {_kind(node)}")
    if node < minimum:
        raise _Invalid(where, f"must be >= {minimum}, got {node}")
    return node


def _boolean(node: Any, where: str) -> bool:
    if not isinstance(node, bool):
        raise _Invalid(where, f"expected true or false, got {_kind(node)}")
    return node


def _choice(node: Any, where: str, kind: Any) -> Any:
    choices = get_args(kind)
    if node not in choices:
        raise _Invalid(where, f"must be one of {', '.join(choices)}, got {_kind(node)}")
    return node


def _strings(node: Any, where: str) -> tuple[str, ...]:
    if not isinstance(node, list):
        raise _Invalid(where, f"expected a list of column names, got {_kind(node)}")
    values = tuple(_string(item, _at(where, i)) for i, item in enumerate(node))
    for item, count in Counter(values).items():
        if count > 1:
            raise _Invalid(where, f"{item!r} listed twice")
    return values


def _unique_names(names: list[str], where: str, what: str) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            raise _Invalid(_at(_at(where, i), "name"), f"duplicate {what} name {name!r}")
        seen.add(name)


# --- the spec, section by section ------------------------------------------------------------------------------


def _dataset(document: Any, spec_path: Path, base: Path) -> DatasetSpec:
    if not isinstance(document, dict):
        raise _Invalid("", f"expected a mapping with name, modalities and relations, got {_kind(document)}")
    top = _fields(document, "", required=("name", "modalities", "relations"), optional=("split", "training"))
    name = _name(top["name"], "name")
    modality_nodes = _list(top["modalities"], "modalities")
    modalities = tuple(_modality(node, _at("modalities", i), base) for i, node in enumerate(modality_nodes))
    _unique_names([m.name for m in modalities], "modalities", "modality")
    known = {m.name for m in modalities}
    relation_nodes = _list(top["relations"], "relations")
    relations = tuple(_relation(node, _at("relations", i), base, known) for i, node in enumerate(relation_nodes))
    _unique_names([r.name for r in relations], "relations", "relation")
    used = {name for relation in relations for name in relation.modalities}
    for i, modality in enumerate(modalities):
        if modality.name not in used:
            raise _Invalid(_at(_at("modalities", i), "name"), f"modality {modality.name!r} is in no relation")
    training = _training(top.get("training", {}), "training")
    unknown = sorted(set(training.projected) - known)
    if unknown:
        raise _Invalid("training.projected", f"unknown modality(ies) {unknown}; known: {sorted(known)}")
    return DatasetSpec(
        name=name,
        spec_path=spec_path,
        modalities=modalities,
        relations=relations,
        split=_split(top.get("split", {}), "split"),
        training=training,
        spec_hash=hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest(),
    )


def _list(node: Any, where: str) -> list:
    if not isinstance(node, list) or not node:
        raise _Invalid(where, f"expected a non-empty list, got {_kind(node)}")
    return node


def _source(node: Any, where: str, base: Path) -> SourceSpec:
    fields = _fields(node, where, required=("path",), optional=("format", "sep", "header", "names", "encoding"))
    path = base / _string(fields["path"], _at(where, "path"))
    if "format" in fields:
        format_ = _choice(fields["format"], _at(where, "format"), Format)
    elif path.suffix.lower() in SUFFIX_FORMATS:
        format_ = SUFFIX_FORMATS[path.suffix.lower()]
    else:
        raise _Invalid(
            _at(where, "format"),
            f"cannot infer the format of {path.name!r} from its suffix; set format: {' | '.join(get_args(Format))}",
        )
    if not (path.is_file() or path.is_dir() or glob.glob(str(path))):  # a file, a folder of files, or a glob
        raise _Invalid(_at(where, "path"), f"file not found: {path}")
    if format_ not in DEFAULT_SEPARATORS:
        for key in ("sep", "header", "names"):
            if key in fields:
                raise _Invalid(_at(where, key), f"only for csv and tsv sources, not {format_}")
    sep = fields.get("sep")
    if sep is not None and (not isinstance(sep, str) or len(sep) != 1):
        raise _Invalid(_at(where, "sep"), f"expected one character, got {_kind(sep)}")
    header = _boolean(fields.get("header", True), _at(where, "header"))
    names = _strings(fields["names"], _at(where, "names")) if fields.get("names") is not None else None
    if not header and names is None:
        raise _Invalid(_at(where, "names"), "required when header is false")
    encoding = _string(fields.get("encoding", "utf-8"), _at(where, "encoding"))
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise _Invalid(_at(where, "encoding"), f"unknown encoding {encoding!r}") from None
    return SourceSpec(path=path, format=format_, sep=sep, header=header, names=names, encoding=encoding)


def _modality(node: Any, where: str, base: Path) -> ModalitySpec:
    fields = _fields(node, where, required=("name",), optional=("features", "graph"))
    name = _name(fields["name"], _at(where, "name"))
    features = _features(fields["features"], _at(where, "features"), base) if fields.get("features") else None
    graph = _graph(fields["graph"], _at(where, "graph"), base) if "graph" in fields else None
    if graph is not None and graph.knn is not None and features is None:
        raise _Invalid(_at(_at(where, "graph"), "knn"), f"needs {_at(where, 'features')} to compute neighbours from")
    return ModalitySpec(name=name, features=features, graph=graph)


def _features(node: Any, where: str, base: Path) -> FeatureSpec:
    fields = _fields(node, where, required=("source", "key"), optional=("numeric", "categorical", "standardise"))
    key = _string(fields["key"], _at(where, "key"))
    numeric = _strings(fields.get("numeric", []), _at(where, "numeric"))
    categorical = _strings(fields.get("categorical", []), _at(where, "categorical"))
    if not numeric and not categorical:
        raise _Invalid(where, "list at least one numeric or categorical column")
    for column in (key, *numeric):
        if column in categorical:
            raise _Invalid(_at(where, "categorical"), f"column {column!r} is also the key or a numeric column")
    if key in numeric:
        raise _Invalid(_at(where, "numeric"), f"column {key!r} is the key column")
    standardise = fields.get("standardise", True)
    if not isinstance(standardise, bool):
        raise _Invalid(_at(where, "standardise"), f"expected true or false, got {standardise!r}")
    return FeatureSpec(
        source=_source(fields["source"], _at(where, "source"), base),
        key=key,
        numeric=numeric,
        categorical=categorical,
        standardise=standardise,
    )


def _graph(node: Any, where: str, base: Path) -> GraphSpec:
    fields = _fields(node, where, optional=("knn", "pairs"))
    if fields.get("knn") is None and fields.get("pairs") is None:
        raise _Invalid(where, "give knn, pairs or both")
    knn = None
    if fields.get("knn") is not None:
        knn_fields = _fields(fields["knn"], _at(where, "knn"), optional=("k",))
        knn = KnnSpec(k=_integer(knn_fields.get("k", KnnSpec.k), _at(_at(where, "knn"), "k"), minimum=1))
    pairs = None
    if fields.get("pairs") is not None:
        at = _at(where, "pairs")
        pair_fields = _fields(fields["pairs"], at, required=("source", "columns"), optional=("weight",))
        columns = _strings(pair_fields["columns"], _at(at, "columns"))
        if len(columns) != 2:
            raise _Invalid(_at(at, "columns"), f"expected two key columns, got {len(columns)}")
        weight = pair_fields.get("weight")
        if weight is not None:
            weight = _string(weight, _at(at, "weight"))
            if weight in columns:
                raise _Invalid(_at(at, "weight"), f"column {weight!r} is also a key column")
        source = _source(pair_fields["source"], _at(at, "source"), base)
        pairs = PairsSpec(source=source, columns=columns, weight=weight)
    return GraphSpec(knn=knn, pairs=pairs)


def _relation(node: Any, where: str, base: Path, known: set[str]) -> RelationSpec:
    fields = _fields(
        node,
        where,
        required=("name", "modalities"),
        optional=("value", "loss", "weight", "time", "duplicates", "source", "sources"),
    )
    name = _name(fields["name"], _at(where, "name"))
    if name.startswith("graph-"):
        raise _Invalid(_at(where, "name"), "names starting with 'graph-' are kept for graph quarantine files")
    modalities, key_columns = _relation_modalities(fields["modalities"], _at(where, "modalities"), known)
    value = fields.get("value", 1.0)
    if isinstance(value, str):
        value = _string(value, _at(where, "value"))
        if value in key_columns:
            raise _Invalid(_at(where, "value"), f"column {value!r} is also a key column")
    else:
        value = _number(value, _at(where, "value"))
    loss = _choice(fields.get("loss", "squared"), _at(where, "loss"), LossKind)
    if loss == "logistic" and isinstance(value, float) and not 0 <= value <= 1:
        raise _Invalid(_at(where, "value"), f"a logistic relation needs values in [0, 1], got {value}")
    weight = _number(fields.get("weight", 1.0), _at(where, "weight"))
    if weight <= 0:
        raise _Invalid(_at(where, "weight"), f"must be > 0, got {weight}")
    time = fields.get("time")
    if time is not None:
        time = _string(time, _at(where, "time"))
        if time in key_columns or time == value:
            raise _Invalid(_at(where, "time"), f"column {time!r} is also a key or value column")
    return RelationSpec(
        name=name,
        modalities=modalities,
        key_columns=key_columns,
        value=value,
        loss=loss,
        weight=weight,
        time=time,
        duplicates=_choice(fields.get("duplicates", "last"), _at(where, "duplicates"), Duplicates),
        sources=_relation_sources(fields, where, base),
    )


def _relation_modalities(node: Any, where: str, known: set[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The ordered `modality: key column` mapping of a relation."""
    if isinstance(node, dict) and (repeated := _first_repeated(node)):
        modality, line = repeated
        raise _Invalid(where, f"modality {modality!r} given twice (line {line}); a relation spans distinct modalities")
    mapping = _mapping(node, where)
    for modality in mapping:
        if modality not in known:
            raise _Invalid(where, f"unknown modality {modality!r}; known: {', '.join(sorted(known))}")
    if len(mapping) < 2:
        raise _Invalid(where, f"a relation spans at least 2 modalities, got {len(mapping)}")
    columns = tuple(_string(column, _at(where, modality)) for modality, column in mapping.items())
    for column, count in Counter(columns).items():
        if count > 1:
            raise _Invalid(where, f"key column {column!r} used for more than one modality")
    return tuple(mapping), columns


def _relation_sources(fields: dict, where: str, base: Path) -> dict[str, SourceSpec]:
    if ("source" in fields) == ("sources" in fields):
        raise _Invalid(where, "give either source (split at random) or sources (train and test)")
    if "source" in fields:
        return {"all": _source(fields["source"], _at(where, "source"), base)}
    at = _at(where, "sources")
    given = _fields(fields["sources"], at, required=("train", "test"))
    return {split: _source(given[split], _at(at, split), base) for split in ("train", "test")}


def _split(node: Any, where: str) -> SplitSpec:
    fields = _fields(node, where, optional=("test", "validation", "seed"))
    defaults = SplitSpec()
    return SplitSpec(
        test=_fraction(fields.get("test", defaults.test), _at(where, "test")),
        validation=_fraction(fields.get("validation", defaults.validation), _at(where, "validation")),
        seed=_integer(fields.get("seed", defaults.seed), _at(where, "seed"), minimum=0),
    )


def _training(node: Any, where: str) -> TrainingConfig:
    try:
        return TrainingConfig.from_dict(dict(_mapping(node, where)), where=where)
    except ValueError as error:
        where, _, message = str(error).partition(": ")
        raise _Invalid(where, message) from None
