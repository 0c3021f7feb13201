"""Dataset specs: a YAML file describing modalities, relations, splits and training, validated once on load.

The YAML document's schema is a set of pydantic models (`_Document`, exported for editors by
`spec_json_schema`); `load_spec` parses the file with a bounded loader, applies the command-line overrides to
its `training:` block, validates the whole, checks what spans sections (modality names, axis names, data paths
under the allowed roots, memory for the rank) and returns frozen dataclasses. Every problem raises `SpecError`
naming the spec file and the key path (`spec.yaml: relations[1].modalities: unknown modality 'tag'`), or the
option a bad override came from (`spec.yaml: --projected: ...`), before any data is read.
"""

from __future__ import annotations

import codecs
import dataclasses
import glob
import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from hyperlearn.config import MemoryBudgetError, TrainingConfig, check_memory
from hyperlearn.pipeline.gate import DEFAULT_TOLERANCE, GateSpec, higher_is_better
from hyperlearn.rundir import Evaluation, LossKind, NegativeDistribution, Negatives, Structure

Format = Literal["csv", "tsv", "jsonl", "parquet"]
Duplicates = Literal["last", "first", "mean", "sum", "max"]
UnicodeForm = Literal["NFC", "NFD", "NFKC", "NFKD"]
SourceName = Literal["all", "train", "validation", "test"]

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
#: A spec larger than this many YAML nodes, counting every alias expansion, is refused (a billion-laughs bomb
#: stops here at once); real specs have a few hundred.
MAX_YAML_NODES = 20_000


class SpecError(ValueError):
    """A dataset spec that cannot be used; the message names the spec file and the key path."""


# --- what the rest of the code uses ------------------------------------------------------------------------------


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
class KeyNormalisation:
    """How a modality's keys are normalised before they are matched to the catalog (applied by ingest), so that
    ' u1' and 'u1', or the two Unicode spellings of 'é', are one entity."""

    strip: bool = True
    unicode: UnicodeForm | None = "NFC"
    casefold: bool = False


@dataclass(frozen=True)
class ModalitySpec:
    name: str
    features: FeatureSpec | None = None
    graph: GraphSpec | None = None
    keys: KeyNormalisation = KeyNormalisation()


@dataclass(frozen=True)
class RelationSpec:
    """A cross-modal relation: one row of its sources is one observed tuple, a key per axis and a value.

    Axis k holds entities of `modalities[k]`, read from column `key_columns[k]` (the axis's name); a modality may
    span several axes (head and tail of a triple). `value` is a column name, or a constant (1.0 for "observed").
    `sources` is {"all": ...} for one source that is split at random, or "train" with optional "validation" and
    "test" for given splits. `negatives` and `evaluation` name axes by position, as `RelationMeta` does;
    `split` is the relation's own split settings (None: the dataset's). `separators` gives, per axis, the
    separator of a multi-valued key field (one row, one tuple per value: a movie's genres "A|B"), None for a
    single key; empty when no axis is multi-valued.
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
    structure: Structure = "cp"
    negatives: Negatives = Negatives()
    evaluation: Evaluation | None = None
    split: SplitSpec | None = None
    separators: tuple[str | None, ...] = ()

    @property
    def order(self) -> int:
        return len(self.modalities)

    @property
    def axes(self) -> tuple[str, ...]:
        """The axis names: the key columns."""
        return self.key_columns

    @property
    def value_column(self) -> str | None:
        return self.value if isinstance(self.value, str) else None

    def separator(self, axis: int) -> str | None:
        """The separator of axis `axis`'s key field when it holds several values, else None."""
        return self.separators[axis] if self.separators else None

    def axis(self, name: str) -> int:
        """The position of the axis called `name`: its key column, or its modality when only one axis has it."""
        if name in self.key_columns:
            return self.key_columns.index(name)
        positions = [axis for axis, modality in enumerate(self.modalities) if modality == name]
        if len(positions) == 1:
            return positions[0]
        if positions:
            raise ValueError(f"modality {name!r} is on axes {', '.join(self.key_columns[p] for p in positions)}; "
                             "name the axis by its column")
        raise ValueError(f"no axis {name!r}; axes: {', '.join(self.key_columns)} "
                         f"(modalities {', '.join(self.modalities)})")


def default_structure(loss: LossKind, order: int, evaluation: Evaluation | None) -> Structure:
    """The structure of a relation whose spec gives none: "pairwise" (PITF-style pairs with the target) for an
    implicit relation (logistic, bpr, softmax) of order >= 3 with an evaluation target, "cp" otherwise. A full CP
    block over three or more axes must fit every tuple through one product, which ranking tags for a (user,
    item) query does poorly; pairs with the target are the standard model there."""
    return "pairwise" if loss != "squared" and order >= 3 and evaluation is not None else "cp"


@dataclass(frozen=True)
class SplitSpec:
    """Seeded hash hold-out: `test` of all tuples (single-source relations), then `validation` of the train part.

    With `group_by` (axis names), the hash is of those axes' keys only, so every tuple of a group (a post's
    tags: group_by [user, item]) lands in the same split."""

    test: float = 0.1
    validation: float = 0.05
    seed: int = 0
    group_by: tuple[str, ...] | None = None


@dataclass(frozen=True)
class PublishSpec:
    """How a run publishes: its quality gate (hyperlearn.pipeline.gate), None when turned off."""

    gate: GateSpec | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """A whole dataset spec. `spec_hash` is the SHA-256 of the spec file's parsed content ("" when built in code);
    `training` has the command-line overrides applied."""

    name: str
    spec_path: Path
    modalities: tuple[ModalitySpec, ...]
    relations: tuple[RelationSpec, ...]
    split: SplitSpec = field(default_factory=SplitSpec)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    spec_hash: str = ""
    publish: PublishSpec = field(default_factory=PublishSpec)

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


# --- the YAML document's schema ----------------------------------------------------------------------------------

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$", description="letters, digits, _ . -")]
Text = Annotated[str, Field(min_length=1)]
Fraction = Annotated[float, Field(ge=0, lt=1)]
Columns = Annotated[list[Text], Field(description="column names, each once")]


def _distinct(values: list[str] | None) -> list[str] | None:
    repeated = [value for value, count in Counter(values or ()).items() if count > 1]
    if repeated:
        raise ValueError(f"{repeated[0]!r} listed twice")
    return values


def _column_or_number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or value == "":
        raise ValueError(f"expected a column name or a finite number, got {_kind(value)}")
    return value


class _Strict(BaseModel):
    """Unknown keys are errors; YAML scalars are taken as they are (no "5" → 5, no true → 1.0)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class _Source(_Strict):
    path: Text = Field(description="relative to the spec's folder, or to --data-root")
    format: Format | None = Field(None, description="default: from the file's suffix")
    sep: Annotated[str, Field(min_length=1, max_length=1)] | None = None
    header: bool = True
    names: Columns | None = Field(None, description="column names, replacing the header; required without one")
    encoding: Text = "utf-8"

    _names = field_validator("names")(_distinct)

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, encoding: str) -> str:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise ValueError(f"unknown encoding {encoding!r}") from None
        return encoding


class _Features(_Strict):
    source: _Source
    key: Text
    numeric: Columns = []
    categorical: Columns = []
    standardise: bool = True

    _columns = field_validator("numeric", "categorical")(_distinct)


class _Knn(_Strict):
    k: Annotated[int, Field(ge=1)] = 10


class _Pairs(_Strict):
    source: _Source
    columns: Annotated[list[Text], Field(min_length=2, max_length=2)]
    weight: Text | None = None


class _Graph(_Strict):
    knn: _Knn | None = None
    pairs: _Pairs | None = None


class _Keys(_Strict):
    strip: bool = True
    unicode: UnicodeForm | None = "NFC"
    casefold: bool = False


class _Modality(_Strict):
    name: Name
    features: _Features | None = None
    graph: _Graph | None = None
    keys: _Keys = _Keys()


class _MultiValued(_Strict):
    """A key field holding several values (MovieLens genres 'Adventure|Animation'): one tuple per value."""

    column: Text
    separator: Annotated[str, Field(min_length=1)] = Field(description="what separates the values, e.g. '|'")


class _Axis(_Strict):
    modality: Name
    column: Text
    separator: Annotated[str, Field(min_length=1)] | None = Field(
        None, description="the field holds several values separated by this: one tuple per value"
    )


class _Negatives(_Strict):
    axes: Columns | None = Field(None, description="axes to corrupt (column or modality names); "
                                 "default: the evaluation target, else every axis")
    count: Annotated[int, Field(ge=1)] = 4
    distribution: NegativeDistribution = "uniform"
    shared_by: Annotated[int, Field(ge=1, description="positives that share one draw of `count` entities (one "
                                    "corrupted axis): their scores are then one matrix product, so far more "
                                    "negatives are cheap; 1: each positive has its own")] = 1


class _Evaluate(_Strict):
    target: Text = Field(description="the axis ranked for each query (column or modality name)")
    k: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)] = [5, 10, 20]


class _Sources(_Strict):
    train: _Source
    validation: _Source | None = Field(None, description="default: carved out of train (split.validation)")
    test: _Source | None = Field(None, description="default: no test split")


class _Split(_Strict):
    test: Fraction = 0.1
    validation: Fraction = 0.05
    seed: Annotated[int, Field(ge=0)] = 0
    group_by: Columns | None = Field(None, description="axes whose keys keep a group's tuples in one split")

    _group_by = field_validator("group_by")(_distinct)


class _Relation(_Strict):
    name: Name
    modalities: dict[Name, Text | _MultiValued] | None = Field(
        None, description="modality → key column (or {column, separator} for a field of several values), in axis order"
    )
    axes: Annotated[list[_Axis], Field(min_length=2)] | None = Field(
        None, description="the axes in order, for relations that span a modality more than once"
    )
    value: Annotated[Text | float, BeforeValidator(_column_or_number)] = Field(
        1.0, description="a column name, or a constant (1 for 'observed')"
    )
    loss: LossKind = "squared"
    structure: Structure | None = Field(None, description="default: pairwise for implicit relations of order >= 3 "
                                        "with an evaluation target, else cp")
    negatives: _Negatives = _Negatives()
    evaluate: _Evaluate | None = None
    weight: Annotated[float, Field(gt=0)] = 1.0
    time: Text | None = None
    duplicates: Duplicates = "last"
    source: _Source | None = Field(None, description="one file, split at random (split:)")
    sources: _Sources | None = None
    split: _Split | None = Field(None, description="this relation's own split settings, replacing the dataset's")


class _Gate(_Strict):
    metric: Text | None = Field(None, description="a validation metric: validation/<relation>/<name>, or <name> of "
                                "the first relation (default: its rmse, ndcg@k or held-out loss)")
    tolerance: Annotated[float, Field(ge=0, allow_inf_nan=False)] = Field(
        DEFAULT_TOLERANCE, description="how much worse than the parent, as a fraction of the parent's value, still "
        "moves latest"
    )


class _Publish(_Strict):
    gate: _Gate | Literal[False] = Field(_Gate(), description="false: latest always moves to the newest version")


class _Document(_Strict):
    """A HyperLearn dataset spec."""

    model_config = ConfigDict(title="HyperLearn dataset spec")
    name: Name
    modalities: Annotated[list[_Modality], Field(min_length=1)]
    relations: Annotated[list[_Relation], Field(min_length=1)]
    split: _Split = _Split()
    training: TrainingConfig = TrainingConfig()
    publish: _Publish = _Publish()


def spec_json_schema() -> dict[str, Any]:
    """The JSON Schema of a dataset spec, for editors (docs/spec.schema.json is this, kept in sync by a test)."""
    return _Document.model_json_schema()


# --- loading -------------------------------------------------------------------------------------------------------

Location = tuple[str | int, ...]


class _Invalid(Exception):
    """A problem at a key path; load_spec adds the file name and raises SpecError."""

    def __init__(self, loc: Location, message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


def load_spec(
    path: Path,
    data_root: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    allow_roots: Sequence[Path] = (),
) -> DatasetSpec:
    """Read, resolve and validate a dataset spec; raise SpecError naming the file and key path of the first problem.

    `overrides` (TrainingConfig field → value, from the command line) replace the spec's `training:` settings
    before anything is checked. Data paths resolve against `data_root`, else the spec's folder, and must lie
    under it or under one of `allow_roots`.
    """
    path = Path(path)
    overrides = dict(overrides or {})
    try:
        document = _read_yaml(path)
        if not isinstance(document, dict):
            raise _Invalid((), f"expected a mapping with name, modalities and relations, got {_kind(document)}")
        spec_hash = hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()
        training = document.get("training") or {}
        if not isinstance(training, dict):
            raise _Invalid(("training",), f"expected a mapping, got {_kind(training)}")
        try:
            parsed = _Document.model_validate({**document, "training": {**training, **overrides}})
        except ValidationError as error:
            raise _first_problem(error) from None
        base = Path(data_root) if data_root is not None else path.resolve().parent
        roots = [base.resolve(), *(Path(root).resolve() for root in allow_roots)]
        spec = _resolve(parsed, path.resolve(), base, roots, spec_hash)
    except _Invalid as problem:
        where = _where(problem.loc, overrides)
        raise SpecError(f"{path}: {where}: {problem.message}" if where else f"{path}: {problem.message}") from None
    return spec


def _read_yaml(path: Path) -> Any:
    """The document in `path`, refused when it repeats a key or expands to more than MAX_YAML_NODES nodes."""
    try:
        text = path.read_text(encoding="utf-8")
    except IsADirectoryError:
        raise _Invalid((), "cannot read the spec: it is a directory, expected a YAML file") from None
    except OSError as error:
        raise _Invalid((), f"cannot read the spec: {error.strerror or error}") from error
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_nodes(node)
        return loader.construct_document(node)
    except yaml.YAMLError as error:
        raise _Invalid((), f"not valid YAML: {error}") from None
    finally:
        loader.dispose()


def _check_nodes(root: yaml.Node) -> None:
    """Walk the node graph as construction would expand it (aliases included), at most MAX_YAML_NODES nodes.

    Key paths are kept as (parent, key) links, so a deep (or recursive) document costs O(nodes), not O(nodes²)."""
    stack: list[tuple[yaml.Node, tuple | None]] = [(root, None)]
    visited = 0
    while stack:
        node, path = stack.pop()
        visited += 1
        if visited > MAX_YAML_NODES:
            raise _Invalid((), f"more than {MAX_YAML_NODES} YAML nodes once aliases are expanded; refused "
                           "(an alias bomb, or not a dataset spec)")
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, (path, i)) for i, child in enumerate(node.value))
        elif isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else str(key.start_mark)
                if name in seen:
                    loc = _unlinked(path)
                    hint = "; a modality on several axes needs the axes: form" if loc[-1:] == ("modalities",) else ""
                    raise _Invalid(loc, f"key {name!r} given twice (line {key.start_mark.line + 1}){hint}")
                seen.add(name)
                stack.append((value, (path, name)))


def _unlinked(path: tuple | None) -> Location:
    """The key path of a (parent, key) link chain."""
    parts: list[str | int] = []
    while path is not None:
        path, key = path
        parts.append(key)
    return tuple(reversed(parts))


def _first_problem(error: ValidationError) -> _Invalid:
    """The first pydantic error as a key path and a message saying what was expected and what was given."""
    detail = error.errors(include_url=False)[0]
    loc, kind = tuple(detail["loc"]), detail["type"]
    if kind == "missing":
        return _Invalid(loc, "required key is missing")
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        return _Invalid(loc, f"unknown key; allowed here: {', '.join(_keys_at(loc[:-1]))}")
    if kind == "string_pattern_mismatch":
        return _Invalid(loc, f"{detail['input']!r} is not a valid name (letters, digits, '_', '.', '-', not "
                        "starting with '.' or '-')")
    if kind == "value_error":
        return _Invalid(loc, str(detail["ctx"]["error"]))
    message = detail["msg"]
    return _Invalid(loc, f"{message[0].lower()}{message[1:]}, got {_kind(detail['input'])}")


def _keys_at(loc: Location) -> list[str]:
    """The keys the schema allows in the mapping at `loc`."""
    model: Any = _Document
    for part in loc:
        if isinstance(part, str):
            model = _model_in(_fields_of(model)[part])
    return list(_fields_of(model))


def _fields_of(model: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(model):
        return {f.name: f.type for f in dataclasses.fields(model)}
    return {name: info.annotation for name, info in model.model_fields.items()}


def _model_in(annotation: Any) -> Any:
    """The model class inside an annotation such as `list[_Axis] | None`."""
    if isinstance(annotation, type) and (issubclass(annotation, BaseModel) or dataclasses.is_dataclass(annotation)):
        return annotation
    return next((m for m in map(_model_in, get_args(annotation)) if m is not None), None)


def _where(loc: Location, overrides: Mapping[str, Any]) -> str:
    """`relations[1].modalities`; a training setting given on the command line is named by its option."""
    if len(loc) >= 2 and loc[0] == "training" and loc[1] in overrides:
        return f"--{str(loc[1]).replace('_', '-')}"
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def _kind(value: Any) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"


# --- what spans sections -------------------------------------------------------------------------------------------


def _resolve(document: _Document, spec_path: Path, base: Path, roots: list[Path], spec_hash: str) -> DatasetSpec:
    _unique([m.name for m in document.modalities], "modalities", "modality")
    _unique([r.name for r in document.relations], "relations", "relation")
    known = [m.name for m in document.modalities]
    modalities = tuple(
        _modality(m, ("modalities", i), _Paths(base, roots)) for i, m in enumerate(document.modalities)
    )
    relations = tuple(
        _relation(r, ("relations", i), known, _Paths(base, roots)) for i, r in enumerate(document.relations)
    )
    used = {name for relation in relations for name in relation.modalities}
    for i, name in enumerate(known):
        if name not in used:
            raise _Invalid(("modalities", i, "name"), f"modality {name!r} is in no relation")
    split = _split(document.split)
    for i, relation in enumerate(relations):
        for name in split.group_by or () if relation.split is None else ():
            _axis(relation, name, ("split", "group_by"), f"relations[{i}] ({relation.name!r}), which has no split of "
                  "its own: ")
    training = document.training
    unknown = [name for name in training.projected if name not in known]
    if unknown:
        raise _Invalid(("training", "projected"), f"unknown modality {unknown[0]!r}; known: {', '.join(known)}")
    try:
        check_memory({name: 1 for name in known}, training)
    except MemoryBudgetError as error:
        raise _Invalid(("training", "rank"), f"{error} (counting one entity per modality)") from None
    return DatasetSpec(
        name=document.name,
        spec_path=spec_path,
        modalities=modalities,
        relations=relations,
        split=split,
        training=training,
        spec_hash=spec_hash,
        publish=PublishSpec(_gate(document.publish.gate, relations)),
    )


def _gate(gate: _Gate | Literal[False], relations: tuple[RelationSpec, ...]) -> GateSpec | None:
    """The gate with its metric resolved to a full `validation/<relation>/<name>` key (default: the first
    relation's headline)."""
    if gate is False:
        return None
    first = relations[0]
    metric = gate.metric or _headline_metric(first)
    if "/" not in metric:
        metric = f"validation/{first.name}/{metric}"
    split, _, rest = metric.partition("/")
    relation = rest.partition("/")[0]
    if split != "validation" or relation not in [r.name for r in relations] or rest.count("/") != 1:
        raise _Invalid(("publish", "gate", "metric"), f"expected validation/<relation>/<name> for a relation of the "
                       f"spec, or <name> of {first.name!r}; got {metric!r}")
    try:
        higher_is_better(metric)
    except ValueError as error:
        raise _Invalid(("publish", "gate", "metric"), str(error)) from None
    return GateSpec(metric, gate.tolerance)


def _headline_metric(relation: RelationSpec) -> str:
    """The validation metric a relation is judged by: NDCG@k of a ranked relation (k = 10 when evaluated there),
    RMSE of a regression, else its held-out loss."""
    if relation.evaluation is not None:
        k = 10 if 10 in relation.evaluation.k else max(relation.evaluation.k)
        return f"ndcg@{k}"
    return "rmse" if relation.loss == "squared" else f"{relation.loss}_loss"


def _split(split: _Split) -> SplitSpec:
    return SplitSpec(**{**split.model_dump(), "group_by": _tuple(split.group_by)})


def _unique(names: list[str], section: str, what: str) -> None:
    for i, name in enumerate(names):
        if name in names[:i]:
            raise _Invalid((section, i, "name"), f"duplicate {what} name {name!r}")


def _tuple(values: Iterable[str] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(values)


def _is_pattern(path: Path) -> bool:
    """Whether a source path is a glob pattern (several files) rather than one file or folder."""
    return any(character in str(path) for character in "*?[")


@dataclass(frozen=True)
class _Paths:
    """Where data paths resolve (`base`) and the folders they may lie under (`roots`)."""

    base: Path
    roots: list[Path]

    def source(self, source: _Source, loc: Location) -> SourceSpec:
        path = self.base / source.path
        resolved = path.resolve()
        if not any(resolved.is_relative_to(root) for root in self.roots):
            raise _Invalid((*loc, "path"), f"{resolved} is outside the data root {self.roots[0]}; allow its folder "
                           "with --allow-root DIR (load_spec(..., allow_roots=[DIR]))")
        if source.format is not None:
            format_ = source.format
        elif path.suffix.lower() in SUFFIX_FORMATS:
            format_ = SUFFIX_FORMATS[path.suffix.lower()]
        else:
            raise _Invalid((*loc, "format"), f"cannot infer the format of {path.name!r} from its suffix; "
                           f"set format: {' | '.join(get_args(Format))}")
        if _is_pattern(path):
            if not glob.glob(str(path)):
                raise _Invalid((*loc, "path"), f"no file matches {path}")
        elif not (path.is_file() or path.is_dir()):  # a folder: every file of the format in it
            raise _Invalid((*loc, "path"), f"file not found: {path}")
        if format_ not in DEFAULT_SEPARATORS:
            for key in ("sep", "header", "names"):
                if key in source.model_fields_set:
                    raise _Invalid((*loc, key), f"only for csv and tsv sources, not {format_}")
        if not source.header and source.names is None:
            raise _Invalid((*loc, "names"), "required when header is false")
        return SourceSpec(path, format_, source.sep, source.header, _tuple(source.names), source.encoding)


def _modality(modality: _Modality, loc: Location, paths: _Paths) -> ModalitySpec:
    features = None
    if modality.features is not None:
        features = _features(modality.features, (*loc, "features"), paths)
    graph = None
    if modality.graph is not None:
        graph = _graph(modality.graph, (*loc, "graph"), paths)
        if graph.knn is not None and features is None:
            raise _Invalid((*loc, "graph", "knn"), f"needs {_where((*loc, 'features'), {})} to compute neighbours from")
    return ModalitySpec(modality.name, features, graph, KeyNormalisation(**modality.keys.model_dump()))


def _features(features: _Features, loc: Location, paths: _Paths) -> FeatureSpec:
    if not features.numeric and not features.categorical:
        raise _Invalid(loc, "list at least one numeric or categorical column")
    for column in (features.key, *features.numeric):
        if column in features.categorical:
            raise _Invalid((*loc, "categorical"), f"column {column!r} is also the key or a numeric column")
    if features.key in features.numeric:
        raise _Invalid((*loc, "numeric"), f"column {features.key!r} is the key column")
    return FeatureSpec(
        source=paths.source(features.source, (*loc, "source")),
        key=features.key,
        numeric=tuple(features.numeric),
        categorical=tuple(features.categorical),
        standardise=features.standardise,
    )


def _graph(graph: _Graph, loc: Location, paths: _Paths) -> GraphSpec:
    if graph.knn is None and graph.pairs is None:
        raise _Invalid(loc, "give knn, pairs or both")
    pairs = None
    if graph.pairs is not None:
        at = (*loc, "pairs")
        columns = tuple(graph.pairs.columns)
        if columns[0] == columns[1]:
            raise _Invalid((*at, "columns"), f"expected two different key columns, got {columns[0]!r} twice")
        if graph.pairs.weight in columns:
            raise _Invalid((*at, "weight"), f"column {graph.pairs.weight!r} is also a key column")
        pairs = PairsSpec(paths.source(graph.pairs.source, (*at, "source")), columns, graph.pairs.weight)
    return GraphSpec(knn=None if graph.knn is None else KnnSpec(graph.knn.k), pairs=pairs)


def _relation(relation: _Relation, loc: Location, known: list[str], paths: _Paths) -> RelationSpec:
    if relation.name.startswith("graph-"):
        raise _Invalid((*loc, "name"), "names starting with 'graph-' are kept for graph quarantine files")
    modalities, key_columns, separators = _relation_axes(relation, loc, known)
    value = relation.value
    if isinstance(value, str) and value in key_columns:
        raise _Invalid((*loc, "value"), f"column {value!r} is also a key column")
    if relation.loss == "logistic" and isinstance(value, float) and not 0 <= value <= 1:
        raise _Invalid((*loc, "value"), f"a logistic relation needs values in [0, 1], got {value:g}")
    if relation.time is not None and (relation.time in key_columns or relation.time == value):
        raise _Invalid((*loc, "time"), f"column {relation.time!r} is also a key or value column")
    spec = RelationSpec(
        name=relation.name,
        modalities=modalities,
        key_columns=key_columns,
        value=value,
        loss=relation.loss,
        weight=relation.weight,
        time=relation.time,
        duplicates=relation.duplicates,
        sources=_relation_sources(relation, loc, paths),
        separators=separators if any(separators) else (),
    )
    split = None
    if relation.split is not None:
        split = _split(relation.split)
        for name in split.group_by or ():
            _axis(spec, name, (*loc, "split", "group_by"))
    evaluation = None
    if relation.evaluate is not None:
        target = _axis(spec, relation.evaluate.target, (*loc, "evaluate", "target"))
        evaluation = Evaluation(target, tuple(sorted(set(relation.evaluate.k))))
    negatives = relation.negatives
    axes = None
    if negatives.axes is not None:
        axes = tuple(_axis(spec, name, (*loc, "negatives", "axes")) for name in negatives.axes)
    return dataclasses.replace(
        spec,
        structure=relation.structure or default_structure(relation.loss, spec.order, evaluation),
        negatives=Negatives(axes, negatives.count, negatives.distribution, negatives.shared_by),
        evaluation=evaluation,
        split=split,
    )


def _relation_axes(
    relation: _Relation, loc: Location, known: list[str]
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str | None, ...]]:
    """(modality, key column, separator or None) of each axis, from the `modalities` mapping or the `axes`
    list."""
    if (relation.modalities is None) == (relation.axes is None):
        raise _Invalid(loc, "give either modalities (modality: key column) or axes (a list of "
                       "{modality, column}, for a modality on several axes)")
    if relation.modalities is not None:
        at: Location = (*loc, "modalities")
        pairs = [
            (modality, field, None) if isinstance(field, str) else (modality, field.column, field.separator)
            for modality, field in relation.modalities.items()
        ]
        if len(pairs) < 2:
            raise _Invalid(at, f"a relation spans at least 2 axes, got {len(pairs)}; a modality on several axes "
                           "needs the axes: form")
    else:
        at = (*loc, "axes")
        pairs = [(axis.modality, axis.column, axis.separator) for axis in relation.axes]
    for modality, _, _ in pairs:
        if modality not in known:
            raise _Invalid(at, f"unknown modality {modality!r}; known: {', '.join(sorted(known))}")
    columns = [column for _, column, _ in pairs]
    for column, count in Counter(columns).items():
        if count > 1:
            raise _Invalid(at, f"key column {column!r} used for more than one axis")
    return (
        tuple(modality for modality, _, _ in pairs),
        tuple(columns),
        tuple(separator for _, _, separator in pairs),
    )


def _relation_sources(relation: _Relation, loc: Location, paths: _Paths) -> dict[str, SourceSpec]:
    if (relation.source is None) == (relation.sources is None):
        raise _Invalid(loc, "give either source (one file, split at random) or sources (train, and optionally "
                       "validation and test)")
    if relation.source is not None:
        return {"all": paths.source(relation.source, (*loc, "source"))}
    given = {name: source for name, source in relation.sources if source is not None}
    return {name: paths.source(source, (*loc, "sources", name)) for name, source in given.items()}


def _axis(relation: RelationSpec, name: str, loc: Location, prefix: str = "") -> int:
    try:
        return relation.axis(name)
    except ValueError as error:
        raise _Invalid(loc, f"{prefix}{error}") from None
