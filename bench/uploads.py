"""Resumable uploads: a file sent through Arkhiv's tus endpoint against `cp` + `sync`.

Starts `arkhiv serve` (uvicorn, no worker) on a throw-away archive, then sends one random file
of `--megabytes` through `/uploads` in chunks of each `--chunks` size (KiB), with an API token,
from a Python client (httpx) on loopback. Each PATCH is appended to disk and fsynced before it
is answered, as a phone's connection may drop after any of them. The baseline writes the same
file with `cp` and `sync`: the least it costs to receive those bytes onto the same disk.

Prints wall time, MB/s, the ratio, and the server's peak RSS (it must not grow with the file:
bodies are streamed to disk)."""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2 as httpx

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))

from arkhiv.access.viewers import create_user, issue_token  # noqa: E402
from arkhiv.archive import Archive  # noqa: E402
from arkhiv.catalog.database import writing  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def upload(base: str, token: str, path: Path, chunk: int) -> float:
    size = path.stat().st_size
    headers = {"Tus-Resumable": "1.0.0", "Authorization": f"Bearer {token}"}
    started = time.perf_counter()
    with httpx.Client(timeout=120) as client, path.open("rb") as source:
        created = client.post(base + "/uploads", headers={**headers, "Upload-Length": str(size)})
        created.raise_for_status()
        location = base + created.headers["location"]
        offset = 0
        while offset < size:
            data = source.read(chunk)
            answer = client.patch(
                location,
                content=data,
                headers={
                    **headers,
                    "Upload-Offset": str(offset),
                    "Content-Type": "application/offset+octet-stream",
                },
            )
            answer.raise_for_status()
            offset = int(answer.headers["upload-offset"])
        client.delete(location, headers=headers)
    return time.perf_counter() - started


def baseline(path: Path, work: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["cp", str(path), str(work / "copy")], check=True)
    subprocess.run(["sync"], check=True)
    elapsed = time.perf_counter() - started
    (work / "copy").unlink()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=1000)
    parser.add_argument("--chunks", default="512,4096", help="chunk sizes in KiB")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="arkhiv-bench-uploads-") as folder:
        work = Path(folder)
        home = work / "home"
        archive, _ = Archive.initialize(home)
        with writing(archive.engine) as conn:
            create_user(conn, archive.settings.access, "bench", "museum")
            _id, token = issue_token(conn, "bench")
        archive.close()
        source = work / "capture.bin"
        with source.open("wb") as handle:
            for _ in range(args.megabytes):
                handle.write(secrets.token_bytes(1 << 20))
        size_mb = source.stat().st_size / 1e6
        port = free_port()
        env = {
            **os.environ,
            "ARKHIV_HOME": str(home),
            "ARKHIV_WEB__UPLOAD_BYTES_PER_DAY": str(1 << 50),
            "ARKHIV_INGEST__MAX_PACKAGE_BYTES": str(1 << 40),
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "arkhiv", "serve", "--no-worker", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    if httpx.get(base + "/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            reference = min(baseline(source, work) for _ in range(2))
            print(
                f"{size_mb:.0f} MB; cp + sync: {reference:.2f} s ({size_mb / reference:.0f} MB/s)"
            )
            for kib in (int(k) for k in args.chunks.split(",")):
                elapsed = upload(base, token, source, kib << 10)
                print(
                    f"tus, {kib} KiB chunks: {elapsed:.2f} s ({size_mb / elapsed:.0f} MB/s), "
                    f"{elapsed / reference:.2f}x cp + sync"
                )
            print(f"server peak RSS: {peak_rss_mib(server.pid):.0f} MiB")
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
