import shutil
from pathlib import Path

import numpy as np
import pytest

from hyperlearn.pipeline.sources import movielens
from hyperlearn.pipeline.sources.movielens import (
    GENRE_COLUMNS,
    ITEM_COLUMNS,
    DownloadError,
    fetch_movielens_100k,
    fold_split,
    movielens_files,
    read_ratings,
    ratings_text,
)
from hyperlearn.pipeline.spec import load_spec

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "movielens-100k.yaml"

# Ten ratings in "u.data" order: (user, item, rating, timestamp).
FAKE_RATINGS = np.array(
    [[3, 7, 4, 100], [1, 9, 5, 101], [2, 1, 3, 102], [1, 2, 1, 103], [10, 1, 2, 104],
     [2, 10, 5, 105], [1, 10, 4, 106], [3, 2, 3, 107], [2, 3, 2, 108], [1, 1, 5, 109]]
)
FAKE_INTER = b"user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + ratings_text(FAKE_RATINGS)
FAKE_USER = (
    b"user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
    b"1\t24\tM\ttechnician\t85711\n2\t53\tF\tother\t94043\n"
)
FAKE_ITEM = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "1\tToy Story\t1995\tAnimation Children's Comedy\n"
    "2\tMisérables, Les\t1995\tDrama Musical\n"
    "3\tunkonwn\tunkonwn\tunknown\n"
).encode()
FAKE_KG = (
    b"head_id:token\trelation_id:token\ttail_id:token\n"
    b"m.0a\tfilm.film.actor\tm.0b\nm.0c\tfilm.film.genre\tm.0a\n"
)
FAKE_LINK = b"item_id:token\tentity_id:token\n1\tm.0a\n2\tm.0c\n"
FAKE_MEMBERS = (FAKE_INTER, FAKE_USER, FAKE_ITEM, FAKE_KG, FAKE_LINK)


def is_sorted_by_user_item(ratings: np.ndarray) -> bool:
    keys = ratings[:, 0] * 10**6 + ratings[:, 1]
    return bool(np.all(np.diff(keys) >= 0))


def as_set(ratings: np.ndarray) -> set[tuple[int, ...]]:
    return set(map(tuple, ratings.tolist()))


# --- offline: fold logic and file conversion -----------------------------------------------------------------


def test_fold_split_follows_mku_sh():
    for fold in range(1, 6):
        base, test = fold_split(FAKE_RATINGS, fold, fold_size=2)
        expected_test = FAKE_RATINGS[2 * (fold - 1) : 2 * fold]
        assert as_set(test) == as_set(expected_test) and len(test) == 2
        assert as_set(base) == as_set(FAKE_RATINGS) - as_set(expected_test) and len(base) == 8
        assert is_sorted_by_user_item(base) and is_sorted_by_user_item(test)
    base, test = fold_split(FAKE_RATINGS, 1, fold_size=2)
    np.testing.assert_array_equal(test, [[1, 9, 5, 101], [3, 7, 4, 100]])
    with pytest.raises(ValueError, match="fold"):
        fold_split(FAKE_RATINGS, 6, fold_size=2)


def test_movielens_files_from_recbole_members():
    files = movielens_files(*FAKE_MEMBERS, fold_size=2)
    folds = {f"u{i}.{part}" for i in range(1, 6) for part in ("base", "test")}
    assert set(files) == {"u.data", "u.user", "u.item", "u.kg", "u.link"} | folds
    assert files["u.data"] == ratings_text(FAKE_RATINGS)
    assert files["u1.test"] == b"1\t9\t5\t101\n3\t7\t4\t100\n"
    assert files["u.user"].splitlines() == [
        b"user_id\tage\tgender\toccupation\tzip_code", b"1\t24\tM\ttechnician\t85711", b"2\t53\tF\tother\t94043"
    ]
    header, toy_story, miserables, unknown = [line.split("\t") for line in files["u.item"].decode().splitlines()]
    assert header == list(ITEM_COLUMNS) and len(header) == 3 + 19
    genres = dict(zip(GENRE_COLUMNS.values(), toy_story[3:]))
    assert {name for name, flag in genres.items() if flag == "1"} == {"animation", "childrens", "comedy"}
    assert miserables[:3] == ["2", "Misérables, Les", "1995"]
    assert unknown[2] == "" and unknown[3] == "1"  # no year; genre "unknown"
    assert files["u.kg"] == b"head_id\trelation_id\ttail_id\nm.0a\tfilm.film.actor\tm.0b\nm.0c\tfilm.film.genre\tm.0a\n"
    assert files["u.link"] == b"item_id\tentity_id\n1\tm.0a\n2\tm.0c\n"


def test_unexpected_kg_columns_are_refused():
    renamed = FAKE_KG.replace(b"tail_id", b"object_id")
    with pytest.raises(movielens.FetchError, match=r"ml-100k\.kg.*object_id"):
        movielens_files(FAKE_INTER, FAKE_USER, FAKE_ITEM, renamed, FAKE_LINK, fold_size=2)


def test_read_ratings_round_trip(tmp_path: Path):
    (tmp_path / "u.data").write_bytes(ratings_text(FAKE_RATINGS))
    np.testing.assert_array_equal(read_ratings(tmp_path / "u.data"), FAKE_RATINGS)


def test_example_spec_reads_the_written_files(tmp_path: Path):
    for name, content in movielens_files(*FAKE_MEMBERS, fold_size=2).items():
        (tmp_path / name).write_bytes(content)
    spec = load_spec(EXAMPLE, data_root=tmp_path)
    assert [m.name for m in spec.modalities] == ["user", "movie"]
    for modality in spec.modalities:
        features = modality.features
        assert features.source.path.parent == tmp_path and modality.graph.knn.k == 10
        header = features.source.path.read_text(encoding=features.source.encoding).splitlines()[0].split("\t")
        assert {features.key, *features.numeric, *features.categorical} <= set(header)
    assert len(spec.modality("movie").features.numeric) == 19
    rating = spec.relation("rating")
    assert {split: source.path.name for split, source in rating.sources.items()} == {
        "train": "u1.base", "test": "u1.test"
    }
    assert {*rating.key_columns, rating.value, rating.time} <= set(rating.sources["train"].names)
    assert rating.loss == "squared" and spec.split.validation == 0.05
    assert spec.training.projected == ("movie",) and spec.training.rank == 500
    assert spec.training.refit and spec.training.projection_dropout == 0.3 and spec.training.proximal == 0.0


def test_unreachable_index_gives_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens on the discard port
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    with pytest.raises(DownloadError, match=r"cannot download recbole==1\.2\.1") as raised:
        fetch_movielens_100k(tmp_path / "ml", timeout=2)
    assert "\n" not in str(raised.value)
    assert not (tmp_path / "ml").exists()


# --- online: the real data ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def movielens_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        return fetch_movielens_100k(tmp_path_factory.mktemp("ml-100k"), timeout=10)
    except DownloadError as error:
        pytest.skip(f"package index unreachable: {error}")


@pytest.mark.network
def test_fetch_movielens_100k(movielens_dir: Path):
    ratings = read_ratings(movielens_dir / "u.data")
    assert ratings.shape == (100_000, 4)
    assert np.unique(ratings[:, 0]).size == 943 and np.unique(ratings[:, 1]).size == 1682
    assert set(np.unique(ratings[:, 2]).tolist()) == {1, 2, 3, 4, 5}
    assert len((movielens_dir / "u.user").read_text().splitlines()) == 1 + 943
    assert len((movielens_dir / "u.item").read_text(encoding="utf-8").splitlines()) == 1 + 1682
    triples = [line.split("\t") for line in (movielens_dir / "u.kg").read_text().splitlines()]
    assert triples[0] == ["head_id", "relation_id", "tail_id"] and len(triples) == 1 + 91_631
    assert all(len(triple) == 3 for triple in triples)
    links = [line.split("\t") for line in (movielens_dir / "u.link").read_text().splitlines()[1:]]
    assert len(links) == 1598 and {int(item) for item, _ in links} <= set(range(1, 1683))

    np.testing.assert_array_equal(
        read_ratings(movielens_dir / "u1.test"), movielens.sort_by_user_item(ratings[:20_000])
    )
    everything = pair_keys(ratings)
    assert np.unique(everything).size == 100_000
    tests = [pair_keys(read_ratings(movielens_dir / f"u{fold}.test")) for fold in range(1, 6)]
    np.testing.assert_array_equal(np.sort(np.concatenate(tests)), np.sort(everything))  # the tests partition u.data
    for fold, test in enumerate(tests, start=1):
        base = read_ratings(movielens_dir / f"u{fold}.base")
        assert len(base) == 80_000 and is_sorted_by_user_item(base)
        assert not np.isin(pair_keys(base), test).any()


def pair_keys(ratings: np.ndarray) -> np.ndarray:
    """One integer per (user, item) pair, which identifies a MovieLens-100K rating."""
    return ratings[:, 0] * 10_000 + ratings[:, 1]


@pytest.mark.network
def test_fetch_is_idempotent(movielens_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def no_download(*_):
        raise AssertionError("downloaded again although the files were in place")

    monkeypatch.setattr(movielens, "_download_wheel", no_download)
    assert fetch_movielens_100k(movielens_dir) == movielens_dir
    copy = shutil.copytree(movielens_dir, tmp_path / "copy")
    (copy / "u1.test").write_text("tampered\n")
    with pytest.raises(AssertionError, match="downloaded again"):
        fetch_movielens_100k(copy)


KG_EXAMPLE = EXAMPLE.with_name("movielens-100k-kg.yaml")
TAG_EXAMPLE = EXAMPLE.with_name("movielens-latest-small.yaml")


def test_kg_example_spec_reads_the_written_files(tmp_path: Path):
    for name, content in movielens_files(*FAKE_MEMBERS, fold_size=2).items():
        (tmp_path / name).write_bytes(content)
    spec = load_spec(KG_EXAMPLE, data_root=tmp_path)
    assert [m.name for m in spec.modalities] == ["user", "movie", "entity", "relation_type"]
    triple, link = spec.relation("triple"), spec.relation("link")
    assert triple.modalities == ("entity", "relation_type", "entity")
    assert triple.key_columns == movielens.KG_COLUMNS and triple.structure == "cp" and triple.loss == "softmax"
    negatives = triple.negatives
    assert triple.evaluation.target == 2
    assert (negatives.count, negatives.distribution, negatives.shared_by) == (32, "popularity", 256)
    assert link.modalities == ("movie", "entity") and link.key_columns == movielens.LINK_COLUMNS
    assert spec.relation("rating").sources["train"].path == tmp_path / "u1.base"


def test_tag_example_spec_keeps_posts_together(tmp_path: Path):
    (tmp_path / "tags.csv").write_text("userId,movieId,tag,timestamp\n2,60756,funny,1445714994\n")
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n")
    (tmp_path / "movies.csv").write_text("movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n")
    spec = load_spec(TAG_EXAMPLE, data_root=tmp_path)
    tagging = spec.relation("tagging")
    assert tagging.modalities == ("user", "movie", "tag") and tagging.loss == "bpr"
    assert tagging.structure == "pairwise" and tagging.evaluation.target == 2
    assert tagging.split.group_by == ("userId", "movieId")
    assert spec.modality("tag").keys.strip is False and spec.relation("rating").loss == "squared"
    genres = spec.relation("genres")
    assert genres.modalities == ("movie", "genre") and genres.separators == (None, "|")
