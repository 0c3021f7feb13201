import json
import re
from pathlib import Path

import pytest
import yaml

from hyperlearn.config import TrainingConfig
from hyperlearn.pipeline.spec import (
    MAX_YAML_NODES,
    DatasetSpec,
    KeyNormalisation,
    SourceSpec,
    SpecError,
    SplitSpec,
    default_structure,
    load_spec,
    spec_json_schema,
)
from hyperlearn.rundir import Evaluation, Negatives

from tests.pipeline.conftest import RATINGS

SCHEMA_FILE = Path(__file__).parents[2] / "docs" / "spec.schema.json"


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


# --- higher-order relations ----------------------------------------------------------------------------------------

KG = """\
head,relation,tail
e1,likes,e2
e2,likes,e3
"""


@pytest.fixture
def kg_document(demo_document, write):
    """The demo spec plus a knowledge-graph modality pair and a triple relation over entity × relation × entity."""
    write("triples.csv", KG)
    demo_document["modalities"] += [{"name": "entity"}, {"name": "relation_type"}]
    demo_document["relations"].append(
        {
            "name": "triple",
            "axes": [
                {"modality": "entity", "column": "head"},
                {"modality": "relation_type", "column": "relation"},
                {"modality": "entity", "column": "tail"},
            ],
            "loss": "softmax",
            "evaluate": {"target": "tail", "k": [10, 1]},
            "source": {"path": "triples.csv"},
        }
    )
    return demo_document


def test_axes_form_spans_a_modality_twice(kg_document, write_spec):
    triple = load_spec(write_spec(kg_document)).relation("triple")

    assert triple.modalities == ("entity", "relation_type", "entity")
    assert triple.axes == triple.key_columns == ("head", "relation", "tail")
    assert triple.evaluation == Evaluation(target=2, k=(1, 10))
    assert triple.structure == "pairwise"  # implicit, order 3, with a target: the documented default
    assert triple.negatives == Negatives(axes=None, count=4, distribution="uniform")


def test_negatives_and_targets_name_axes_by_column_or_unambiguous_modality(kg_document, write_spec):
    triple = kg_document["relations"][1]
    triple.update(negatives={"axes": ["relation_type", "head"], "count": 9, "distribution": "popularity",
                             "shared_by": 64},
                  evaluate={"target": "relation_type"}, structure="cp")

    relation = load_spec(write_spec(kg_document)).relation("triple")

    assert relation.negatives == Negatives(axes=(1, 0), count=9, distribution="popularity", shared_by=64)
    assert relation.evaluation == Evaluation(target=1, k=(5, 10, 20)) and relation.structure == "cp"


@pytest.mark.parametrize(
    ("loss", "evaluate", "order_three", "structure"),
    [("softmax", True, True, "pairwise"), ("bpr", True, True, "pairwise"), ("squared", True, True, "cp"),
     ("logistic", False, True, "cp"), ("logistic", True, False, "cp")],
)
def test_default_structure(loss, evaluate, order_three, structure):
    assert default_structure(loss, 3 if order_three else 2, Evaluation(0) if evaluate else None) == structure


HIGHER_ORDER_ERRORS = [
    ("relations.1.evaluate.target", "entity",
     r"relations\[1\]\.evaluate\.target: modality 'entity' is on axes head, tail; name the axis by its column"),
    ("relations.1.negatives", {"axes": ["post"]},
     r"relations\[1\]\.negatives\.axes: no axis 'post'; axes: head, relation, tail"),
    ("relations.1.negatives", {"count": 0}, r"relations\[1\]\.negatives\.count: input should be greater than or"),
    ("relations.1.negatives", {"distribution": "zipf"}, r"negatives\.distribution: input should be 'uniform' or"),
    ("relations.1.negatives", {"shared_by": 0}, r"relations\[1\]\.negatives\.shared_by: input should be greater"),
    ("relations.1.structure", "tucker", r"relations\[1\]\.structure: input should be 'cp' or 'pairwise'"),
    ("relations.1.evaluate.k", [], r"relations\[1\]\.evaluate\.k: list should have at least 1 item"),
    ("relations.1.axes.1.modality", "film", r"relations\[1\]\.axes: unknown modality 'film'"),
    ("relations.1.axes.2.column", "head", r"relations\[1\]\.axes: key column 'head' used for more than one axis"),
    ("relations.1.axes.0.colour", "red",
     r"relations\[1\]\.axes\[0\]\.colour: unknown key; allowed here: modality, column"),
    ("relations.1.modalities", {"entity": "head", "relation_type": "relation"},
     r"relations\[1\]: give either modalities \(modality: key column\) or axes"),
    ("split.group_by", ["tail"],
     r"split\.group_by: relations\[0\] \('rating'\), which has no split of its own: no axis 'tail'"),
    ("modalities.2.keys", {"unicode": "NFX"}, r"modalities\[2\]\.keys\.unicode: input should be 'NFC', 'NFD'"),
    ("modalities.2.keys", {"casefold": "yes"}, r"modalities\[2\]\.keys\.casefold: input should be a valid boolean"),
]


@pytest.mark.parametrize(("key", "value", "message"), HIGHER_ORDER_ERRORS, ids=[c[0] for c in HIGHER_ORDER_ERRORS])
def test_higher_order_errors_name_the_key_path(kg_document, write_spec, key, value, message):
    _set(kg_document, key, value)
    with pytest.raises(SpecError, match=message):
        load_spec(write_spec(kg_document))


def test_group_by_names_axes_of_every_relation(kg_document, write_spec):
    del kg_document["relations"][1]
    kg_document["modalities"] = kg_document["modalities"][:2]
    kg_document["split"]["group_by"] = ["user", "item_id"]
    assert load_spec(write_spec(kg_document)).split.group_by == ("user", "item_id")


def test_key_normalisation_defaults_and_settings(demo_document, write_spec):
    demo_document["modalities"][1]["keys"] = {"strip": False, "unicode": None, "casefold": True}
    spec = load_spec(write_spec(demo_document))
    assert spec.modality("user").keys == KeyNormalisation(strip=True, unicode="NFC", casefold=False)
    assert spec.modality("item").keys == KeyNormalisation(strip=False, unicode=None, casefold=True)


def test_train_source_alone_or_with_validation(demo_document, write_spec, write):
    write("valid.csv", RATINGS)
    relation = demo_document["relations"][0]
    del relation["source"]
    relation["sources"] = {"train": {"path": "ratings.csv"}}
    assert set(load_spec(write_spec(demo_document)).relation("rating").sources) == {"train"}
    relation["sources"]["validation"] = {"path": "valid.csv"}
    assert set(load_spec(write_spec(demo_document)).relation("rating").sources) == {"train", "validation"}
    del relation["sources"]["train"]
    with pytest.raises(SpecError, match=r"relations\[0\]\.sources\.train: required key is missing"):
        load_spec(write_spec(demo_document))


# --- one place for settings: the spec's training block with the command-line overrides ---------------------------


def test_overrides_apply_before_validation(demo_document, write_spec):
    path = write_spec(demo_document)
    spec = load_spec(path, overrides={"rank": 7, "projected": ["item"]})
    assert spec.training == TrainingConfig(rank=7, projected=("item",))
    assert spec.spec_hash == load_spec(path).spec_hash  # the hash is of the file


@pytest.mark.parametrize(
    ("in_file", "overrides", "message"),
    [
        ({}, {"projected": ["itme"]}, r"spec\.yaml: --projected: unknown modality 'itme'; known: user, item"),
        ({"projected": ["itme"]}, {}, r"spec\.yaml: training\.projected: unknown modality 'itme'"),
        ({}, {"learning_rate": -1.0}, r"spec\.yaml: --learning-rate: input should be greater than 0, got float -1"),
        ({"rank": "4"}, {}, r"spec\.yaml: training\.rank: input should be a valid integer, got str '4'"),
        ({}, {"rnak": 3}, r"spec\.yaml: --rnak: unknown key; allowed here: rank,"),
    ],
)
def test_a_bad_setting_says_where_it_came_from(demo_document, write_spec, in_file, overrides, message):
    demo_document["training"] = in_file
    with pytest.raises(SpecError, match=message):
        load_spec(write_spec(demo_document), overrides=overrides)


# --- hostile specs ------------------------------------------------------------------------------------------------


def test_an_alias_bomb_is_refused_at_once(tmp_path):
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]  # 9**10 strings once expanded
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\nname: bomb\n")
    with pytest.raises(SpecError, match=rf"bomb\.yaml: more than {MAX_YAML_NODES} YAML nodes once aliases"):
        load_spec(path)


def test_a_recursive_alias_is_refused(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("name: &x [*x]\n")
    with pytest.raises(SpecError, match="YAML nodes once aliases are expanded"):
        load_spec(path)


def test_aliases_of_ordinary_size_are_fine(demo_document, write_spec):
    path = write_spec(demo_document)
    text = path.read_text().replace("split:\n", "defaults: &shared {seed: 1}\nsplit:\n")
    path.write_text(text)
    with pytest.raises(SpecError, match=r"defaults: unknown key"):  # parsed, then refused as an unknown key
        load_spec(path)


@pytest.mark.parametrize("bad_path", ["/etc/passwd", "../../../etc/passwd", "sub/../../outside.csv"])
def test_data_paths_must_stay_under_the_data_root(demo_document, write_spec, bad_path):
    demo_document["relations"][0]["source"] = {"path": bad_path, "format": "csv"}
    with pytest.raises(SpecError, match=r"relations\[0\]\.source\.path: .* is outside the data root .*--allow-root"):
        load_spec(write_spec(demo_document))


def test_another_root_is_allowed_explicitly(demo_document, write_spec, tmp_path):
    outside = tmp_path.parent / f"{tmp_path.name}-shared"
    outside.mkdir()
    (outside / "ratings.csv").write_text(RATINGS)
    demo_document["relations"][0]["source"] = {"path": str(outside / "ratings.csv")}
    path = write_spec(demo_document)
    with pytest.raises(SpecError, match="outside the data root"):
        load_spec(path)
    spec = load_spec(path, allow_roots=[outside])
    assert spec.relation("rating").sources["all"].path == outside / "ratings.csv"


def test_folders_and_globs_are_sources_and_a_spec_must_be_a_file(demo_document, write_spec, tmp_path):
    (tmp_path / "logs").mkdir()
    demo_document["relations"][0]["source"] = {"path": "logs", "format": "csv"}
    assert load_spec(write_spec(demo_document)).relation("rating").sources["all"].path == tmp_path / "logs"
    demo_document["relations"][0]["source"] = {"path": "logs/ratings-*.csv"}
    with pytest.raises(SpecError, match=r"relations\[0\]\.source\.path: no file matches .*ratings-\*\.csv"):
        load_spec(write_spec(demo_document))
    with pytest.raises(SpecError, match=r"cannot read the spec: it is a directory"):
        load_spec(tmp_path)


def test_a_rank_that_cannot_fit_is_refused_with_the_memory_it_needs(demo_document, write_spec):
    demo_document["training"] = {"rank": 1_000_000_000}
    with pytest.raises(SpecError, match=r"training\.rank: rank 1000000000 needs at least [\d.]+ GiB \(\d+ bytes\)"):
        load_spec(write_spec(demo_document))
    with pytest.raises(SpecError, match=r"--rank: rank 1000000000 needs at least"):
        load_spec(write_spec(demo_document), overrides={"rank": 1_000_000_000})


# --- the JSON Schema for editors ----------------------------------------------------------------------------------


def test_committed_json_schema_is_current():
    committed = json.loads(SCHEMA_FILE.read_text())
    assert committed == spec_json_schema(), "regenerate: hyperlearn spec-schema > docs/spec.schema.json"
    assert committed["additionalProperties"] is False
    assert set(committed["required"]) == {"name", "modalities", "relations"}
    assert committed["$defs"]["_Relation"]["properties"]["loss"]["enum"] == ["squared", "logistic", "bpr", "softmax"]


def test_a_relation_may_have_its_own_split(kg_document, write_spec):
    kg_document["split"]["group_by"] = ["user"]
    with pytest.raises(SpecError, match=r"split\.group_by: relations\[1\] \('triple'\), which has no split of its own"):
        load_spec(write_spec(kg_document))
    kg_document["relations"][1]["split"] = {"test": 0.3, "group_by": ["head", "relation_type"]}
    spec = load_spec(write_spec(kg_document))
    assert spec.relation("triple").split == SplitSpec(test=0.3, group_by=("head", "relation_type"))
    assert spec.relation("rating").split is None and spec.split.group_by == ("user",)
    kg_document["relations"][1]["split"]["group_by"] = ["user"]
    with pytest.raises(SpecError, match=r"relations\[1\]\.split\.group_by: no axis 'user'"):
        load_spec(write_spec(kg_document))


def test_the_example_spec_is_valid_against_the_json_schema():
    import jsonschema  # installed with Prefect

    schema = json.loads(SCHEMA_FILE.read_text())
    example = yaml.safe_load((Path(__file__).parents[2] / "examples" / "movielens-100k.yaml").read_text())
    jsonschema.validate(example, schema)
    with pytest.raises(jsonschema.ValidationError, match="'hinge' is not one of"):
        jsonschema.validate({**example, "relations": [{**example["relations"][0], "loss": "hinge"}]}, schema)


def test_a_key_field_of_several_values_names_its_separator(kg_document, write_spec):
    kg_document["relations"][0]["modalities"]["item"] = {"column": "item_id", "separator": "|"}
    kg_document["relations"][1]["axes"][2]["separator"] = ";"
    spec = load_spec(write_spec(kg_document))

    rating, triple = spec.relation("rating"), spec.relation("triple")
    assert rating.key_columns == ("user_id", "item_id") and rating.separators == (None, "|")
    assert [triple.separator(axis) for axis in range(3)] == [None, None, ";"]

    kg_document["relations"][0]["modalities"]["item"] = {"column": "item_id", "separator": ""}
    with pytest.raises(SpecError, match=r"relations\[0\]\.modalities\.item"):
        load_spec(write_spec(kg_document))


def test_single_keys_have_no_separators(demo_document, write_spec):
    rating = load_spec(write_spec(demo_document)).relation("rating")
    assert rating.separators == () and rating.separator(1) is None
