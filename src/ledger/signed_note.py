"""Signed notes (C2SP signed-note, Go's golang.org/x/mod/sumdb/note) with Ed25519, and the
transparency-log checkpoints (C2SP tlog-checkpoint) they carry: the format in which Go's checksum
database, Sigstore's Rekor v2 and the transparency-dev witnesses publish their tree heads, so a
checkpoint of the ledger's audit tree can be checked by their tools as well as by `ledger audit
check`.

A note is text (lines, each ending in a newline), a blank line, then signature lines
`— <key name> <base64(key id || signature)>`; the signature is over the text. A key id is the first
4 bytes of SHA-256(key name || "\\n" || 0x01 || Ed25519 public key). Keys are written as
- signer (secret): `PRIVATE+KEY+<name>+<key id hex>+<base64(0x01 || 32-byte seed)>`;
- verifier (public): `<name>+<key id hex>+<base64(0x01 || 32-byte public key)>`.
A checkpoint's text is `<origin>\\n<tree size>\\n<base64 root hash>\\n`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ed25519_type = b"\x01"
signature_dash = "\u2014"  # an em dash, then a space, starts every signature line
_name = re.compile(r"[^\s+]+")


class NoteError(ValueError):
    """A key, note or checkpoint that cannot be used; says why."""


def key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ed25519_type + public_key).digest()[:4]


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _key_parts(text: str, what: str) -> tuple[str, bytes, bytes]:
    """(name, key id, key bytes) of `<name>+<id hex>+<base64(type || key)>`."""
    parts = text.split("+", 2)  # the base64 key may hold "+" too
    if (
        len(parts) != 3
        or not _name.fullmatch(parts[0])
        or not re.fullmatch(r"[0-9a-f]{8}", parts[1])
    ):
        raise NoteError(f"not a {what} key (<name>+<8 hex digits>+<base64 key>)")
    try:
        raw = base64.b64decode(parts[2], validate=True)
    except binascii.Error as error:
        raise NoteError(f"the {what} key's base64 is malformed: {error}") from error
    if len(raw) != 33 or raw[:1] != ed25519_type:
        raise NoteError(f"the {what} key is not an Ed25519 key (type 0x01 and 32 bytes)")
    return parts[0], bytes.fromhex(parts[1]), raw[1:]


@dataclass(frozen=True)
class Verifier:
    name: str
    key_id: bytes
    public_key: Ed25519PublicKey

    @classmethod
    def parse(cls, text: str) -> Verifier:
        name, hint, raw = _key_parts(text.strip(), "verifier")
        if key_id(name, raw) != hint:
            raise NoteError("the verifier key's id does not match its name and key")
        return cls(name, hint, Ed25519PublicKey.from_public_bytes(raw))

    def __str__(self) -> str:
        encoded = base64.b64encode(ed25519_type + _raw_public(self.public_key)).decode()
        return f"{self.name}+{self.key_id.hex()}+{encoded}"


@dataclass(frozen=True)
class Signer:
    name: str
    key_id: bytes
    private_key: Ed25519PrivateKey

    @classmethod
    def parse(cls, text: str) -> Signer:
        text = text.strip()
        if not text.startswith("PRIVATE+KEY+"):
            raise NoteError("not a signer key (PRIVATE+KEY+<name>+<8 hex digits>+<base64 key>)")
        name, hint, seed = _key_parts(text.removeprefix("PRIVATE+KEY+"), "signer")
        private = Ed25519PrivateKey.from_private_bytes(seed)
        if key_id(name, _raw_public(private.public_key())) != hint:
            raise NoteError("the signer key's id does not match its name and key")
        return cls(name, hint, private)

    @classmethod
    def generate(cls, name: str) -> Signer:
        if not _name.fullmatch(name):
            raise NoteError(f"a key name is non-empty, with no space or '+': {name!r}")
        private = Ed25519PrivateKey.generate()
        return cls(name, key_id(name, _raw_public(private.public_key())), private)

    @property
    def verifier(self) -> Verifier:
        return Verifier(self.name, self.key_id, self.private_key.public_key())

    def __str__(self) -> str:
        seed = self.private_key.private_bytes_raw()
        encoded = base64.b64encode(ed25519_type + seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.key_id.hex()}+{encoded}"

    def __repr__(self) -> str:  # never the secret in a log line or a traceback
        return f"Signer({self.name!r}, {self.key_id.hex()})"

    def sign(self, text: str) -> str:
        """The note: `text` (lines ending in newlines), a blank line, this key's signature."""
        if not text.endswith("\n") or "\n\n" in text:
            raise NoteError("a note's text is non-empty lines, each ending in a newline")
        signature = self.private_key.sign(text.encode())
        blob = base64.b64encode(self.key_id + signature).decode()
        return f"{text}\n{signature_dash} {self.name} {blob}\n"


def open_note(note: str, verifier: Verifier) -> str:
    """The text of `note` if `verifier`'s key signed it; NoteError otherwise."""
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise NoteError("not a signed note (text, a blank line, signature lines)")
    text, signatures = note[: split + 1], note[split + 2 :].splitlines()
    for line in signatures:
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != signature_dash or parts[1] != verifier.name:
            continue
        try:
            blob = base64.b64decode(parts[2], validate=True)
        except binascii.Error:
            continue
        if blob[:4] != verifier.key_id:
            continue
        try:
            verifier.public_key.verify(blob[4:], text.encode())
        except InvalidSignature as error:
            raise NoteError(f"the signature of {verifier.name} does not verify") from error
        return text
    raise NoteError(f"the note has no signature by {verifier.name}+{verifier.key_id.hex()}")


def checkpoint_text(origin: str, size: int, root: bytes) -> str:
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"


def parse_checkpoint(text: str) -> tuple[str, int, bytes]:
    """(origin, tree size, root hash) of a checkpoint's text."""
    lines = text.split("\n")
    if len(lines) < 4 or not lines[0] or not lines[1].isdigit():
        raise NoteError("not a checkpoint (origin, tree size, base64 root hash)")
    try:
        root = base64.b64decode(lines[2], validate=True)
    except binascii.Error as error:
        raise NoteError(f"the checkpoint's root hash is not base64: {error}") from error
    return lines[0], int(lines[1]), root
