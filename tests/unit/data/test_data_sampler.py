"""MultiDatabaseSampler: ratios, determinism, resumption, batch bounds; RankSlice: per-rank shares."""

from __future__ import annotations

import numpy as np
import pytest

from sevenomni.data.sampler import (
    MultiDatabaseSampler,
    database_probabilities,
    permutation_keys,
    permute,
)
from sevenomni.data.spec import SamplingSpec

SIZES = [5000, 1200, 300]


def atom_counts(sizes=SIZES, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(1, 40, n) for n in sizes]


def sampler(mode="ratio", weights=(0.5, 0.3, 0.2), sizes=SIZES, **spec):
    spec = {"batch_size": 16, "seed": 11} | spec
    if spec.get("max_atoms"):
        spec["batch_size"] = None
    spec = SamplingSpec(mode=mode, **spec)
    return MultiDatabaseSampler(list(sizes), atom_counts(sizes), spec, list(weights) if weights else None)


def database_of(indices, sizes=SIZES):
    return np.searchsorted(np.cumsum(sizes), indices, side="right")


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 1000, 4099])
def test_permutation_is_a_bijection(n):
    items = permute(np.arange(n), n, permutation_keys(5, n))
    assert sorted(items.tolist()) == list(range(n))


@pytest.mark.parametrize(
    "mode, weights, temperature, expected",
    [
        ("ratio", (0.5, 0.3, 0.2), 1.0, [0.5, 0.3, 0.2]),
        ("ratio", (1, 0, 3), 1.0, [0.25, 0.0, 0.75]),
        ("proportional", None, 1.0, np.array(SIZES) / sum(SIZES)),
        ("temperature", None, 3.0, np.array(SIZES) ** (1 / 3) / np.sum(np.array(SIZES) ** (1 / 3))),
    ],
)
def test_ratios_within_two_percent_over_10k_draws(mode, weights, temperature, expected):
    s = sampler(mode, weights, temperature=temperature, epoch_size=10_000)
    drawn = np.concatenate(list(s))
    assert 10_000 - 3 <= len(drawn) <= 10_000 + 3
    observed = np.bincount(database_of(drawn), minlength=3) / len(drawn)
    np.testing.assert_allclose(observed, expected, rtol=0.02, atol=1e-9)


def test_proportional_epoch_visits_everything_once():
    s = sampler("proportional", None)
    first = np.concatenate(list(s))
    assert sorted(first.tolist()) == list(range(sum(SIZES)))
    second = np.concatenate(list(s))  # the next epoch: another order of the same items
    assert sorted(second.tolist()) == list(range(sum(SIZES))) and not np.array_equal(first, second)


def test_small_database_cycles_without_replacement():
    s = sampler("ratio", (1, 1, 1), epoch_size=3000)  # database 2 (300) is drawn 1000 times
    drawn = np.concatenate(list(s))
    small = drawn[database_of(drawn) == 2] - SIZES[0] - SIZES[1]
    counts = np.bincount(small, minlength=300)
    assert counts.min() >= 3 and counts.max() <= 4


@pytest.mark.parametrize("world_size", [2, 3])
def test_rank_slices_partition_every_global_batch(world_size):
    """Every rank steps once per global batch (an empty share included) and the shares of a
    global batch are disjoint with the batch as their union."""
    from sevenomni.train.data import RankSlice

    global_batches = list(sampler("proportional", None, max_atoms=60))
    shares = [list(RankSlice(sampler("proportional", None, max_atoms=60), r, world_size)) for r in range(world_size)]
    assert all(len(share) == len(global_batches) for share in shares)
    for number, batch in enumerate(global_batches):
        parts = [share[number] for share in shares]
        assert sorted(i for part in parts for i in part) == sorted(batch)
        assert sum(len(part) for part in parts) == len(batch)


def test_deterministic_and_seed_dependent():
    a, b = list(sampler(seed=1)), list(sampler(seed=1))
    assert a == b and a != list(sampler(seed=2))


def test_resume_mid_epoch_gives_identical_order():
    reference = sampler(max_atoms=150)
    reference.set_epoch(3)
    full = list(reference)
    interrupted = sampler(max_atoms=150)
    interrupted.set_epoch(3)
    iterator = iter(interrupted)
    head = [next(iterator) for _ in range(17)]
    state = interrupted.state_dict()
    assert state["epoch"] == 3 and state["position"] == 17
    resumed = sampler(max_atoms=150)
    resumed.load_state_dict(state)
    resumed.set_epoch(3)  # a trainer calling set_epoch for the same epoch keeps the position
    assert head + list(resumed) == full
    assert resumed.epoch == 4 and resumed.state_dict()["position"] == 0


def test_max_atoms_bound_and_len():
    s = sampler(max_atoms=100)
    counts = np.concatenate(atom_counts())
    batches = list(sampler(max_atoms=100))
    assert len(batches) == len(s)
    sums = [counts[b].sum() for b in batches]
    assert max(sums) <= 100 and np.mean(sums) > 80


def test_oversized_structure_is_a_batch_alone():
    s = MultiDatabaseSampler([3], [np.array([5, 500, 5])], SamplingSpec(max_atoms=20, seed=0), None)
    batches = list(s)
    assert [1] in batches and sorted(i for b in batches for i in b) == [0, 1, 2]


def test_len_matches_iteration_for_batch_size():
    s = sampler("temperature", None, temperature=2.0)
    assert len(s) == len(list(sampler("temperature", None, temperature=2.0)))


def test_weight_errors():
    with pytest.raises(ValueError, match="needs a weight for every database"):
        database_probabilities(SIZES, [1.0, None, 1.0], "ratio")
    with pytest.raises(ValueError, match="apply only in mode 'ratio'"):
        database_probabilities(SIZES, [1.0, None, None], "temperature")
    with pytest.raises(ValueError, match="all sampling weights are zero"):
        database_probabilities(SIZES, [0, 0, 0], "ratio")
    with pytest.raises(ValueError, match="atom counts"):
        MultiDatabaseSampler([3], [np.ones(2)], SamplingSpec(batch_size=1), None)


def test_state_of_what_the_loop_consumed_despite_prefetch():
    reference = sampler()
    reference.set_epoch(2)
    full = list(reference)
    ahead = sampler()
    ahead.set_epoch(2)
    list(ahead)  # a prefetching DataLoader already exhausted the epoch
    assert ahead.epoch == 3
    state = ahead.state_dict(consumed=5)  # ...but the training loop used only 5 batches
    assert (state["epoch"], state["position"]) == (2, 5)
    resumed = sampler()
    resumed.load_state_dict(state)
    assert list(resumed) == full[5:]
    assert ahead.state_dict(consumed=len(full))["epoch"] == 3
