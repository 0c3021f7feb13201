"""Loading the training problem, and the problem a refit trains on."""

import torch

from hyperlearn.problem import load_problem, with_validation_in_training


def test_validation_entries_join_the_training_entries_and_nothing_else_changes(planted_run):
    problem = load_problem(planted_run)
    refit = with_validation_in_training(problem)
    assert refit.sizes == problem.sizes and refit.laplacians is problem.laplacians
    for before, after in zip(problem.relations, refit.relations):
        train, validation = before.train, before.splits["validation"]
        assert after.train.nnz == train.nnz + validation.nnz
        torch.testing.assert_close(after.train.coords, torch.cat([train.coords, validation.coords], dim=1))
        torch.testing.assert_close(after.train.values, torch.cat([train.values, validation.values]))
        assert after.splits["test"] is before.splits["test"]
        assert after.splits["validation"] is validation
