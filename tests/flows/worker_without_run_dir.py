"""A `dask worker --preload` module for tests: the worker it loads into cannot read any run directory, as a worker
on another host could not, so training there proves that trainers get their data through Dask."""

from hyperlearn.rundir import RunDir


def _refuse(self, *args, **kwargs):
    raise PermissionError(f"this worker cannot read the run directory {self.path}")


for _name in ("read_trainer_share", "read_relation_split", "read_relation_meta", "read_laplacian", "relation_names"):
    setattr(RunDir, _name, _refuse)
