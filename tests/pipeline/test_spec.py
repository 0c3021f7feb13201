import re
from pathlib import Path

import pytest

from hyperlearn.config import TrainingConfig
from hyperlearn.pipeline.spec import DatasetSpec, SourceSpec, SpecError, SplitSpec, load_spec


def test_valid_spec_loads_into_dataclasses(demo_document, write_spec, tmp_path):
    spec = load_spec(write_spec(demo_document))

    assert isinstance(spec, DatasetSpec)
    assert spec.name == "demo"
    assert spec.spec_path == (tmp_path / "spec.yaml").resolve()
    assert [m.name for m in spec.modalities] == ["user", "item"]
    user = spec.modality("user")
    assert user.features.key == "user_id"
    assert user.features.numeric == ("age",) and user.features.categorical == ("occupation",)
    assert user.graph.knn.k == 1
    assert user.graph.pairs.columns == ("a", "b") and user.graph.pairs.weight is None
    assert spec.modality("item").features is None and spec.modality("item").graph is None

    rating = spec.relation("rating")
    assert rating.modalities == ("user", "item")
    assert rating.key_columns == ("user_id", "item_id")
    assert rating.value == "rating" and rating.value_column == "rating"
    assert (rating.loss, rating.weight, rating.time, rating.duplicates) == ("squared", 1.0, "timestamp", "last")
    source = rating.sources["all"]
    assert source == SourceSpec(path=tmp_path / "ratings.csv", format="csv")
    assert source.delimiter == ","
    assert spec.split == SplitSpec(test=0.2, validation=0.1, seed=1)
    assert spec.training == TrainingConfig(rank=4)


def test_defaults_and_constant_value(demo_document, write_spec):
    relation = demo_document["relations"][0]
    for key in ("value", "time", "duplicates"):
        del relation[key]
    del demo_document["split"], demo_document["training"]

    spec = load_spec(write_spec(demo_document))

    rating = spec.relation("rating")
    assert rating.value == 1.0 and rating.value_column is None  # constant "observed", squared loss allowed
    assert (rating.loss, rating.weight, rating.time, rating.duplicates) == ("squared", 1.0, None, "last")
    assert spec.split == SplitSpec() and spec.training == TrainingConfig()


def test_given_train_and_test_sources(demo_document, write_spec, write):
    write("u1.base", "1\t1\t5\n")
    write("u1.test", "1\t2\t4\n")
    tab = {"format": "tsv", "header": False, "names": ["user_id", "item_id", "rating"]}
    relation = demo_document["relations"][0]
    del relation["source"], relation["time"]
    relation["sources"] = {"train": {"path": "u1.base", **tab}, "test": {"path": "u1.test", **tab}}

    sources = load_spec(write_spec(demo_document)).relation("rating").sources

    assert set(sources) == {"train", "test"}
    assert sources["train"].format == "tsv" and sources["train"].delimiter == "\t"
    assert sources["test"].header is False and sources["test"].names == ("user_id", "item_id", "rating")


def test_paths_resolve_against_data_root(demo_document, write_spec, tmp_path):
    data_root = tmp_path / "data"
    data_root.mkdir()
    for name in ("ratings.csv", "users.csv", "friends.csv"):
        (tmp_path / name).rename(data_root / name)

    with pytest.raises(SpecError, match="file not found"):
        load_spec(write_spec(demo_document))
    spec = load_spec(write_spec(demo_document), data_root=data_root)
    assert spec.relation("rating").sources["all"].path == data_root / "ratings.csv"


def test_spec_hash_follows_content_not_layout(demo_document, write_spec, tmp_path):
    first = load_spec(write_spec(demo_document)).spec_hash
    reordered = dict(reversed(list(demo_document.items())))
    assert load_spec(write_spec(reordered, "reordered.yaml")).spec_hash == first
    demo_document["training"]["rank"] = 5
    assert load_spec(write_spec(demo_document, "changed.yaml")).spec_hash != first
    assert re.fullmatch(r"[0-9a-f]{64}", first)


def _set(document: dict, path: str, value) -> None:
    """Set (or delete, or append to a list) the value at a dotted path of the spec document."""
    *parents, last = path.split(".")
    node = document
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is _DELETE:
        del node[last]
    elif isinstance(node, list) and int(last) == len(node):
        node.append(value)
    else:
        node[int(last) if isinstance(node, list) else last] = value


_DELETE = object()
_second_relation = {
    "name": "tagging",
    "modalities": {"user": "user_id", "tag": "tag"},
    "source": {"path": "ratings.csv"},
}

SPEC_ERRORS = [
    ("colour", "blue", r"colour: unknown key; allowed here: name, modalities, relations, split, training"),
    ("relations.0.colour", 1, r"relations\[0\]\.colour: unknown key"),
    ("modalities.0.graph.knn.neighbours", 3, r"modalities\[0\]\.graph\.knn\.neighbours: unknown key"),
    ("name", _DELETE, r"name: required key is missing"),
    ("relations.0.modalities", _DELETE, r"relations\[0\]: give either modalities \(modality: key column\) or axes"),
    ("modalities.0.features.key", _DELETE, r"modalities\[0\]\.features\.key: required key is missing"),
    ("relations.0.source.path", "nowhere.csv", r"relations\[0\]\.source\.path: file not found: .*nowhere\.csv"),
    ("relations.1", _second_relation, r"relations\[1\]\.modalities: unknown modality 'tag'; known: item, user"),
    ("modalities.1.name", "user", r"modalities\[1\]\.name: duplicate modality name 'user'"),
    ("relations.1", {**_second_relation, "name": "rating", "modalities": {"user": "u", "item": "i"}},
     r"relations\[1\]\.name: duplicate relation name 'rating'"),
    ("relations.0.modalities", {"user": "user_id"},
     r"relations\[0\]\.modalities: a relation spans at least 2 axes, got 1; a modality on several axes needs the axes"),
    ("relations.0.source.format", "xlsx", r"relations\[0\]\.source\.format: input should be 'csv', 'tsv', 'jsonl' or 'parquet', got str 'xlsx'"),
    ("relations.0.loss", "hinge", r"relations\[0\]\.loss: input should be 'squared', 'logistic', 'bpr' or 'softmax', got str 'hinge'"),
    ("relations.0.duplicates", "median", r"relations\[0\]\.duplicates: input should be 'last', 'first', 'mean', 'sum' or 'max'"),
    ("relations.0.weight", 0, r"relations\[0\]\.weight: input should be greater than 0, got int 0"),
    ("relations.0.value", True, r"relations\[0\]\.value: expected a column name or a finite number, got bool True"),
    ("relations.0.value", "user_id", r"relations\[0\]\.value: column 'user_id' is also a key column"),
    ("relations.0.modalities", {"user": "id", "item": "id"}, r"relations\[0\]\.modalities: key column 'id' used for more than one axis"),
    ("relations.0.name", "graph-user", r"relations\[0\]\.name: names starting with 'graph-' are kept"),
    ("relations.0.name", "../up", r"relations\[0\]\.name: '\.\./up' is not a valid name"),
    ("relations.0.sources", {"train": {"path": "ratings.csv"}},
     r"relations\[0\]: give either source \(one file, split at random\) or sources \(train, and optionally"),
    ("split.test", 1.5, r"split\.test: input should be less than 1, got float 1\.5"),
    ("split.seed", -1, r"split\.seed: input should be greater than or equal to 0, got int -1"),
    ("training.rank", 0, r"training\.rank: input should be greater than or equal to 1, got int 0"),
    ("training.ranks", 3, r"training\.ranks: unknown key; allowed here: rank, cheb_order,"),
    ("training.encoder", "gcn", r"training\.encoder: input should be 'chebyshev-lstm', 'chebyshev' or 'none'"),
    ("training.projected", ["film"], r"training\.projected: unknown modality 'film'; known: user, item"),
    ("training.projected", ["user", "user"], r"training\.projected: names a modality twice"),
    ("training.projected", "user", r"training\.projected: input should be a valid tuple, got str 'user'"),
    ("modalities.1.graph", {"knn": {"k": 5}}, r"modalities\[1\]\.graph\.knn: needs modalities\[1\]\.features"),
    ("modalities.0.graph", {}, r"modalities\[0\]\.graph: give knn, pairs or both"),
    ("modalities.0.graph.knn.k", 0, r"modalities\[0\]\.graph\.knn\.k: input should be greater than or equal to 1"),
    ("modalities.0.graph.pairs.columns", ["a"], r"graph\.pairs\.columns: list should have at least 2 items"),
    ("modalities.0.features.numeric", ["age", "age"], r"features\.numeric: 'age' listed twice"),
    ("modalities.0.features.categorical", ["age"], r"features\.categorical: column 'age' is also the key or"),
    ("modalities.2", {"name": "tag"}, r"modalities\[2\]\.name: modality 'tag' is in no relation"),
    ("relations.0.source.header", False, r"relations\[0\]\.source\.names: required when header is false"),
    ("relations.0.source.sep", "::", r"relations\[0\]\.source\.sep: string should have at most 1 character, got str '::'"),
    ("relations.0.source.encoding", "klingon", r"relations\[0\]\.source\.encoding: unknown encoding 'klingon'"),
    ("relations.0.source", {"path": "ratings.csv", "format": "parquet", "sep": ";"},
     r"relations\[0\]\.source\.sep: only for csv and tsv sources, not parquet"),
    ("relations.0.source.path", "spec.yaml",
     r"relations\[0\]\.source\.format: cannot infer the format of 'spec\.yaml' from its suffix; set format"),
]


@pytest.mark.parametrize(("key", "value", "message"), SPEC_ERRORS, ids=[case[0] for case in SPEC_ERRORS])
def test_spec_errors_name_the_file_and_key_path(demo_document, write_spec, key, value, message):
    _set(demo_document, key, value)
    path = write_spec(demo_document)
    with pytest.raises(SpecError) as error:
        load_spec(path)
    assert str(error.value).startswith(f"{path}: ")
    assert re.search(message, str(error.value)), str(error.value)


def test_same_modality_twice_in_a_relation(demo_document, write_spec):
    path = write_spec(demo_document)
    text = path.read_text().replace("    user: user_id\n", "    user: user_id\n    user: friend_id\n", 1)
    path.write_text(text)
    with pytest.raises(SpecError, match=r"relations\[0\]\.modalities: key 'user' given twice \(line \d+\); a modality on several axes needs the axes"):
        load_spec(path)


def test_key_given_twice_anywhere(demo_document, write_spec):
    path = write_spec(demo_document)
    path.write_text(path.read_text().replace("  rank: 4\n", "  rank: 4\n  rank: 5\n"))
    with pytest.raises(SpecError, match=r"spec\.yaml: training: key 'rank' given twice \(line \d+\)"):
        load_spec(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: [unclosed", r"not valid YAML"),
        ("- just\n- a list\n", r"spec\.yaml: expected a mapping with name, modalities and relations, got list"),
    ],
)
def test_documents_that_are_no_spec(tmp_path: Path, text, message):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=message):
        load_spec(path)


def test_missing_spec_file(tmp_path: Path):
    with pytest.raises(SpecError, match=r"absent\.yaml: cannot read the spec"):
        load_spec(tmp_path / "absent.yaml")


def test_logistic_constant_must_be_a_label(demo_document, write_spec):
    relation = demo_document["relations"][0]
    relation.update(loss="logistic", value=2)
    with pytest.raises(SpecError, match=r"relations\[0\]\.value: a logistic relation needs values in \[0, 1\], got 2"):
        load_spec(write_spec(demo_document))
