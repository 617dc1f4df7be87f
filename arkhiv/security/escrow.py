"""The archive key on paper: SLIP-39 mnemonic shares (Shamir's secret sharing, the standard
hardware wallets use, through the `shamir-mnemonic` reference implementation), any `threshold`
of which rebuild it.

An archive whose key file is lost, with its building, loses every sealed location unless the
key can be rebuilt; a key kept whole in one place is lost, or stolen, with that place. Shares
given to officers in different places survive the loss of some of them and give nothing to
whoever holds fewer than the threshold. The shares carry the key itself, so whoever gathers
the threshold holds the key: hand them only to people the archive trusts with every location.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from arkhiv.security.sealing import KEY_BYTES, ArchiveKey, SealingError

MAX_SHARES = 16  # SLIP-39's limit for one group


class EscrowError(Exception):
    """The shares cannot be made, or cannot rebuild a key: the message says why."""


@dataclass(frozen=True)
class Recovered:
    key: bytes
    key_id: str
    shares_used: int


def split_key(key: bytes, shares: int, threshold: int) -> list[str]:
    """The key as `shares` mnemonics (20 or 33 words each), any `threshold` of which rebuild
    it."""
    import shamir_mnemonic

    if len(key) != KEY_BYTES:
        raise EscrowError(f"an archive key has {KEY_BYTES} bytes, this one {len(key)}")
    if not 1 <= threshold <= shares <= MAX_SHARES:
        raise EscrowError(
            f"give 1 <= threshold <= shares <= {MAX_SHARES} (got {threshold} of {shares})"
        )
    if threshold == 1 and shares > 1:
        # SLIP-39 forbids it: every share would be the key alone, under a different name.
        raise EscrowError("a threshold of 1 makes every share the whole key; use at least 2")
    [group] = shamir_mnemonic.generate_mnemonics(1, [(threshold, shares)], key)
    return group


def combine_shares(mnemonics: list[str]) -> Recovered:
    """The key from mnemonics, or EscrowError saying what is missing or wrong (too few, from
    different splits, a word misspelt: SLIP-39's checksum catches one)."""
    import shamir_mnemonic

    cleaned = [" ".join(text.split()).lower() for text in mnemonics if text.strip()]
    if not cleaned:
        raise EscrowError("no shares given")
    try:
        groups = shamir_mnemonic.decode_mnemonics(cleaned)
    except shamir_mnemonic.MnemonicError as exc:
        # Its message quotes the share's first words: nothing of a share goes to a log.
        why = str(exc).split(' for "')[0].rstrip(".")
        raise EscrowError(f"a share is not valid ({why}): check every word") from None
    # Arkhiv splits into one group: say plainly how many more are needed.
    if len(groups) == 1:
        [members] = groups.values()
        needed = next(iter(members)).member_threshold
        if len(members) < needed:
            raise EscrowError(
                f"{len(members)} share(s) given, {needed} are needed: without them no "
                "location can be decrypted; find the others"
            )
    try:
        key = shamir_mnemonic.combine_mnemonics(cleaned)
    except shamir_mnemonic.MnemonicError as exc:
        raise EscrowError(f"the shares do not rebuild a key: {exc}") from None
    return Recovered(key, ArchiveKey(key).key_id, len(cleaned))


def install_key(recovered: Recovered, path: Path) -> bool:
    """Write the rebuilt key where the archive reads it (0600, never over another key). True
    when written; False when the same key is there already; EscrowError when a different key
    is."""
    if path.exists():
        try:
            present = ArchiveKey.load(path)
        except SealingError as exc:
            raise EscrowError(f"{path} is there but cannot be read ({exc}); move it away") from None
        if present.key_id == recovered.key_id:
            return False
        raise EscrowError(
            f"{path} holds another key ({present.key_id}, the shares give {recovered.key_id}): "
            "nothing was changed; move it away first if it is the wrong one"
        )
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(recovered.key)
        handle.flush()
        os.fsync(handle.fileno())
    return True
