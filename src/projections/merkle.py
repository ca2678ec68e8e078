"""Merkle trees of RFC 9162 (Certificate Transparency 2.0, section 2.1) over a tenant's audit chain:
tree heads, inclusion proofs and consistency proofs, and their verification. Pure: bytes in, bytes
out; `projections.audit_proofs` reads the leaves.

The hash chain (`projections.audit_chain`) shows tampering to whoever recomputes it from the store,
but to convince someone outside that one event is in the ledger, or that the ledger they saw last
month is a prefix of today's, it needs every event in between. A Merkle tree over the same chain
answers both in O(log n) hashes: a tree head (size, root) can be kept anywhere (printed into a
board pack, sent to an auditor, published), and later

- an inclusion proof shows that an event is leaf `index` of the tree of that head;
- a consistency proof shows that the tree of an older head is a prefix of a newer one: nothing the
  holder of the older head saw was changed, removed or reordered since.

Leaf i (0-based) is link i + 1 of the chain: its data are the 32 bytes of hash_{i+1} =
SHA-256(hash_i || canonical JSON of event i + 1). The tree commits to the chain, so to every event;
an inclusion proof comes with the previous link, from which a verifier recomputes the leaf out of
the event itself (`leaf_of_event`), needing no trust in the ledger's copy of the link.

Hashes as in RFC 9162 with SHA-256: leaf = SHA-256(0x00 || data), node = SHA-256(0x01 || left ||
right), the empty tree's root = SHA-256(""); a tree of n > 1 leaves splits at the largest power of
two below n. The algorithms are the RFC's (2.1.3 and 2.1.4), checked against the reference vectors
of the Certificate Transparency implementations.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

empty_root = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def leaf_of_event(previous_link: bytes, canonical_event: bytes) -> bytes:
    """The leaf hash of the chain link made from the previous link and an event's canonical
    JSON (`audit_chain.hashed_document`, canonicalised)."""
    return leaf_hash(hashlib.sha256(previous_link + canonical_event).digest())


class Tree:
    """A tree of leaf hashes with every level kept: node j of level k is MTH of the leaves
    [j * 2^k, min((j + 1) * 2^k, size)) (adjacent nodes paired, a lone last node carried up
    unchanged, which is the RFC's split at the largest power of two). Built in size - 1 hashes;
    then the root, the root of any prefix and every proof are O(log size) lookups, since each
    range the RFC's recursions ask for is such a node or a few of them."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.size = len(leaves)
        self.levels: list[list[bytes]] = [list(leaves)]
        level = self.levels[0]
        while len(level) > 1:
            paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                paired.append(level[-1])
            self.levels.append(paired)
            level = paired

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first `size` leaves (default: all)."""
        size = self.size if size is None else size
        if not 0 <= size <= self.size:
            raise ValueError(f"no tree of {size} in a tree of {self.size}")
        return self._mth(0, size) if size else empty_root

    def _mth(self, start: int, end: int) -> bytes:
        width = end - start
        level = (width - 1).bit_length()  # the smallest level whose nodes span `width` leaves
        if start % (1 << level) == 0 and (width == 1 << level or end == self.size):
            return self.levels[level][start >> level]
        k = _split(width)
        return node_hash(self._mth(start, start + k), self._mth(start + k, end))

    def inclusion_proof(self, index: int) -> list[bytes]:
        """PATH(index, D[size]) (RFC 9162 2.1.3.1), leaf-side hash first."""
        if not 0 <= index < self.size:
            raise ValueError(f"leaf {index} is not in a tree of {self.size}")
        proof: list[bytes] = []
        start, end = 0, self.size
        while end - start > 1:
            k = _split(end - start)
            if index - start < k:
                proof.append(self._mth(start + k, end))
                end = start + k
            else:
                proof.append(self._mth(start, start + k))
                start += k
        proof.reverse()
        return proof

    def consistency_proof(self, first: int) -> list[bytes]:
        """PROOF(first, D[size]) (RFC 9162 2.1.4.1): the tree of the first `first` leaves is a
        prefix of this one."""
        if not 0 < first <= self.size:
            raise ValueError(f"no consistency proof from {first} to {self.size} leaves")
        proof: list[bytes] = []
        start, end, whole = 0, self.size, True
        m = first
        while m != end - start:
            k = _split(end - start)
            if m <= k:
                proof.append(self._mth(start + k, end))
                end = start + k
            else:
                proof.append(self._mth(start, start + k))
                start, m, whole = start + k, m - k, False
        if not whole:
            proof.append(self._mth(start, end))
        proof.reverse()
        return proof


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], expected_root: bytes
) -> bool:
    """RFC 9162 2.1.3.2."""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == expected_root


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 2.1.4.2 (a tree is consistent with itself by an empty proof, and the empty tree
    with every tree)."""
    if first == second:
        return not proof and first_root == second_root
    if first == 0:
        return not proof and first_root == empty_root
    if not 0 < first < second or not proof:
        return False
    path = list(proof)
    if first & (first - 1) == 0:  # an exact power of two: the first tree is a node of the proof
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == first_root and sr == second_root
