"""RFC 9162 Merkle trees (`projections.merkle`): the reference vectors of the Certificate
Transparency implementations (roots of sizes 0-8, inclusion and consistency proofs), then every
proof of every tree up to 40 leaves verifies and none verifies with anything changed."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from projections import merkle

# The eight entries of the CT reference tree and its roots by size (index = size).
entries = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
leaves = [merkle.leaf_hash(entry) for entry in entries]
roots = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# (leaf index, tree size, proof)
inclusion_vectors = [
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
# (first size, second size, proof)
consistency_vectors = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]


def test_the_reference_roots() -> None:
    assert [merkle.Tree(leaves[:size]).root().hex() for size in range(9)] == roots


@pytest.mark.parametrize(("index", "size", "expected"), inclusion_vectors)
def test_the_reference_inclusion_proofs(index: int, size: int, expected: list[str]) -> None:
    proof = merkle.Tree(leaves[:size]).inclusion_proof(index)
    assert [node.hex() for node in proof] == expected
    root = bytes.fromhex(roots[size])
    assert merkle.verify_inclusion(index, size, leaves[index], proof, root)
    assert not merkle.verify_inclusion(index, size, leaves[index], proof, bytes.fromhex(roots[1]))


@pytest.mark.parametrize(("first", "second", "expected"), consistency_vectors)
def test_the_reference_consistency_proofs(first: int, second: int, expected: list[str]) -> None:
    proof = merkle.Tree(leaves[:second]).consistency_proof(first)
    assert [node.hex() for node in proof] == expected
    first_root, second_root = bytes.fromhex(roots[first]), bytes.fromhex(roots[second])
    assert merkle.verify_consistency(first, second, first_root, second_root, proof)


def _tree(size: int, salt: int) -> list[bytes]:
    return [merkle.leaf_hash(f"{salt}:{i}".encode()) for i in range(size)]


def _flip(node: bytes) -> bytes:
    return bytes([node[0] ^ 1]) + node[1:]


@settings(max_examples=60, deadline=None)
@given(size=st.integers(1, 40), salt=st.integers(0, 1000))
def test_every_inclusion_proof_verifies_and_nothing_changed_does(size: int, salt: int) -> None:
    tree = _tree(size, salt)
    root = merkle.Tree(tree).root()
    for index in range(size):
        proof = merkle.Tree(tree).inclusion_proof(index)
        assert len(proof) <= size.bit_length()
        assert merkle.verify_inclusion(index, size, tree[index], proof, root)
        assert not merkle.verify_inclusion(index, size, _flip(tree[index]), proof, root)
        assert not merkle.verify_inclusion(index, size, tree[index], proof, _flip(root))
        if proof:
            assert not merkle.verify_inclusion(
                index, size, tree[index], [*proof[:-1], _flip(proof[-1])], root
            )
            assert not merkle.verify_inclusion(index, size, tree[index], proof[:-1], root)
        if size > 1:  # another leaf's place
            other = (index + 1) % size
            assert not merkle.verify_inclusion(other, size, tree[index], proof, root)


@settings(max_examples=40, deadline=None)
@given(size=st.integers(1, 40), salt=st.integers(0, 1000))
def test_every_consistency_proof_verifies_and_a_changed_history_does_not(
    size: int, salt: int
) -> None:
    tree = _tree(size, salt)
    roots_by_size = {m: merkle.Tree(tree[:m]).root() for m in range(size + 1)}
    whole = merkle.Tree(tree)
    assert [whole.root(m) for m in range(size + 1)] == list(roots_by_size.values())
    for first in range(1, size + 1):
        proof = merkle.Tree(tree).consistency_proof(first)
        assert merkle.verify_consistency(
            first, size, roots_by_size[first], roots_by_size[size], proof
        )
        if first < size:
            assert not merkle.verify_consistency(
                first, size, _flip(roots_by_size[first]), roots_by_size[size], proof
            )
            assert not merkle.verify_consistency(
                first, size, roots_by_size[first], _flip(roots_by_size[size]), proof
            )
            # A history in which one leaf of the first tree was changed: its new root is not
            # consistent with the old one, whatever proof it comes with.
            changed = [*tree[: first - 1], _flip(tree[first - 1]), *tree[first:]]
            assert not merkle.verify_consistency(
                first,
                size,
                roots_by_size[first],
                merkle.Tree(changed).root(),
                merkle.Tree(changed).consistency_proof(first),
            )
    assert merkle.verify_consistency(0, size, merkle.empty_root, roots_by_size[size], [])


def test_the_leaf_of_an_event_is_the_leaf_of_its_chain_link() -> None:
    previous, canonical = bytes(32), b'{"id":"E1"}'
    link = hashlib.sha256(previous + canonical).digest()
    assert merkle.leaf_of_event(previous, canonical) == merkle.leaf_hash(link)


def test_what_is_not_in_the_tree_has_no_proof() -> None:
    with pytest.raises(ValueError, match="leaf 3 is not in a tree of 3"):
        merkle.Tree(leaves[:3]).inclusion_proof(3)
    with pytest.raises(ValueError, match="no consistency proof from 4 to 3 leaves"):
        merkle.Tree(leaves[:3]).consistency_proof(4)
    assert not merkle.verify_inclusion(3, 3, leaves[0], [], merkle.Tree(leaves[:3]).root())
