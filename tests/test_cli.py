import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import arkhiv_command, subprocess_env


def run(*args, env, check=True):
    result = subprocess.run(arkhiv_command(*args), env=env, capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture
def env(archive_env):
    return subprocess_env(archive_env)


def test_fresh_archive_status_reports_three_stores_no_objects_and_the_policy(env):
    init = json.loads(run("init", "--json", env=env).stdout)
    assert init["created"] is True
    report = json.loads(run("status", "--json", env=env).stdout)
    assert len(report["stores"]) == 3
    assert len({store["region"] for store in report["stores"]}) == 3
    assert all(store["reachable"] and store["writable"] for store in report["stores"])
    assert all(store["registered"] for store in report["stores"])
    assert report["objects"] == {"total": 0, "by_status": {}}
    assert report["catalog"]["up_to_date"] is True
    assert report["policy"]["preservation"] == {
        "min_copies": 3,
        "min_regions": 2,
        "audit_interval_days": 90.0,
        "digest_algorithms": ["sha512", "sha256"],
    }
    assert report["policy"]["location"]["public_precision_km"] == 25
    assert "partner" in report["policy"]["access"]["roles"]
    assert report["jobs"]["totals"] == {"queued": 0, "running": 0, "done": 0, "dead": 0}

    human = run("status", env=env).stdout
    assert "site-a" in human and "Policy: 3 copies" in human


def test_init_twice_keeps_the_existing_archive(env, archive_env):
    run("init", env=env)
    config = archive_env["ARKHIV_HOME"] + "/arkhiv.toml"
    with open(config, "a") as handle:
        handle.write("# the officer's note\n")
    second = json.loads(run("init", "--json", env=env).stdout)
    assert second["created"] is False
    assert Path(config).read_text().endswith("# the officer's note\n")


def test_jobs_commands(archive, env):
    job_id = archive.queue.enqueue("ingest", "test.reject")
    queued = json.loads(run("jobs", "list", "--json", env=env).stdout)
    assert [job["id"] for job in queued] == [job_id]
    run("worker", "--burst", env=env)
    shown = json.loads(run("jobs", "show", str(job_id), "--json", env=env).stdout)
    assert shown["status"] == "dead"
    assert shown["errors"][0]["error"] == "the package is not a bag"
    assert "not a bag" in run("jobs", "show", str(job_id), env=env).stdout
    assert "dead" in run("jobs", "list", "--status", "dead", env=env).stdout
    run("jobs", "retry", str(job_id), env=env)
    assert json.loads(run("status", "--json", env=env).stdout)["jobs"]["totals"]["queued"] == 1

    missing = run("jobs", "show", "999999", env=env, check=False)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "arkhiv: no job 999999"
    again = run("jobs", "retry", str(job_id), env=env, check=False)
    assert again.returncode == 1


def test_db_commands(archive, env):
    current = json.loads(run("db", "current", "--json", env=env).stdout)
    assert current["revision"] == current["head"]
    assert "->" in run("db", "upgrade", env=env).stdout


def test_usage_errors_exit_2(env):
    assert run("no-such-command", env=env, check=False).returncode == 2
    assert run("status", "--bogus", env=env, check=False).returncode == 2


def test_help_explains_each_command(env):
    top = run("--help", env=env).stdout
    for command in ("init", "status", "worker", "serve", "db", "jobs"):
        assert command in top
    assert "--burst" in run("worker", "--help", env=env).stdout
