import pytest

from tests.hyperlearn.planted import write_planted_run


@pytest.fixture(scope="session")
def planted_run(tmp_path_factory):
    return write_planted_run(tmp_path_factory.mktemp("planted"))
