"""The archive key survives the loss of its file: SLIP-39 shares on paper rebuild it, any
threshold of them; fewer rebuild nothing and say so; a rebuilt key is never written over
another one."""

from __future__ import annotations

import json
import stat
import subprocess

import pytest

from arkhiv.access.disclosure import precise_locations
from arkhiv.access.viewers import Viewer
from arkhiv.archive import Archive
from tests.conftest import arkhiv_command
from tests.test_submit import berlin_bag, env, submit

__all__ = ["env"]


def keys(env, *args: str, given: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        arkhiv_command("keys", *args), env=env, input=given, capture_output=True, text=True
    )


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_a_lost_key_is_rebuilt_from_any_three_of_five_shares_and_not_from_two(
    archive, env, corpora, tmp_path
):
    code, report = submit(berlin_bag(corpora, tmp_path / "berlin"), env)
    assert code == 0, report
    object_id = report["object_id"]
    original = archive.key_file.read_bytes()

    split = keys(env, "split", "--shares", "5", "--threshold", "3", "--json")
    assert split.returncode == 0, split.stderr
    made = json.loads(split.stdout)
    shares = made["shares"]
    assert len(shares) == 5 and len(set(shares)) == 5
    assert all(len(share.split()) == 33 for share in shares)  # 256-bit secret: 33 words
    assert original.hex() not in split.stdout
    status = json.loads(keys(env, "status", "--json").stdout)
    [(key_id, sealed)] = status["sealed_locations_by_key"].items()
    assert key_id == made["key_id"] and sealed >= 3  # each photo's GPS, at least

    archive.key_file.unlink()  # the building is gone
    lost = keys(env, "status")
    assert lost.returncode != 0 and "missing" in lost.stdout + lost.stderr

    two = keys(env, "recover", given="\n".join(shares[:2]) + "\n")
    assert two.returncode == 1 and "3 are needed" in two.stderr, two.stderr
    assert not archive.key_file.exists()
    misspelt = shares[1].split()
    misspelt[7] = "academic" if misspelt[7] != "academic" else "acid"
    wrong = keys(env, "recover", given="\n".join([shares[0], " ".join(misspelt), shares[4]]))
    assert wrong.returncode == 1 and "not valid" in wrong.stderr
    assert " ".join(misspelt[:4]) not in wrong.stderr  # no part of a share is echoed
    assert not archive.key_file.exists()

    three = keys(env, "recover", "--json", given="\n\n".join([shares[4], shares[0], shares[2]]))
    assert three.returncode == 0, three.stderr
    recovered = json.loads(three.stdout)
    assert recovered["written"] and recovered["sealed_under_this_key"] == sealed
    assert archive.key_file.read_bytes() == original
    assert stat.S_IMODE(archive.key_file.stat().st_mode) == 0o600
    partner = Viewer("pat", "partner", archive.settings.access)
    reopened = Archive.open(archive.settings.home)
    try:
        assert len(precise_locations(reopened, partner, object_id, "recovery drill")) == sealed
    finally:
        reopened.close()
    again = keys(env, "recover", "--json", given="\n".join(shares[1:4]))
    assert again.returncode == 0 and json.loads(again.stdout)["written"] is False

    # Shares of another archive's key never replace the key in place.
    other = keys(env, "recover", given="\n".join(_shares_of(bytes(range(32)))))
    assert other.returncode == 1 and "holds another key" in other.stderr
    assert archive.key_file.read_bytes() == original


def _shares_of(key: bytes) -> list[str]:
    from arkhiv.security.escrow import split_key

    return split_key(key, 3, 2)[:2]
