"""Set-up shared by the benchmarks that need an archive: a bag of random files with capture
metadata, a one-signature ClamAV database, and a submission ingested up to `accepted`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from bag_validation import make_payload
from ingest import CAPTURE

from arkhiv.archive import Archive
from arkhiv.ingest.bagging import make_bag
from arkhiv.jobs.ingest import process_submission, receive_submission


def random_bag(work: Path, megabytes: int, files: int, seed: int) -> tuple[Path, int]:
    """(bag folder, payload bytes): `files` random files, ~`megabytes` in all."""
    payload = work / "payload"
    size = make_payload(payload, megabytes << 20, files, seed=seed)
    bag = make_bag(payload, work / "bag", capture_metadata=CAPTURE)
    shutil.rmtree(payload)
    return bag, size


def test_signatures(work: Path) -> Path:
    """A ClamAV database with one signature: the engine still reads every byte."""
    signatures = work / "signatures"
    signatures.mkdir()
    (signatures / "bench.ndb").write_text("Bench:0:*:" + b"ARKHIV-BENCH".hex() + "\n")
    return signatures


def accepted_submission(work: Path, bag: Path, **settings: str) -> tuple[Path, str]:
    """(ARKHIV_HOME, submission id) of `bag` ingested and accepted in a new archive, not yet
    archived. `settings`: extra ARKHIV_* environment for the archive."""
    os.environ["ARKHIV_INGEST__CLAMAV_DATABASE"] = str(test_signatures(work))
    os.environ.update(settings)
    home = work / "home"
    archive, _ = Archive.initialize(home)
    try:
        submission_id, _job, problems = receive_submission(archive, bag)
        assert not problems, problems
        outcome = process_submission(archive, submission_id)
        assert outcome["status"] == "accepted", outcome
    finally:
        archive.close()
    return home, submission_id
