import subprocess
import tomllib

import pytest

from arkhiv.config import default_config_toml, load_settings, settings_from_document
from arkhiv.errors import ConfigError
from tests.conftest import arkhiv_command, subprocess_env


def default_document(home):
    return tomllib.loads(default_config_toml(home))


def test_default_configuration_has_three_local_sites(tmp_path):
    settings = settings_from_document(default_document(tmp_path), tmp_path, "arkhiv.toml")
    assert [s.name for s in settings.stores] == ["site-a", "site-b", "site-c"]
    assert {s.kind for s in settings.stores} == {"local"}
    assert len({s.region for s in settings.stores}) == 3
    assert settings.stores[0].path == tmp_path / "stores" / "site-a"
    assert settings.catalog_url == f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    assert settings.preservation.min_copies == 3
    assert settings.preservation.min_regions == 2
    assert settings.preservation.digest_algorithms == ["sha512", "sha256"]
    assert settings.access.allows("partner", "precise_location")
    assert not settings.access.allows("public", "precise_location")
    assert not settings.access.allows("researcher", "precise_location")


def test_environment_overrides_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("ARKHIV_PRESERVATION__MIN_COPIES", "2")
    monkeypatch.setenv("ARKHIV_CATALOG__URL", "postgresql+psycopg://db.example/arkhiv")
    monkeypatch.setenv("ARKHIV_JOBS__PLUGINS", '["a.b"]')
    settings = settings_from_document(default_document(tmp_path), tmp_path, "arkhiv.toml")
    assert settings.preservation.min_copies == 2
    assert settings.catalog_url == "postgresql+psycopg://db.example/arkhiv"
    assert settings.jobs.plugins == ["a.b"]


def test_explicit_home_wins_over_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ARKHIV_HOME", str(tmp_path / "elsewhere"))
    settings = settings_from_document(default_document(tmp_path), tmp_path, "arkhiv.toml")
    assert settings.home == tmp_path
    assert settings.stores[0].path == tmp_path / "stores" / "site-a"


def test_relative_sqlite_url_is_relative_to_home(tmp_path):
    document = default_document(tmp_path)
    document["catalog"]["url"] = "sqlite:///db/catalog.sqlite"
    settings = settings_from_document(document, tmp_path, "arkhiv.toml")
    assert settings.catalog_url == f"sqlite:///{tmp_path / 'db/catalog.sqlite'}"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: d["stores"][1].update(kind="ftp"),
            "stores[1](site-b).kind: unknown store kind 'ftp'",
        ),
        (lambda d: d["stores"][2].pop("path"), "stores[2](site-c).path: missing"),
        (lambda d: d["stores"][0].pop("region"), "stores[0](site-a).region: missing"),
        (lambda d: d["jobs"].update(lease_secs=3), "jobs.lease_secs: unknown setting"),
        (lambda d: d["preservation"].update(min_copies=5), "preservation.min_copies: 5 copies"),
        (lambda d: d["preservation"].update(min_regions=4), "preservation.min_regions: 4 regions"),
        (
            lambda d: d["preservation"].update(digest_algorithms=["sha256"]),
            "preservation.digest_algorithms: must include sha512",
        ),
        (lambda d: d["stores"][1].update(name="site-a"), "the name 'site-a' is used twice"),
        (lambda d: d["server"].update(port=0), "server.port:"),
        (
            lambda d: d["access"].update(anonymous_role="nobody"),
            "anonymous_role 'nobody' is not one of the roles",
        ),
        (
            lambda d: d["location"].update(log_precise_access=False),
            "location.log_precise_access: ",
        ),
    ],
)
def test_bad_configuration_names_the_key(tmp_path, mutate, expected):
    document = default_document(tmp_path)
    mutate(document)
    with pytest.raises(ConfigError) as caught:
        settings_from_document(document, tmp_path, "arkhiv.toml")
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message
    assert message.startswith("arkhiv.toml: ")


def test_bad_value_from_environment_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("ARKHIV_JOBS__MAX_ATTEMPTS", "many")
    with pytest.raises(
        ConfigError, match=r"jobs\.max_attempts: .*set by ARKHIV_JOBS__MAX_ATTEMPTS"
    ):
        settings_from_document(default_document(tmp_path), tmp_path, "arkhiv.toml")


def test_missing_archive_says_run_init(tmp_path):
    with pytest.raises(ConfigError, match="run `arkhiv init`"):
        load_settings(tmp_path / "nowhere")


BROKEN_CONFIGS = {
    "unknown store kind": (
        lambda text: text.replace('kind = "local"', 'kind = "floppy"', 1),
        "stores[0](site-a).kind: unknown store kind 'floppy'",
    ),
    "missing path": (
        lambda text: text.replace('path = "stores/site-b"\n', "", 1),
        "stores[1](site-b).path: missing",
    ),
    "bad TOML": (
        lambda text: text.replace("min_copies = 3", "min_copies = = 3", 1),
        "invalid TOML",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN_CONFIGS))
def test_cli_exits_2_with_one_line_on_a_broken_config(tmp_path, case):
    home = tmp_path / "home"
    env = subprocess_env({"ARKHIV_HOME": str(home)})
    subprocess.run(arkhiv_command("init"), env=env, check=True, capture_output=True)
    config = home / "arkhiv.toml"
    mutate, expected = BROKEN_CONFIGS[case]
    config.write_text(mutate(config.read_text()))
    for command in (["status"], ["status", "--json"], ["worker", "--burst"], ["init"]):
        result = subprocess.run(arkhiv_command(*command), env=env, capture_output=True, text=True)
        assert result.returncode == 2, (command, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert expected in lines[0]
        assert str(config) in lines[0]
        assert result.stdout == ""


def test_cli_without_an_archive_exits_2(tmp_path):
    env = subprocess_env({"ARKHIV_HOME": str(tmp_path / "empty")})
    result = subprocess.run(arkhiv_command("status"), env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert "run `arkhiv init`" in result.stderr


def test_unreachable_catalog_exits_2(tmp_path):
    env = subprocess_env(
        {
            "ARKHIV_HOME": str(tmp_path / "home"),
            "ARKHIV_CATALOG__URL": "postgresql+psycopg://nobody@127.0.0.1:1/none",
        }
    )
    subprocess.run(arkhiv_command("init"), env=env, capture_output=True)
    result = subprocess.run(arkhiv_command("status"), env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert "cannot open the catalog postgresql+psycopg://nobody@127.0.0.1:1/none" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
