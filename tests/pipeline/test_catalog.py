import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from hyperlearn.pipeline.catalog import CATALOG_SCHEMA, CatalogError, EntityCatalog


def test_new_keys_are_appended_in_sorted_order(tmp_path):
    catalog = EntityCatalog.load(tmp_path, "user")  # nothing stored yet: empty
    assert len(catalog) == 0

    ids = catalog.assign(["u3", "u1", "u3", "u2"])

    np.testing.assert_array_equal(ids, [2, 0, 2, 1])
    assert ids.dtype == np.int64
    assert catalog.keys.tolist() == ["u1", "u2", "u3"]
    assert (catalog.existing, catalog.new) == (0, 3)


def test_ids_never_change_across_runs(tmp_path):
    first = EntityCatalog("item")
    first.assign(pd.Series(["b", "d"]))
    first.save(tmp_path)

    second = EntityCatalog.load(tmp_path, "item")
    ids = second.assign(np.array(["c", "d", "a", "b"], dtype=object))
    second.save(tmp_path)

    np.testing.assert_array_equal(ids, [3, 1, 2, 0])  # b, d keep 0, 1; new a, c appended sorted
    assert (second.existing, second.new) == (2, 2)
    stored = pq.read_table(tmp_path / "item.parquet")
    assert stored.schema.equals(CATALOG_SCHEMA)
    assert stored.to_pydict() == {"entity_id": [0, 1, 2, 3], "key": ["b", "d", "a", "c"]}
    assert [p.name for p in tmp_path.iterdir()] == ["item.parquet"]  # no temporary file left behind


def test_ids_looks_up_without_adding(tmp_path):
    catalog = EntityCatalog("user", ["u1", "u2"])
    np.testing.assert_array_equal(catalog.ids(["u2", "u9", "u1"]), [1, -1, 0])
    assert len(catalog) == 2


def test_keys_are_exact_strings():
    catalog = EntityCatalog("user")
    np.testing.assert_array_equal(catalog.assign(["007", "7", "7.0"]), [0, 1, 2])


def test_missing_key_cannot_get_an_id():
    with pytest.raises(ValueError, match="catalog 'user': cannot assign an id to a missing key"):
        EntityCatalog("user").assign(["u1", None])


def test_corrupt_catalogs_are_rejected(tmp_path):
    pd.DataFrame({"entity_id": [0, 2], "key": ["a", "b"]}).to_parquet(tmp_path / "gaps.parquet")
    with pytest.raises(CatalogError, match=r"gaps\.parquet: entity ids are not 0 … 1 in order"):
        EntityCatalog.load(tmp_path, "gaps")
    pd.DataFrame({"entity_id": [0, 1], "key": ["a", "a"]}).to_parquet(tmp_path / "twice.parquet")
    with pytest.raises(CatalogError, match=r"twice\.parquet: catalog 'twice': keys must be unique"):
        EntityCatalog.load(tmp_path, "twice")
    pd.DataFrame({"id": [0], "key": ["a"]}).to_parquet(tmp_path / "columns.parquet")
    with pytest.raises(CatalogError, match=r"columns\.parquet: expected columns \['entity_id', 'key'\], found \['id'"):
        EntityCatalog.load(tmp_path, "columns")
    pd.DataFrame({"entity_id": ["zero"], "key": ["a"]}).to_parquet(tmp_path / "types.parquet")
    with pytest.raises(CatalogError, match=r"types\.parquet: expected entity_id int64 and key string"):
        EntityCatalog.load(tmp_path, "types")
