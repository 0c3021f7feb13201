"""MovieLens-100K, obtained from the `recbole==1.2.1` wheel on the package index.

GroupLens does not allow MovieLens to be redistributed, so this project never ships it. The recbole wheel carries
it in `recbole/dataset_example/ml-100k/`: `ml-100k.inter` is GroupLens' `u.data` with a header line, in the
original row order; `ml-100k.user` and `ml-100k.item` hold the user and movie side data. `fetch_movielens_100k`
downloads the wheel with pip (no install), checks those files against pinned SHA-256 sums and writes, into
its destination folder:

- `u.data`: tab-separated `user item rating timestamp`, no header: the 100,000 ratings in the original order.
- `u1.base` … `u5.base`, `u1.test` … `u5.test`: the five folds exactly as GroupLens' `mku.sh` makes them
  (`u<i>.test` = rows (i−1)·20000+1 … i·20000 of `u.data`, `u<i>.base` = the other 80,000; both sorted by user,
  then item, numerically); same format as `u.data`.
- `u.user`: tab-separated with a header: `user_id age gender occupation zip_code`. (GroupLens' own `u.user` is
  `|`-separated without a header.)
- `u.item`: tab-separated with a header: `item_id title release_year`, then the 19 genre flags (0/1) in
  GroupLens' order, named as in GENRE_COLUMNS; UTF-8. `release_year` is empty where recbole has none. GroupLens'
  release dates and IMDb URLs are not in the wheel.
- `u.kg`: tab-separated with a header: `head_id relation_id tail_id`: recbole's 91,631 Freebase triples
  (`ml-100k.kg`, KB4Rec's movie knowledge graph) in their order; entities are Freebase ids (`m.0bln8`),
  relations Freebase property paths (`film.film.actor`).
- `u.link`: tab-separated with a header: `item_id entity_id`: which Freebase entity each linked movie is
  (`ml-100k.link`, 1,598 movies).

Every written file is pinned too (OUTPUT_SHA256): a folder that already holds them all is left as it is.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

RECBOLE_REQUIREMENT = "recbole==1.2.1"
WHEEL_FOLDER = "recbole/dataset_example/ml-100k/"
SOURCE_SHA256 = {
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
    "ml-100k.kg": "200a0636fa07c218119a42e5bac7aa3e26e3665a6f919c1b22909bd412b14779",
    "ml-100k.link": "524dca2c3d62619688ab99b3ec53ea2acb9b64d38eafec3e02bdd0dc6bb7d948",
}
OUTPUT_SHA256 = {
    "u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
    "u.user": "d307879922714236e165fd2bc58ed81651098a488a5090e2de5738e81f2d74ae",
    "u.item": "4e063bddf32dd8c7d52fad7fb977999ab4fde99f07990192ecf6574169b65c55",
    "u.kg": "4cdf47eee0d3a0be591d9ff938bee8471d57f7981a59f74f6127ce83e4ddb5db",
    "u.link": "ecd5071c1668e89e0a576eee96bb2ac693b7ec578c693588188e2daccfcb63b5",
    "u1.base": "ce253ec86c448b44fb3ba9a30d12dcfc2e9210cbde71efada3730c22e9ac212a",
    "u1.test": "18c6014a4b2c7324f250a63f8904a7b16b2b19f911129e346141507b0cbac950",
    "u2.base": "6c06f0b5df4b256da1a994f3ac66edc8da4d3f09bc9282df6b14d893366d703e",
    "u2.test": "4de658d1e04ed9104629509a2e2528fce833ac8e048280183f1df167632038c3",
    "u3.base": "afdc155c291c6edc41c0407e39d7462eb98d341e064f0b0a12175b80b3c4af5d",
    "u3.test": "0f548b51c78327de4c156461d3e430b7e5579fe2b5681586a59416e48fd35f6d",
    "u4.base": "219f0f4d40dfe9c5141d425f53fa91ee23ed275f14e280bbf1b50117afb064ca",
    "u4.test": "7c02ad0a1e7ab1083c8b9d4b627203a051dd7b5eab46d99fa44de33470de8db9",
    "u5.base": "a9574e59ce961eec2121627760b6e9b0974ce1637b3fe69ac32cb14a4bfab485",
    "u5.test": "351cc52e0d15b6c721466276fc24671d40936899e3d01fadeaf312915b8c5634",
}

RATING_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
USER_COLUMNS = ("user_id", "age", "gender", "occupation", "zip_code")
KG_COLUMNS = ("head_id", "relation_id", "tail_id")
LINK_COLUMNS = ("item_id", "entity_id")
# recbole's genre token → column name in u.item, in GroupLens' order.
GENRE_COLUMNS = {
    "unknown": "unknown", "Action": "action", "Adventure": "adventure", "Animation": "animation",
    "Children's": "childrens", "Comedy": "comedy", "Crime": "crime", "Documentary": "documentary",
    "Drama": "drama", "Fantasy": "fantasy", "Film-Noir": "film_noir", "Horror": "horror", "Musical": "musical",
    "Mystery": "mystery", "Romance": "romance", "Sci-Fi": "sci_fi", "Thriller": "thriller", "War": "war",
    "Western": "western",
}
ITEM_COLUMNS = ("item_id", "title", "release_year", *GENRE_COLUMNS.values())
FOLDS = 5
FOLD_SIZE = 20_000


class FetchError(RuntimeError):
    """MovieLens-100K could not be obtained; the message is one line, fit for a command-line error."""


class DownloadError(FetchError):
    """pip could not download the recbole wheel (no network, index unreachable, package missing)."""


def fetch_movielens_100k(dest: Path, *, timeout: float = 60.0) -> Path:
    """Write MovieLens-100K (see the module docstring for the files) into `dest` and return `dest`.

    Does nothing when `dest` already holds every file with its pinned checksum. Otherwise downloads the recbole
    wheel (pip's network `timeout` in seconds per attempt) into a temporary folder, which is removed afterwards.
    Raises DownloadError when pip fails, FetchError when the data differ from the pinned checksums.
    """
    dest = Path(dest)
    if _holds_verified_files(dest):
        return dest
    with tempfile.TemporaryDirectory(prefix="hyperlearn-recbole-") as scratch:
        wheel = _download_wheel(Path(scratch), timeout)
        members = _read_verified_members(wheel)
    files = movielens_files(*(members[f"ml-100k.{part}"] for part in ("inter", "user", "item", "kg", "link")))
    wrong = sorted(name for name, content in files.items() if _sha256(content) != OUTPUT_SHA256.get(name))
    if wrong:
        raise FetchError(f"converting the recbole data gave files that differ from the pinned checksums: {wrong}")
    dest.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        _write_atomic(dest / name, content)
    return dest


def movielens_files(
    inter: bytes, user: bytes, item: bytes, kg: bytes, link: bytes, fold_size: int = FOLD_SIZE
) -> dict[str, bytes]:
    """The contents of every output file, by name, from recbole's `ml-100k.{inter,user,item,kg,link}` files."""
    header, _, body = inter.partition(b"\n")
    if [name.split(":")[0] for name in header.decode().split("\t")] != list(RATING_COLUMNS):
        raise FetchError(f"unexpected header in ml-100k.inter: {header!r}")
    ratings = read_ratings(io.BytesIO(body))
    files = {
        "u.data": body,
        "u.user": _plain_header(user, "ml-100k.user", USER_COLUMNS),
        "u.item": _items_file(item),
        "u.kg": _plain_header(kg, "ml-100k.kg", KG_COLUMNS),
        "u.link": _plain_header(link, "ml-100k.link", LINK_COLUMNS),
    }
    for fold in range(1, FOLDS + 1):
        base, test = fold_split(ratings, fold, fold_size)
        files[f"u{fold}.base"] = ratings_text(base)
        files[f"u{fold}.test"] = ratings_text(test)
    return files


def fold_split(ratings: np.ndarray, fold: int, fold_size: int = FOLD_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """GroupLens' fold `fold` (1-based) of `ratings` (rows in u.data order): (base, test).

    test = rows (fold−1)·fold_size … fold·fold_size − 1 (0-based), base = all other rows; each sorted by user,
    then item (stable).
    """
    ratings = np.asarray(ratings)
    if not 1 <= fold <= len(ratings) // fold_size:
        raise ValueError(f"fold must be in 1..{len(ratings) // fold_size} for {len(ratings)} ratings, got {fold}")
    start, stop = (fold - 1) * fold_size, fold * fold_size
    base = np.concatenate([ratings[:start], ratings[stop:]])
    return sort_by_user_item(base), sort_by_user_item(ratings[start:stop])


def sort_by_user_item(ratings: np.ndarray) -> np.ndarray:
    """Rows of a (n, 4) rating array ordered by user, then item; equal keys keep their order."""
    return ratings[np.lexsort((ratings[:, 1], ratings[:, 0]))]


def read_ratings(source: Path | io.BytesIO) -> np.ndarray:
    """A u.data-format file (tab-separated user, item, rating, timestamp; no header) as an (n, 4) int64 array."""
    return np.loadtxt(source, dtype=np.int64, delimiter="\t", ndmin=2).reshape(-1, len(RATING_COLUMNS))


def ratings_text(ratings: np.ndarray) -> bytes:
    """An (n, 4) integer rating array in u.data format."""
    return "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in np.asarray(ratings).tolist()).encode()


def _plain_header(content: bytes, member: str, columns: tuple[str, ...]) -> bytes:
    """A recbole file with plain column names (`age:token` → `age`), which must be `columns`; the rows are kept
    byte for byte."""
    header, _, body = content.partition(b"\n")
    names = [name.split(":")[0] for name in header.decode().split("\t")]
    if names != list(columns):
        raise FetchError(f"unexpected columns in {member}: {names}")
    return "\t".join(columns).encode() + b"\n" + body


def _items_file(item: bytes) -> bytes:
    """recbole's item file (id, title, year, space-separated genres) as a TSV with one 0/1 column per genre."""
    header, *rows = item.decode("utf-8").rstrip("\n").split("\n")
    names = [name.split(":")[0] for name in header.split("\t")]
    if names != ["item_id", "movie_title", "release_year", "class"]:
        raise FetchError(f"unexpected columns in ml-100k.item: {names}")
    lines = ["\t".join(ITEM_COLUMNS)]
    for row in rows:
        item_id, title, year, genres = row.split("\t")
        unknown = set(genres.split()) - GENRE_COLUMNS.keys()
        if unknown:
            raise FetchError(f"ml-100k.item, item {item_id}: unknown genres {sorted(unknown)}")
        flags = ["1" if genre in genres.split() else "0" for genre in GENRE_COLUMNS]
        lines.append("\t".join([item_id, title, year if year.isdigit() else "", *flags]))
    return ("\n".join(lines) + "\n").encode("utf-8")


def _download_wheel(directory: Path, timeout: float) -> Path:
    """Download the recbole wheel (without its dependencies) into `directory` with this interpreter's pip."""
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
        "--timeout", str(timeout), "--retries", "1", "--dest", str(directory), RECBOLE_REQUIREMENT,
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=4 * timeout + 60)
    except subprocess.TimeoutExpired:
        raise DownloadError(f"pip download {RECBOLE_REQUIREMENT} did not finish in {4 * timeout + 60:.0f} s") from None
    wheels = sorted(directory.glob("recbole-*.whl"))
    if result.returncode != 0 or not wheels:
        raise DownloadError(
            f"cannot download {RECBOLE_REQUIREMENT}, the source of MovieLens-100K, from the package index: "
            + _pip_failure(result.stderr)
        )
    return wheels[0]


def _pip_failure(stderr: str) -> str:
    """pip's last error line, and a hint when the log shows that the index could not be reached."""
    lines = stderr.strip().splitlines()
    errors = [line.removeprefix("ERROR: ") for line in lines if line.startswith("ERROR:")]
    reason = errors[-1] if errors else (lines[-1] if lines else "pip downloaded no wheel")
    if any(sign in stderr.lower() for sign in ("connection", "timed out", "name resolution", "proxy")):
        reason += "; the index could not be reached: check network access, proxy and pip's index settings"
    return reason


def _read_verified_members(wheel: Path) -> dict[str, bytes]:
    """The MovieLens files inside the wheel, each checked against SOURCE_SHA256."""
    members = {}
    with zipfile.ZipFile(wheel) as archive:
        for name, expected in SOURCE_SHA256.items():
            try:
                content = archive.read(WHEEL_FOLDER + name)
            except KeyError:
                raise FetchError(f"{wheel.name} has no {WHEEL_FOLDER + name}") from None
            if _sha256(content) != expected:
                raise FetchError(f"{WHEEL_FOLDER + name} in {wheel.name} does not match its pinned SHA-256")
            members[name] = content
    return members


def _holds_verified_files(dest: Path) -> bool:
    return all((dest / name).is_file() and _sha256((dest / name).read_bytes()) == digest
               for name, digest in OUTPUT_SHA256.items())


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _write_atomic(path: Path, content: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_bytes(content)
    os.replace(temporary, path)
