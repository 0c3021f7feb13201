"""Fixtures of the pipeline tests: tiny data files and dataset specs written into the test's tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

RATINGS = """\
user_id,item_id,rating,timestamp
u1,i1,4,100
u1,i2,3,101
u2,i1,5,102
u2,i1,2,90
u3,i3,abc,103
,i3,3,104
u4,i2,4
u5,i5,1,2020-01-01T00:00:00Z
u5,i5,2,zzz
u6,i3,1,105
"""
USERS = """\
user_id,age,occupation
u1,20,artist
u2,30,writer
u5,40,artist
u6,50,
u9,60,artist
"""
FRIENDS = "a,b\nu1,u2\nu1,u7\n"


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str], Path]:
    """write(name, text): a text file under tmp_path."""

    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def write_spec(tmp_path: Path) -> Callable[..., Path]:
    """write_spec(document, name="spec.yaml"): a spec file under tmp_path."""

    def write_spec(document: dict[str, Any], name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        return path

    return write_spec


@pytest.fixture
def demo_document(write: Callable[[str, str], Path]) -> dict[str, Any]:
    """A small valid spec (users × items ratings, a user graph) with its data files written beside it.

    ratings.csv has 10 rows: 4 bad (not a number, empty key, 3 fields, bad time), one duplicate of (u2, i1).
    """
    write("ratings.csv", RATINGS)
    write("users.csv", USERS)
    write("friends.csv", FRIENDS)
    return {
        "name": "demo",
        "modalities": [
            {
                "name": "user",
                "features": {
                    "source": {"path": "users.csv"},
                    "key": "user_id",
                    "numeric": ["age"],
                    "categorical": ["occupation"],
                },
                "graph": {"knn": {"k": 1}, "pairs": {"source": {"path": "friends.csv"}, "columns": ["a", "b"]}},
            },
            {"name": "item"},
        ],
        "relations": [
            {
                "name": "rating",
                "modalities": {"user": "user_id", "item": "item_id"},
                "value": "rating",
                "time": "timestamp",
                "duplicates": "last",
                "source": {"path": "ratings.csv"},
            }
        ],
        "split": {"test": 0.2, "validation": 0.1, "seed": 1},
        "training": {"rank": 4},
    }
