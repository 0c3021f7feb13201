"""Property: whatever bytes a source holds, ingest never crashes on them and accounts for every row."""

from pathlib import Path

import pandas as pd
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyperlearn.pipeline.ingest import IngestError, ingest
from hyperlearn.pipeline.readers import SourceError
from hyperlearn.pipeline.spec import load_spec
from hyperlearn.rundir import RunDir

LINE_PIECES = st.sampled_from(
    [b"u1", b"i2", b"3", b"1e39", b"nan", b",", b"\t", b'"', b"\r", b"\n", b"\x00", b"\xff", b"\xc3\xa9", b" ", b"{", b"}"]
)
CONTENT = st.one_of(st.binary(max_size=300), st.lists(LINE_PIECES, max_size=60).map(b"".join))


def _physical_rows(data: bytes, header: bool) -> int:
    """Data rows a text file holds: its lines (a last line without a line break counts), less the header."""
    data = data.removeprefix(b"\xef\xbb\xbf")
    lines = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
    return max(0, lines - 1) if header else lines


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=CONTENT, fmt=st.sampled_from(["csv", "jsonl"]))
def test_arbitrary_bytes_never_crash_ingest_and_every_row_is_accounted(tmp_path_factory, content, fmt):
    folder = tmp_path_factory.mktemp("bytes")
    name = f"ratings.{fmt}"
    prefix = b"user,item,rating\n" if fmt == "csv" else b""
    (folder / name).write_bytes(prefix + content)
    document = {
        "name": "bytes",
        "modalities": [{"name": "user"}, {"name": "item"}],
        "relations": [
            {"name": "rating", "modalities": {"user": "user", "item": "item"}, "value": "rating", "source": {"path": name}}
        ],
    }
    (folder / "spec.yaml").write_text(yaml.safe_dump(document))
    run = RunDir(folder / "run")
    try:
        report = ingest(load_spec(folder / "spec.yaml"), run, folder / "catalog")
    except (SourceError, IngestError) as error:
        assert name in str(error) or "rating" in str(error)
        quarantine = run.relation_quarantine("rating")
        if isinstance(error, IngestError):  # no row accepted: the quarantine holds every row
            assert len(pd.read_parquet(quarantine)) == _physical_rows(prefix + content, fmt == "csv")
        return
    (relation,) = report.relations
    assert relation.rows_read == _physical_rows(prefix + content, fmt == "csv")
    assert relation.rows_read == relation.rows_accepted + relation.rows_quarantined
    assert relation.entries_total == relation.tuples - relation.duplicates_merged
    assert len(pd.read_parquet(Path(run.path) / relation.quarantine_file)) == relation.rows_quarantined
