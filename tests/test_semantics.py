"""The neighborhood rule of SPEC.md, one axis at a time: SPEC's worked examples, the inverse
windows, the rpb indices, and `jax_natten.neighborhood` against the oracle's own rule, on NumPy
and on traced jax integers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import oracle
import pytest

from jax_natten import neighborhood


def _keys(first, last):
    return list(range(first, last + 1))


# SPEC "Worked examples": (L, k, s, d, causal) -> {query: attended keys}.
WORKED_EXAMPLES = {
    (7, 3, 1, 1, False): {0: [0, 1, 2], 1: [0, 1, 2], 2: [1, 2, 3], 3: [2, 3, 4], 4: [3, 4, 5],
                          5: [4, 5, 6], 6: [4, 5, 6]},
    (10, 4, 1, 1, False): {0: _keys(0, 3), 1: _keys(0, 3), 2: _keys(0, 3), 3: _keys(1, 4),
                           4: _keys(2, 5), 5: _keys(3, 6), 6: _keys(4, 7), 7: _keys(5, 8),
                           8: _keys(6, 9), 9: _keys(6, 9)},
    (9, 3, 1, 2, False): {0: [0, 2, 4], 1: [1, 3, 5], 2: [0, 2, 4], 3: [1, 3, 5], 4: [2, 4, 6],
                          5: [3, 5, 7], 6: [4, 6, 8], 7: [3, 5, 7], 8: [4, 6, 8]},
    (10, 3, 1, 3, False): {0: [0, 3, 6], 1: [1, 4, 7], 2: [2, 5, 8], 3: [0, 3, 6], 4: [1, 4, 7],
                           5: [2, 5, 8], 6: [3, 6, 9], 7: [1, 4, 7], 8: [2, 5, 8], 9: [3, 6, 9]},
    (6, 3, 1, 1, True): {0: [0], 1: [0, 1], 2: [0, 1, 2], 3: [1, 2, 3], 4: [2, 3, 4],
                         5: [3, 4, 5]},
    (8, 4, 2, 1, False): {0: _keys(0, 3), 1: _keys(0, 3), 2: _keys(1, 4), 3: _keys(1, 4),
                          4: _keys(3, 6), 5: _keys(3, 6), 6: _keys(4, 7), 7: _keys(4, 7)},
    (8, 4, 4, 1, False): {**{i: _keys(0, 3) for i in range(4)},
                          **{i: _keys(4, 7) for i in range(4, 8)}},
    (7, 4, 3, 1, False): {**{i: _keys(0, 3) for i in range(3)},
                          **{i: _keys(2, 5) for i in range(3, 6)}, 6: _keys(3, 6)},
    (8, 4, 2, 1, True): {0: [0], 1: [0, 1], 2: _keys(0, 2), 3: _keys(0, 3), 4: _keys(2, 4),
                         5: _keys(2, 5), 6: _keys(4, 6), 7: _keys(4, 7)},
    (10, 4, 4, 1, False): {**{i: _keys(0, 3) for i in range(4)},
                           **{i: _keys(4, 7) for i in range(4, 8)}, 8: _keys(6, 9),
                           9: _keys(6, 9)},
}


def _example_id(params):
    L, k, s, d, c = params
    return f"L{L}-k{k}-s{s}-d{d}{'-causal' if c else ''}"


def package_keys(i, L, k, s, d, c):
    """Keys of query i on one axis according to `jax_natten.neighborhood.window`."""
    start, end = neighborhood.window(np.array([i]), L, k, s, d, c)
    return [int(v) * d + i % d for v in range(int(start[0]), int(end[0]))]


def package_slot_keys(L, k, s, d, c):
    """{query: sorted valid keys} from `jax_natten.neighborhood.axis_neighbors`."""
    table = neighborhood.axis_neighbors(L, k, s, d, c)
    return {i: sorted(int(j) for j in table.keys[i][table.valid[i]]) for i in range(L)}


def test_all_ten_worked_examples_are_listed():
    assert len(WORKED_EXAMPLES) == 10
    for (L, *_), expected in WORKED_EXAMPLES.items():
        assert sorted(expected) == list(range(L))


@pytest.mark.parametrize("params", list(WORKED_EXAMPLES), ids=_example_id)
def test_worked_example_oracle(params):
    L = params[0]
    got = {i: oracle.axis_keys(i, *params) for i in range(L)}
    assert got == WORKED_EXAMPLES[params]


@pytest.mark.parametrize("params", list(WORKED_EXAMPLES), ids=_example_id)
def test_worked_example_package_window(params):
    L = params[0]
    got = {i: package_keys(i, *params) for i in range(L)}
    assert got == WORKED_EXAMPLES[params]


@pytest.mark.parametrize("params", list(WORKED_EXAMPLES), ids=_example_id)
def test_worked_example_package_axis_neighbors(params):
    assert package_slot_keys(*params) == WORKED_EXAMPLES[params]


def all_small_axes(max_length):
    """Every legal (L, k, s, d, causal) with L <= max_length."""
    for L in range(2, max_length + 1):
        for k in range(2, L + 1):
            for d in range(1, L // k + 1):
                for s in range(1, k + 1):
                    for c in (False, True):
                        yield L, k, s, d, c


def random_axes(count, seed):
    """`count` random legal axes, often with dilation not dividing the length."""
    rng = np.random.default_rng(seed)
    axes = []
    while len(axes) < count:
        L = int(rng.integers(2, 80))
        k = int(rng.integers(2, min(L, 16) + 1))
        d = int(rng.integers(1, L // k + 1))
        s = int(rng.integers(1, k + 1))
        axes.append((L, k, s, d, bool(rng.integers(2))))
    return axes


SMALL_AXES = list(all_small_axes(14))
RANDOM_AXES = random_axes(400, seed=7)


def test_small_axes_grid_covers_every_feature():
    assert len(SMALL_AXES) > 1000
    assert any(d > 1 and L % d for L, k, s, d, c in SMALL_AXES)
    assert any(s == k and k % 2 == 0 and c for L, k, s, d, c in SMALL_AXES)
    assert any(d > 1 and L % d for L, k, s, d, c in RANDOM_AXES)


def test_package_window_matches_oracle_on_every_small_axis():
    mismatches = []
    for L, k, s, d, c in SMALL_AXES:
        start, end = neighborhood.window(np.arange(L), L, k, s, d, c)
        for i in range(L):
            _, _, a, b = oracle.axis_window(i, L, k, s, d, c)
            if (int(start[i]), int(end[i])) != (a, b):
                mismatches.append(((L, k, s, d, c), i, (a, b), (int(start[i]), int(end[i]))))
    assert not mismatches, f"(L, k, s, d, causal), query, oracle [a, b), package: {mismatches[:10]}"


def test_package_axis_neighbors_match_oracle_slots_on_every_small_axis():
    mismatches = []
    for params in SMALL_AXES:
        keys, valid, rpb_index = oracle.axis_slots(*params)
        table = neighborhood.axis_neighbors(*params)
        same = (np.array_equal(table.valid, valid)
                and np.array_equal(np.where(valid, table.keys, 0), keys)
                and np.array_equal(np.where(valid, table.rpb_index, 0), rpb_index))
        if not same:
            mismatches.append(params)
    assert not mismatches, f"(L, k, s, d, causal) with different slot tables: {mismatches[:10]}"


@pytest.mark.parametrize("axes", ["small", "random"])
def test_axis_neighbors_invariants(axes):
    """Valid slots hold in-range keys of the query's dilation group, in increasing order, with
    rpb indices in [0, 2k-2] equal to (key - query)/d + k - 1; invalid slots point in range."""
    for L, k, s, d, c in SMALL_AXES if axes == "small" else RANDOM_AXES:
        table = neighborhood.axis_neighbors(L, k, s, d, c)
        where = f"(L, k, s, d, causal) = {(L, k, s, d, c)}"
        assert table.keys.shape == table.valid.shape == table.rpb_index.shape == (L, k), where
        assert np.all((table.keys >= 0) & (table.keys < L)), where
        query = np.arange(L)[:, None]
        valid = table.valid
        assert np.all(valid[:, 0]), where  # every query attends to something
        assert np.all(np.where(valid, table.keys % d == query % d, True)), where
        offsets = (table.keys - query) // d + k - 1
        assert np.all(np.where(valid, table.rpb_index == offsets, True)), where
        assert np.all(np.where(valid, (table.rpb_index >= 0) & (table.rpb_index <= 2 * k - 2), True)), where
        assert np.all(np.where(valid[:, 1:], np.diff(table.keys, axis=1) == d, True)), where
        if not c:
            assert np.all(valid), where  # a non-causal window never shrinks


def brute_force_inverse(L, k, s, d, c):
    """For each key j: the sorted queries whose window (oracle rule) holds j."""
    mask = oracle.axis_mask(L, k, s, d, c)
    return [sorted(int(i) for i in np.flatnonzero(mask[:, j])) for j in range(L)]


@pytest.mark.parametrize("axes", ["small", "random"])
def test_inverse_window_matches_brute_force(axes):
    mismatches = []
    for L, k, s, d, c in SMALL_AXES if axes == "small" else RANDOM_AXES:
        first, end = neighborhood.inverse_window(np.arange(L), L, k, s, d, c)
        expected = brute_force_inverse(L, k, s, d, c)
        for j in range(L):
            got = [v * d + j % d for v in range(int(first[j]), int(end[j]))]
            if got != expected[j]:
                mismatches.append(((L, k, s, d, c), j, expected[j], got))
    assert not mismatches, f"(L, k, s, d, causal), key, expected queries, got: {mismatches[:5]}"


def test_oracle_axis_rule_properties():
    """Sanity of the oracle itself on the small grid: k keys per query when not causal, at most
    k and ending at the query when causal, all in the query's dilation group."""
    for L, k, s, d, c in SMALL_AXES:
        for i in range(L):
            keys = oracle.axis_keys(i, L, k, s, d, c)
            assert all(0 <= j < L and j % d == i % d for j in keys)
            if c:
                assert 1 <= len(keys) <= k and keys[-1] == i
            else:
                assert len(keys) == k


@pytest.mark.parametrize("L", [5, 8, 11])
def test_special_cases(L):
    """SPEC's special cases: k = L, d = 1 is full attention; 1-D causal with k = L is standard
    causal attention; s = k is blocked attention."""
    full = np.ones((L, L), dtype=bool)
    assert np.array_equal(oracle.axis_mask(L, L), full)
    assert np.array_equal(oracle.axis_mask(L, L, causal=True), np.tril(full))
    for params in ((L, L, 1, 1, False), (L, L, 1, 1, True)):
        assert package_slot_keys(*params) == {i: oracle.axis_keys(i, *params) for i in range(L)}
    k = 2
    blocked = package_slot_keys(L, k, k, 1, False)
    for i in range(L):
        start = min(k * (i // k), L - k)
        assert blocked[i] == list(range(start, start + k))




@pytest.mark.parametrize("causal", [False, True])
def test_window_on_traced_jax_integers_equals_numpy_on_every_small_axis(causal):
    """The one window rule with position, length, kernel size, stride and dilation all traced
    (one jit, vmapped over the small grid) gives the NumPy windows."""
    axes = np.array([params[:4] for params in SMALL_AXES if params[4] == causal])
    longest = int(axes[:, 0].max())

    @jax.jit
    @jax.vmap
    def windows(L, k, s, d):
        return neighborhood.window(jnp.arange(longest), L, k, s, d, causal)

    starts, ends = windows(*(jnp.asarray(column) for column in axes.T))
    mismatches = []
    for (L, k, s, d), start, end in zip(axes.tolist(), np.asarray(starts), np.asarray(ends)):
        expected = neighborhood.window(np.arange(L), L, k, s, d, causal)
        if not (np.array_equal(start[:L], expected[0]) and np.array_equal(end[:L], expected[1])):
            mismatches.append((L, k, s, d, causal))
    assert not mismatches, f"(L, k, s, d, causal) whose traced windows differ: {mismatches[:10]}"


# Axes with every feature: even/odd kernels, stride up to the kernel, dilation not dividing the
# length, causal.
TRACED_TABLE_AXES = [(7, 3, 1, 1, False), (10, 4, 2, 1, True), (11, 3, 3, 3, False), (13, 2, 2, 4, True),
                     (12, 5, 4, 2, False), (9, 4, 4, 2, True), (14, 6, 5, 2, True), (8, 2, 1, 3, False)]


def test_tables_on_traced_jax_integers_equal_numpy():
    """inverse_window on traced positions and axis_neighbors built with jnp, inside jit, give the
    NumPy tables."""
    @jax.jit
    def tables(positions):
        out = []
        for params, position in zip(TRACED_TABLE_AXES, positions):
            table = neighborhood.axis_neighbors(*params, xp=jnp)
            out.append((*neighborhood.inverse_window(position, *params), table.keys, table.valid, table.rpb_index))
        return out

    traced = tables([jnp.arange(params[0]) for params in TRACED_TABLE_AXES])
    for params, got in zip(TRACED_TABLE_AXES, traced):
        table = neighborhood.axis_neighbors(*params)
        expected = (*neighborhood.inverse_window(np.arange(params[0]), *params), table.keys, table.valid,
                    table.rpb_index)
        for g, e in zip(got, expected):
            np.testing.assert_array_equal(np.asarray(g), e, err_msg=str(params))


@pytest.mark.parametrize("shape,nbhd", [
    ((5, 7), neighborhood.Neighborhood((3, 4), (2, 1), (1, 2), (False, True))),
    ((4, 3, 6), neighborhood.Neighborhood((2, 3, 3), (1, 3, 2), (2, 1, 1), (True, False, False))),
])
def test_token_slot_tables_on_traced_jax_integers_equal_numpy(shape, nbhd):
    traced = jax.jit(lambda: neighborhood.token_slot_tables(shape, nbhd, xp=jnp))()
    for t, e in zip(traced, neighborhood.token_slot_tables(shape, nbhd)):
        np.testing.assert_array_equal(np.asarray(t), e)
