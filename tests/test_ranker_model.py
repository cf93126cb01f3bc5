"""Item-representation switches and the DIN model's forward pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recdata.errors import DataError
from ranking.item_repr import ItemRepresentation, item_fields
from ranking.models import DIN, build_model

CODES = np.array(
    [
        [0, 1, 2, 0],
        [0, 1, 2, 1],  # same first three codes as item 0
        [0, 1, 3, 0],  # shares the length-2 prefix with items 0 and 1
        [3, 0, 0, 0],
        [3, 0, 1, 0],
    ],
    dtype=np.int64,
)
SIZES = [4, 2, 4, 2]


def _fields(mode: str, ngrams: bool = False):
    return item_fields(mode=mode, n_items=len(CODES), sid_codes=CODES, codebook_sizes=SIZES, sid_ngrams=ngrams)


def test_itemid_switch_reads_one_row_per_item_and_ignores_codes() -> None:
    names, sizes, ids = _fields("itemid")
    assert names == ["itemid"] and sizes == [5]
    np.testing.assert_array_equal(ids[:, 0], np.arange(5))
    other = item_fields(mode="itemid", n_items=5, sid_codes=None, codebook_sizes=None, sid_ngrams=True)
    np.testing.assert_array_equal(other[2], ids)


def test_sid_switch_reads_one_row_per_position_and_no_item_id() -> None:
    names, sizes, ids = _fields("sid")
    assert names == ["sid_0", "sid_1", "sid_2", "sid_3"] and sizes == SIZES
    np.testing.assert_array_equal(ids, CODES)


def test_both_switch_is_itemid_plus_sid() -> None:
    names, sizes, ids = _fields("both")
    assert names == ["itemid", "sid_0", "sid_1", "sid_2", "sid_3"]
    np.testing.assert_array_equal(ids[:, 0], np.arange(5))
    np.testing.assert_array_equal(ids[:, 1:], CODES)


def test_ngrams_add_proper_prefixes_but_never_the_full_sid() -> None:
    names, sizes, ids = _fields("sid", ngrams=True)
    assert names[4:] == ["prefix_2", "prefix_3"]  # no prefix_4: it would identify the item
    p2, p3 = ids[:, 4], ids[:, 5]
    # Equal prefix id exactly when the prefixes are equal.
    for a in range(5):
        for b in range(5):
            assert (p2[a] == p2[b]) == bool((CODES[a, :2] == CODES[b, :2]).all())
            assert (p3[a] == p3[b]) == bool((CODES[a, :3] == CODES[b, :3]).all())
    assert sizes[4] == 2 and sizes[5] == 4


def test_sid_switch_needs_codes_and_checks_their_range() -> None:
    with pytest.raises(DataError, match="semantic IDs"):
        item_fields(mode="sid", n_items=5, sid_codes=None, codebook_sizes=None, sid_ngrams=False)
    bad = CODES.copy()
    bad[2, 0] = 4
    with pytest.raises(DataError, match="outside its codebook"):
        item_fields(mode="sid", n_items=5, sid_codes=bad, codebook_sizes=SIZES, sid_ngrams=False)
    with pytest.raises(DataError, match="shape"):
        item_fields(mode="sid", n_items=6, sid_codes=CODES, codebook_sizes=SIZES, sid_ngrams=False)


def _rep(mode: str, ngrams: bool = False, dim: int = 8) -> ItemRepresentation:
    torch.manual_seed(0)
    names, sizes, ids = _fields(mode, ngrams)
    return ItemRepresentation(field_names=names, field_sizes=sizes, field_ids=ids, dim=dim)


def test_sid_vectors_are_sums_of_shared_token_rows() -> None:
    rep = _rep("sid")
    vec = rep(torch.arange(5))
    # items 0 and 1 differ only in the last token: their difference is that token's row difference
    sid3 = rep.table.weight[sum(SIZES[:3]) : sum(SIZES)]
    torch.testing.assert_close(vec[1] - vec[0], sid3[1] - sid3[0])
    # changing one token row moves exactly the items that use it
    with torch.no_grad():
        rep.table.weight[0] += 1.0  # sid_0 == 0: items 0, 1, 2
    moved = (rep(torch.arange(5)) - vec).abs().sum(dim=1) > 0
    assert moved.tolist() == [True, True, True, False, False]


def test_whole_catalogue_path_equals_per_slot_lookup() -> None:
    for mode, ngrams in (("itemid", False), ("sid", True), ("both", False)):
        rep = _rep(mode, ngrams)
        items = torch.tensor([[0, 4, 4], [2, 1, 3]])
        torch.testing.assert_close(rep.all_items()[items], rep(items))
        small, = rep.lookup(torch.tensor([1, 2]))  # fewer slots than items: per-slot path
        large, more = rep.lookup(items, items)  # more slots than items: whole-catalogue path
        torch.testing.assert_close(small, rep(torch.tensor([1, 2])))
        torch.testing.assert_close(large, rep(items))
        torch.testing.assert_close(more, rep(items))


def test_itemid_row_only_moves_its_own_item() -> None:
    for mode, expect in (("itemid", [False, False, True, False, False]), ("sid", [False] * 5)):
        rep = _rep(mode)
        before = rep(torch.arange(5))
        if "itemid" in rep.field_names:
            with torch.no_grad():
                rep.table.weight[2] += 1.0
        moved = (rep(torch.arange(5)) - before).abs().sum(dim=1) > 0
        assert moved.tolist() == expect


def _din(mode: str = "sid", feedback: bool = True, user_id: bool = True) -> DIN:
    torch.manual_seed(0)
    return DIN(
        item_repr=_rep(mode),
        n_users=3,
        user_feature_values=np.array([[1, 2], [0, 1], [2, 0]]),
        user_feature_sizes=[3, 3],
        dim=8,
        hidden_sizes=[16],
        attention_hidden=6,
        dropout=0.0,
        history_feedback=feedback,
        use_user_id=user_id,
    ).eval()


def _inputs(batch: int = 4, hist: int = 5, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(batch, hist, generator=g) > 0.3
    mask[0] = False  # a row without any history
    return {
        "users": torch.randint(0, 3, (batch,), generator=g),
        "items": torch.randint(0, 5, (batch,), generator=g),
        "hist_items": torch.randint(0, 5, (batch, hist), generator=g),
        "hist_feedback": torch.randint(1, 3, (batch, hist), generator=g),
        "hist_mask": mask,
    }


def test_forward_is_finite_and_ignores_masked_history_positions() -> None:
    model = _din()
    inputs = _inputs()
    out = model(**inputs)
    assert out.shape == (4,) and torch.isfinite(out).all()
    scrambled = dict(inputs)
    scrambled["hist_items"] = torch.where(inputs["hist_mask"], inputs["hist_items"], (inputs["hist_items"] + 1) % 5)
    scrambled["hist_feedback"] = torch.where(inputs["hist_mask"], inputs["hist_feedback"], 3 - inputs["hist_feedback"])
    torch.testing.assert_close(model(**scrambled), out)


def test_batched_scores_equal_one_row_at_a_time() -> None:
    model = _din("both")
    inputs = _inputs(batch=6, seed=3)
    batched = model(**inputs)
    single = torch.stack([model(**{k: v[i : i + 1] for k, v in inputs.items()})[0] for i in range(6)])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-6)


def test_history_feedback_switch_changes_what_the_model_reads() -> None:
    inputs = _inputs(seed=1)
    flipped = dict(inputs, hist_feedback=3 - inputs["hist_feedback"])
    with_fb = _din(feedback=True)
    assert not torch.allclose(with_fb(**inputs)[1:], with_fb(**flipped)[1:])
    without = _din(feedback=False)
    torch.testing.assert_close(without(**inputs), without(**flipped))


def test_build_model_from_spec_matches_state_dict_layout() -> None:
    model = _din("sid")
    names, sizes, _ = _fields("sid")
    spec = {
        "model": "din", "n_items": 5, "n_users": 3, "field_names": names, "field_sizes": sizes,
        "user_feature_sizes": [3, 3], "embedding_dim": 8, "hidden_sizes": [16], "attention_hidden": 6,
        "dropout": 0.0, "history_feedback": True, "use_user_id": True,
    }
    rebuilt = build_model(spec).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    inputs = _inputs()
    torch.testing.assert_close(rebuilt(**inputs), model(**inputs))
    with pytest.raises(DataError, match="unknown ranker model"):
        build_model(dict(spec, model="nope"))
