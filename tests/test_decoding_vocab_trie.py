"""SidVocab token layout and the vectorised SID trie against plain Python dict tries."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generative_rec.trie import SidTrie
from generative_rec.vocab import SidVocab
from recdata.errors import DataError

# ---------------------------------------------------------------- vocabulary


def test_vocab_layout_matches_spec():
    v = SidVocab(codebook_sizes=[256, 256, 256, 7], n_user_buckets=2000)
    assert (v.pad_id, v.eos_id) == (0, 1)
    assert v.offsets == (2002, 2258, 2514, 2770)
    assert v.vocab_size == 2777
    assert v.position_range(3) == (2770, 2777)
    assert v.sid_length == 4


def test_encode_decode_round_trip_numpy_and_torch():
    v = SidVocab(codebook_sizes=[4, 3, 5], n_user_buckets=10)
    codes = np.array([[0, 0, 0], [3, 2, 4], [1, 1, 2]])
    tokens = v.encode_sids(codes)
    assert tokens.tolist() == [[12, 16, 19], [15, 18, 23], [13, 17, 21]]
    np.testing.assert_array_equal(v.decode_tokens(tokens), codes)
    t = torch.as_tensor(codes)
    assert isinstance(v.encode_sids(t), torch.Tensor)
    assert torch.equal(v.decode_tokens(v.encode_sids(t)), t)
    # Higher-rank inputs ([batch, history, L]) keep their shape.
    assert v.encode_sids(np.stack([codes, codes])).shape == (2, 3, 3)


def test_encode_decode_reject_out_of_range():
    v = SidVocab(codebook_sizes=[4, 3, 5], n_user_buckets=10)
    with pytest.raises(DataError):
        v.encode_sids(np.array([[4, 0, 0]]))
    with pytest.raises(DataError):
        v.encode_sids(np.array([[0, -1, 0]]))
    with pytest.raises(DataError):
        v.encode_sids(np.array([[0, 0]]))  # wrong length
    with pytest.raises(DataError):
        v.decode_tokens(np.array([[12, 12, 19]]))  # position-0 token at position 1


def test_user_token_is_stable_across_processes_and_in_range():
    v = SidVocab(codebook_sizes=[8], n_user_buckets=2000)
    users = [f"u{i}" for i in range(500)]
    tokens = v.user_tokens(users)
    assert tokens.min() >= 2 and tokens.max() < 2002
    assert len(set(tokens.tolist())) > 400  # spread over the buckets, not a constant
    code = (
        "from generative_rec.vocab import SidVocab;"
        "print(SidVocab(codebook_sizes=[8]).user_token('A1B2C3'))"
    )
    # A fresh interpreter with a different str-hash salt must give the same token.
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": "12345"},
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == str(v.user_token("A1B2C3"))


def test_vocab_dict_round_trip_and_validation():
    v = SidVocab(codebook_sizes=[5, 6], n_user_buckets=3)
    assert SidVocab.from_dict(v.to_dict()) == v
    with pytest.raises(DataError):
        SidVocab(codebook_sizes=[])
    with pytest.raises(DataError):
        SidVocab(codebook_sizes=[4, 0])


# ---------------------------------------------------------------- trie


@st.composite
def catalogues(draw: st.DrawFn) -> np.ndarray:
    """Unique SID tables with uneven branching: random subsets of a small code grid."""
    sizes = draw(st.lists(st.integers(1, 5), min_size=1, max_size=4))
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij"), axis=-1).reshape(-1, len(sizes))
    n = draw(st.integers(1, len(grid)))
    rows = draw(st.permutations(range(len(grid))))[:n]
    return grid[list(rows)]


def python_children(codes: np.ndarray) -> dict[tuple[int, ...], list[int]]:
    kids: dict[tuple[int, ...], set[int]] = {}
    for row in codes.tolist():
        for d in range(len(row)):
            kids.setdefault(tuple(row[:d]), set()).add(row[d])
    return {k: sorted(v) for k, v in kids.items()}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(codes=catalogues())
def test_trie_matches_python_trie(codes: np.ndarray):
    trie = SidTrie.from_codes(codes)
    n, length = codes.shape
    kids = python_children(codes)
    # Every item maps back to its own row; the node count is O(N·L).
    assert torch.equal(trie.lookup(codes), torch.arange(n))
    assert sum(trie.n_nodes(d) for d in range(length + 1)) <= n * length + 1
    # Walk every prefix with the vectorised windows and compare with the dict trie.
    prefixes = {(): 0}
    for d in range(length):
        nxt = {}
        for prefix, node in prefixes.items():
            child, code, valid = trie.children(d, torch.tensor([node]))
            got = code[0][valid[0]].tolist()
            assert got == kids[prefix]
            for c, m in zip(got, child[0][valid[0]].tolist()):
                nxt[prefix + (c,)] = m
        assert trie.widths[d] == max(len(kids[p]) for p in prefixes)
        prefixes = nxt
    # Leaves carry the right item.
    for prefix, node in prefixes.items():
        assert codes[int(trie.leaf_item[node])].tolist() == list(prefix)


@settings(max_examples=40, deadline=None)
@given(codes=catalogues())
def test_prefix_leaves_are_exactly_the_items_under_each_prefix(codes: np.ndarray):
    trie = SidTrie.from_codes(codes)
    for depth in range(codes.shape[1] + 1):
        lo, hi = trie.prefix_leaves(torch.as_tensor(codes), depth)
        for row, (a, b) in enumerate(zip(lo.tolist(), hi.tolist())):
            under = sorted(int(trie.leaf_item[m]) for m in range(a, b))
            want = [i for i in range(len(codes)) if codes[i, :depth].tolist() == codes[row, :depth].tolist()]
            assert under == want


@settings(max_examples=40, deadline=None)
@given(codes=catalogues(), data=st.data())
def test_trie_lookup_rejects_non_members(codes: np.ndarray, data: st.DataObject):
    trie = SidTrie.from_codes(codes)
    members = {tuple(r) for r in codes.tolist()}
    probe = np.array(data.draw(st.lists(st.lists(st.integers(0, 6), min_size=codes.shape[1], max_size=codes.shape[1]), min_size=1, max_size=20)))
    got = trie.lookup(probe).tolist()
    want = [codes.tolist().index(list(r)) if tuple(r) in members else -1 for r in probe.tolist()]
    assert got == want


def test_trie_rejects_bad_tables():
    with pytest.raises(DataError, match="duplicate"):
        SidTrie.from_codes(np.array([[0, 1], [1, 0], [0, 1]]))
    with pytest.raises(DataError, match="negative"):
        SidTrie.from_codes(np.array([[0, -1]]))
    with pytest.raises(DataError):
        SidTrie.from_codes(np.zeros((0, 3), dtype=np.int64))
    with pytest.raises(DataError):
        SidTrie.from_codes(np.array([[0.5, 1.0]]))


def test_trie_window_width_is_the_branching_factor_not_the_catalogue_size():
    rng = np.random.default_rng(0)
    codes = np.unique(rng.integers(0, 16, size=(20_000, 4)), axis=0)
    trie = SidTrie.from_codes(codes)
    assert max(trie.widths) <= 16
    assert torch.equal(trie.lookup(codes[::97]), torch.arange(len(codes))[::97])
