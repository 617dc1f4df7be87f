"""A clamd of our own on a socket in a folder, configured from an ingest policy (tests and
benchmarks; clamav-daemon package)."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from arkhiv.ingest.virus import clamd_configuration
from arkhiv.policies.ingest import IngestPolicy


def start_clamd(
    folder: Path, database: Path, policy: IngestPolicy, *, alert_exceeds_max: bool = True
) -> subprocess.Popen:
    """clamd answering PING on `folder/clamd.sock`; RuntimeError with its log if it does not."""
    sock = folder / "clamd.sock"
    (folder / "tmp").mkdir(parents=True)
    config = clamd_configuration(
        policy,
        socket_path=sock,
        database=database,
        temporary=folder / "tmp",
        log=folder / "clamd.log",
    )
    if not alert_exceeds_max:
        config = config.replace("AlertExceedsMax yes", "AlertExceedsMax no")
    (folder / "clamd.conf").write_text(config)
    process = subprocess.Popen(
        ["clamd", f"--config-file={folder / 'clamd.conf'}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with socket.socket(socket.AF_UNIX) as probe:
                probe.connect(str(sock))
                probe.sendall(b"zPING\0")
                if probe.recv(16).startswith(b"PONG"):
                    return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    process.wait()
    log = (folder / "clamd.log").read_text() if (folder / "clamd.log").exists() else ""
    raise RuntimeError(f"clamd did not start: {log[-2000:]}")
