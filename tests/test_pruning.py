"""Mask math: exact counts, global vs layerwise, exclusions, ties, packing."""
import numpy as np
import pytest

from lth_mpi import pruning


def layers(seed=0):
    r = np.random.default_rng(seed)
    return {"a": r.standard_normal((30, 20)), "b": 5 * r.standard_normal((20, 10)),
            "c": r.standard_normal((10, 3))}


@pytest.mark.parametrize("scope", pruning.SCOPES)
@pytest.mark.parametrize("s", [0.1, 0.5, 0.8, 0.9, 0.95, 0.98, 0.333])
def test_exact_count(scope, s):
    w = layers()
    masks = pruning.magnitude_masks(w, s, scope)
    total = sum(v.size for v in w.values())
    pruned = sum(int((~m).sum()) for m in masks.values())
    if scope == "global":
        assert pruned == round(s * total)
    else:
        for name in w:
            assert int((~masks[name]).sum()) == round(s * w[name].size)
    assert pruning.realized_sparsity(masks) == pytest.approx(pruned / total, abs=0)
    assert all(masks[n].shape == w[n].shape and masks[n].dtype == bool for n in w)


def test_global_threshold_prunes_smallest_everywhere():
    w = layers()
    masks = pruning.magnitude_masks(w, 0.6, "global")
    kept = np.concatenate([np.abs(w[n])[masks[n]] for n in w])
    gone = np.concatenate([np.abs(w[n])[~masks[n]] for n in w])
    assert gone.max() <= kept.min()
    # layer b has 5x larger weights: a global threshold prunes it less than the others
    frac = {n: 1 - masks[n].mean() for n in w}
    assert frac["b"] < frac["a"] and frac["b"] < frac["c"]


def test_layerwise_same_fraction_per_layer():
    w = layers()
    masks = pruning.magnitude_masks(w, 0.6, "layerwise")
    for n in w:
        assert 1 - masks[n].mean() == pytest.approx(round(0.6 * w[n].size) / w[n].size)
        assert np.abs(w[n])[~masks[n]].max() <= np.abs(w[n])[masks[n]].min()


def test_excluded_layers_are_simply_not_given():
    w = layers()
    del w["c"]
    masks = pruning.magnitude_masks(w, 0.5)
    assert set(masks) == {"a", "b"}


def test_ties_are_exact_and_deterministic():
    w = {"a": np.ones((4, 5)), "b": np.ones((5, 2))}   # every weight ties
    m1 = pruning.magnitude_masks(w, 0.5)
    m2 = pruning.magnitude_masks({k: v.copy() for k, v in w.items()}, 0.5)
    assert sum(int((~m).sum()) for m in m1.values()) == 15
    for n in w:
        np.testing.assert_array_equal(m1[n], m2[n])
    # ties break by position: the first 15 of the concatenation go
    flat = np.concatenate([m1["a"].ravel(), m1["b"].ravel()])
    assert not flat[:15].any() and flat[15:].all()


def test_sign_does_not_matter():
    w = {"a": np.array([[-3.0, 0.1], [2.0, -0.2]])}
    m = pruning.magnitude_masks(w, 0.5)["a"]
    np.testing.assert_array_equal(m, [[True, False], [True, False]])


def test_bad_inputs():
    with pytest.raises(ValueError, match="sparsity"):
        pruning.magnitude_masks(layers(), 1.0)
    with pytest.raises(ValueError, match="scope"):
        pruning.magnitude_masks(layers(), 0.5, "per-neuron")


def test_pack_round_trip_is_8x_smaller():
    w = layers()
    masks = list(pruning.magnitude_masks(w, 0.7).values())
    packed = pruning.pack_masks(masks)
    assert packed.dtype == np.uint8 and packed.size == -(-sum(m.size for m in masks) // 8)
    for a, b in zip(masks, pruning.unpack_masks(packed, [m.shape for m in masks])):
        np.testing.assert_array_equal(a, b)


def test_random_masks_keep_each_layers_count_and_nothing_else():
    rng = np.random.default_rng(0)
    kernels = {"a": rng.standard_normal((30, 20)), "b": rng.standard_normal((20, 10))}
    masks = list(pruning.magnitude_masks(kernels, 0.8, "global").values())
    rand = pruning.random_like(masks, seed=5)
    assert [r.sum() for r in rand] == [m.sum() for m in masks]          # per layer, exactly
    assert [r.shape for r in rand] == [m.shape for m in masks]
    assert all((r != m).any() for r, m in zip(rand, masks))              # not the ticket's choice
    again = pruning.random_like(masks, seed=5)
    assert all((a == r).all() for a, r in zip(again, rand))
    assert any((a != r).any() for a, r in zip(pruning.random_like(masks, seed=6), rand))
