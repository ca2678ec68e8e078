"""Signed notes and checkpoints (`ledger.signed_note`): byte for byte the known answer of Go's
golang.org/x/mod/sumdb/note (so Go's, Sigstore's and the transparency-dev tools read ours), and
every key or note that is not right refused with the reason."""

from __future__ import annotations

import pytest

from ledger.signed_note import (
    NoteError,
    Signer,
    Verifier,
    checkpoint_text,
    open_note,
    parse_checkpoint,
)

# The example of golang.org/x/mod/sumdb/note's documentation and tests.
go_signer_key = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
go_verifier_key = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
go_text = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
go_note = (
    go_text + "\n\u2014 PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


def test_the_go_known_answer() -> None:
    signer = Signer.parse(go_signer_key)
    assert signer.sign(go_text) == go_note
    assert str(signer) == go_signer_key
    assert str(signer.verifier) == go_verifier_key
    assert open_note(go_note, Verifier.parse(go_verifier_key)) == go_text
    assert go_signer_key not in repr(signer)


def test_a_note_changed_or_signed_by_another_key_does_not_open() -> None:
    verifier = Verifier.parse(go_verifier_key)
    with pytest.raises(NoteError, match="the signature of PeterNeumann does not verify"):
        open_note(go_note.replace("cryptography", "cryptographY"), verifier)
    other = Signer.generate("PeterNeumann")  # the same name, another key: another key id
    with pytest.raises(NoteError, match="no signature by PeterNeumann\\+"):
        open_note(go_note, other.verifier)
    with pytest.raises(NoteError, match="not a signed note"):
        open_note(go_text, verifier)
    # A note signed by two keys opens with either.
    both = go_note + other.sign(go_text).split("\n\n", 1)[1]
    assert open_note(both, verifier) == open_note(both, other.verifier) == go_text


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("PeterNeumann+c74f20a3+ARpc", "not a signer key"),
        ("PRIVATE+KEY+Peter Neumann+c74f20a3+AYEK", "not a signer key"),
        ("PRIVATE+KEY+PeterNeumann+c74f20a3+not*base64", "base64 is malformed"),
        ("PRIVATE+KEY+PeterNeumann+c74f20a3+AAAA", "not an Ed25519 key"),
        (go_signer_key.replace("c74f20a3", "c74f20a4"), "id does not match"),
    ],
)
def test_a_malformed_signer_key_is_refused_with_the_reason(key: str, reason: str) -> None:
    with pytest.raises(NoteError, match=reason):
        Signer.parse(key)


def test_a_malformed_verifier_key_is_refused_with_the_reason() -> None:
    with pytest.raises(NoteError, match="id does not match"):
        Verifier.parse(go_verifier_key.replace("PeterNeumann", "Peter"))
    with pytest.raises(NoteError, match="not a verifier key"):
        Verifier.parse("PeterNeumann")
    with pytest.raises(NoteError, match="a key name is non-empty"):
        Signer.generate("two words")


def test_a_generated_key_round_trips_and_signs_checkpoints() -> None:
    signer = Signer.generate("ledger.example.com")
    again = Signer.parse(str(signer))
    assert str(again.verifier) == str(signer.verifier)
    text = checkpoint_text("ledger.example.com/acme", 42, bytes(range(32)))
    assert text == "ledger.example.com/acme\n42\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"
    opened = open_note(signer.sign(text), Verifier.parse(str(signer.verifier)))
    assert parse_checkpoint(opened) == ("ledger.example.com/acme", 42, bytes(range(32)))
    with pytest.raises(NoteError, match="not a checkpoint"):
        parse_checkpoint("origin\nmany\n")
    with pytest.raises(NoteError, match="each ending in a newline"):
        signer.sign("no newline")
