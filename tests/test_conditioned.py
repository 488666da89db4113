"""The synthetic A with a prescribed condition number (--condition): spectrum against a dense SVD,
seeds per batch item, and the refusals."""
import math

import pytest
import torch

from dipcert.config import ConfigError, RunConfig
from dipcert.operators import OperatorError, conditioned_matrices
from dipcert.problems import gaussian_problem
from dipcert.seeding import derive_seed


@pytest.mark.parametrize("m, n, kappa", [(3, 7, 100.0), (8, 5, 10.0), (4, 4, 1.0), (2, 9, 1e6)])
def test_the_spectrum_is_geometric_with_the_asked_condition_number(m, n, kappa):
    op = conditioned_matrices(m, n, kappa, [11, 12])
    sv = torch.linalg.svdvals(op.matrix)  # dense SVD, independent of the construction
    rank = min(m, n)
    expected = (math.sqrt(m) + math.sqrt(n)) * kappa ** (-torch.arange(rank, dtype=torch.float64) / max(rank - 1, 1))
    torch.testing.assert_close(sv, expected.expand(2, rank), rtol=1e-10, atol=0)
    torch.testing.assert_close(op.sigma_min(), expected[-1].expand(2), rtol=1e-10, atol=0)
    assert not torch.equal(op.matrix[0], op.matrix[1])


def test_each_batch_item_depends_on_its_own_seed_only():
    batch = conditioned_matrices(3, 6, 50.0, [5, 9, 7])
    alone = conditioned_matrices(3, 6, 50.0, [9])
    assert torch.equal(batch.matrix[1], alone.matrix[0])
    problem = gaussian_problem(6, 3, [0, 1], condition=50.0)
    assert torch.equal(problem.operator.matrix[1], conditioned_matrices(3, 6, 50.0, [derive_seed(1, "operator")]).matrix[0])
    torch.testing.assert_close(problem.y, torch.einsum("bmn,bn->bm", problem.operator.matrix, problem.x_true))


def test_bad_condition_numbers_are_refused():
    with pytest.raises(OperatorError, match="condition must be >= 1"):
        conditioned_matrices(3, 5, 0.5, [0])
    with pytest.raises(OperatorError, match="1 when min"):
        conditioned_matrices(1, 5, 10.0, [0])
    with pytest.raises(ConfigError, match="--condition 10 needs min"):
        RunConfig.build({"problem": {"signal": "gaussian", "n": 5}, "operator": {"m": 1, "condition": 10}})
    with pytest.raises(ConfigError, match="--condition shapes the synthetic A"):
        RunConfig.build({"problem": {"signal": "image", "size": "16"},
                         "operator": {"operator": "gaussian", "m": 20, "condition": 10}})
    config = RunConfig.build({"problem": {"signal": "gaussian", "n": 5}, "operator": {"m": 2, "condition": 4}})
    assert config.operator.condition == 4.0
