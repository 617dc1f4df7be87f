"""Settings: `ARKHIV_HOME/arkhiv.toml`, overridden by `ARKHIV_*` environment variables.

Nested keys are reached with a double underscore: `ARKHIV_CATALOG__URL`,
`ARKHIV_PRESERVATION__MIN_COPIES=2`, `ARKHIV_JOBS__LEASE_SECONDS=60`. Lists and tables take JSON
(`ARKHIV_JOBS__PLUGINS='["my.handlers"]'`). Every mistake becomes a `ConfigError` whose message is
one line naming the key.
"""

from __future__ import annotations

import os
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from arkhiv.errors import ConfigError
from arkhiv.policies import AccessPolicy, LocationPolicy, PreservationPolicy
from arkhiv.policies.ingest import IngestPolicy

CONFIG_FILE_NAME = "arkhiv.toml"
ENV_PREFIX = "ARKHIV_"
DEFAULT_HOME = Path("arkhiv-data")

StoreName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CatalogSettings(_Section):
    url: str | None = Field(
        None,
        description="SQLAlchemy URL; default: the SQLite file catalog.sqlite in ARKHIV_HOME. "
        "Scale-out: postgresql+psycopg://user@host/db",
    )
    echo: bool = False


class _StoreSettings(_Section):
    name: StoreName
    region: str = Field(min_length=1, description="disaster-threat region label, e.g. eu-central")
    jurisdiction: str = Field("", description="legal jurisdiction, e.g. an ISO 3166 code")
    description: str = ""
    audit_interval_days: float | None = Field(
        None, gt=0, description="re-verify this store's replicas this often (default: the policy's)"
    )
    audit_bandwidth_mb_s: float | None = Field(
        None, gt=0, description="read this store at most this fast when auditing (MB/s)"
    )


class LocalStoreSettings(_StoreSettings):
    kind: Literal["local"]
    path: Path


class S3StoreSettings(_StoreSettings):
    kind: Literal["s3"]
    bucket: str = Field(min_length=3)
    prefix: str = ""
    endpoint_url: str | None = None
    region_name: str | None = Field(None, description="the S3 service's own region name")
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    max_attempts: int = Field(5, ge=1, description="tries per request before the store is down")
    trust_checksums: bool = Field(
        True,
        description="count a copy without reading it back when the service confirmed the "
        "SHA-256 of every part (only after a probe showed it refuses a wrong one); false: "
        "always read back (egress)",
    )


StoreSettings = Annotated[LocalStoreSettings | S3StoreSettings, Field(discriminator="kind")]


class JobSettings(_Section):
    lease_seconds: float = Field(
        300, gt=0, description="a job whose worker is silent this long is claimed again"
    )
    heartbeat_seconds: float | None = Field(None, gt=0, description="default: a third of the lease")
    poll_interval_seconds: float = Field(2.0, gt=0)
    max_attempts: int = Field(5, ge=1)
    backoff_base_seconds: float = Field(30, ge=0)
    backoff_max_seconds: float = Field(6 * 3600, ge=0)
    retention_days: float = Field(30, gt=0, description="finished jobs older than this are pruned")
    plugins: list[str] = Field(
        default_factory=list, description="extra modules that register job handlers"
    )

    @property
    def heartbeat_interval(self) -> float:
        return self.heartbeat_seconds or self.lease_seconds / 3


class ReconstructionSettings(_Section):
    on_ingest: bool = Field(
        True, description="queue a reconstruction for each archived capture without a model"
    )
    max_attempts: int = Field(
        3, ge=1, description="tries per reconstruction (a capture that cannot work fails once)"
    )
    max_image_side: int = Field(
        1600, ge=400, le=10000, description="photos are downscaled to this many pixels (long side)"
    )
    dense: Literal["auto", "cpu"] = Field(
        "auto", description="auto: COLMAP's PatchMatch when pycolmap has CUDA, else the CPU stereo"
    )
    threads: int = Field(0, ge=0, le=1024, description="0: every core of the worker's machine")


class SchedulerSettings(_Section):
    enabled: bool = True
    tick_seconds: float = Field(30, gt=0)
    lease_seconds: float = Field(120, gt=0, description="leadership lasts this long unless renewed")


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    embedded_worker: bool = Field(True, description="run jobs inside `arkhiv serve`")
    name: str = Field("Arkhiv", description="the repository's name (OAI-PMH, IIIF, DIPs)")
    admin_email: str = Field(
        "archive-admin@localhost", description="who harvesters write to (OAI-PMH Identify)"
    )
    oai_page_size: int = Field(100, ge=1, le=10000, description="records per OAI-PMH page")
    max_body_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="request bodies larger than this are refused (413) before any parsing or "
        "authentication, on every route but uploads and the submissions API",
    )
    max_form_bytes: int = Field(
        16 * 1024**2,
        ge=1024,
        description="the same bound for the two submission forms, which name one upload per "
        "file of a bag folder",
    )
    dip_retention_days: float = Field(
        7,
        gt=0,
        description="prepared dissemination packages are removed this long after they were "
        "made (asked for again, they are rebuilt)",
    )


class WebSettings(_Section):
    """Signing in to the web pages, and limits on what one client or user may do there."""

    session_idle_minutes: float = Field(
        120, gt=0, description="a signed-in session ends after this long without a request"
    )
    session_max_hours: float = Field(
        24 * 7, gt=0, description="a signed-in session ends this long after sign-in in any case"
    )
    secure_cookies: Literal["auto", "always", "never"] = Field(
        "auto",
        description="mark the session cookie Secure (sent over https only): auto = when the "
        "request came over https",
    )
    sign_in_attempts_per_minute: int = Field(
        10, ge=1, description="sign-in attempts allowed per client address and per user name"
    )
    uploads_per_hour: int = Field(
        2000,
        ge=1,
        description="resumable (tus) uploads one user may start per hour (a bag folder sent "
        "from the browser is one upload per file)",
    )
    upload_bytes_per_day: int = Field(
        50 * 1024**3, ge=1, description="bytes one user may upload per day"
    )
    map_tiles_url: str = Field(
        "https://tile.openstreetmap.org/{z}/{x}/{y}.png",
        description="the catalogue map's background tiles (empty: no background); the map "
        "only ever shows coarse grid cells",
    )
    map_tiles_attribution: str = Field("© OpenStreetMap contributors")

    @property
    def session_idle(self) -> timedelta:
        return timedelta(minutes=self.session_idle_minutes)

    @property
    def session_max(self) -> timedelta:
        return timedelta(hours=self.session_max_hours)


class IdentifierSettings(_Section):
    """Persistent identifiers (ARKs, see docs/aip.md)."""

    naan: str = Field(
        "99999",
        description="your Name Assigning Authority Number (register one, free, with the ARK "
        "Alliance); 99999 is reserved for tests and examples",
    )
    shoulder: str = Field("b3", description="betanumeric letters ending in a digit, e.g. b3")
    resolver: str = Field("https://n2t.net/", description="where citations resolve ARKs")

    @model_validator(mode="after")
    def _well_formed(self) -> IdentifierSettings:
        from arkhiv.identifiers import IdentifierError, check_naming

        try:
            check_naming(self.naan, self.shoulder)
        except IdentifierError as exc:
            raise ValueError(str(exc)) from None
        return self


class _EnvironmentWithoutHome(EnvSettingsSource):
    """ARKHIV_HOME chooses which archive to open (see `resolve_home`); once chosen, the home
    given explicitly must not be replaced by the environment's."""

    def __call__(self) -> dict[str, Any]:
        values = super().__call__()
        values.pop("home", None)
        return values


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    home: Path
    catalog: CatalogSettings = Field(default_factory=CatalogSettings)
    stores: list[StoreSettings] = Field(default_factory=list)
    preservation: PreservationPolicy = Field(default_factory=PreservationPolicy)
    access: AccessPolicy = Field(default_factory=AccessPolicy)
    location: LocationPolicy = Field(default_factory=LocationPolicy)
    ingest: IngestPolicy = Field(default_factory=IngestPolicy)
    jobs: JobSettings = Field(default_factory=JobSettings)
    reconstruction: ReconstructionSettings = Field(default_factory=ReconstructionSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    identifiers: IdentifierSettings = Field(default_factory=IdentifierSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML document arrives as init kwargs; the environment overrides it.
        return (_EnvironmentWithoutHome(settings_cls), init_settings)

    @model_validator(mode="after")
    def _resolve_and_check(self) -> Settings:
        self.home = self.home.expanduser().resolve()
        for store in self.stores:
            if isinstance(store, LocalStoreSettings) and not store.path.is_absolute():
                store.path = (self.home / store.path).resolve()
        names = [s.name for s in self.stores]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"stores: the name {duplicates[0]!r} is used twice")
        if self.stores:
            policy = self.preservation
            if policy.min_copies > len(self.stores):
                raise ValueError(
                    f"preservation.min_copies: {policy.min_copies} copies asked for but only "
                    f"{len(self.stores)} store(s) configured"
                )
            regions = {s.region for s in self.stores}
            if policy.min_regions > len(regions):
                raise ValueError(
                    f"preservation.min_regions: {policy.min_regions} regions asked for but the "
                    f"stores span {len(regions)} ({', '.join(sorted(regions))})"
                )
        return self

    @property
    def config_file(self) -> Path:
        return self.home / CONFIG_FILE_NAME

    @property
    def catalog_url(self) -> str:
        url = self.catalog.url or f"sqlite:///{self.home / 'catalog.sqlite'}"
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
            url = prefix + str(self.home / url[len(prefix) :])
        return url

    def store(self, name: str) -> StoreSettings:
        for store in self.stores:
            if store.name == name:
                return store
        raise ConfigError(f"no store named {name!r} in {self.config_file}")


def resolve_home(home: Path | str | None = None) -> Path:
    if home is None:
        home = os.environ.get(ENV_PREFIX + "HOME") or DEFAULT_HOME
    return Path(home).expanduser().resolve()


def load_settings(home: Path | str | None = None) -> Settings:
    """Read `HOME/arkhiv.toml` and the environment; raise ConfigError with a one-line reason."""
    home = resolve_home(home)
    config_file = home / CONFIG_FILE_NAME
    if not config_file.is_file():
        raise ConfigError(f"no archive at {home} ({CONFIG_FILE_NAME} missing): run `arkhiv init`")
    try:
        document = tomllib.loads(config_file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{config_file}: invalid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{config_file}: cannot read: {exc}") from None
    return settings_from_document(document, home, source=str(config_file))


def settings_from_document(document: dict[str, Any], home: Path, source: str) -> Settings:
    document = dict(document)
    if "home" in document:
        raise ConfigError(f"{source}: home: not a setting; set ARKHIV_HOME or use --home")
    try:
        return Settings(home=home, **document)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_validation_error(exc, document)}") from None
    except ValueError as exc:  # JSON in an environment variable that does not parse
        raise ConfigError(f"{source}: {exc}") from None


def describe_validation_error(exc: ValidationError, document: dict[str, Any]) -> str:
    """All problems on one line: `stores[1].kind: unknown store kind 'ftp' (expected ...)`."""
    parts = []
    for error in exc.errors():
        loc = [part for part in error["loc"] if part not in ("local", "s3")]
        key = _format_loc(loc, document)
        if error["type"] == "union_tag_invalid":
            tag = error.get("ctx", {}).get("tag")
            expected = error.get("ctx", {}).get("expected_tags", "local, s3")
            parts.append(f"{key}.kind: unknown store kind {tag!r} (expected one of {expected})")
        elif error["type"] == "union_tag_not_found":
            parts.append(f"{key}.kind: missing (expected one of 'local', 's3')")
        elif error["type"] == "missing":
            parts.append(f"{key}: missing, it is required")
        elif error["type"] == "extra_forbidden":
            parts.append(f"{key}: unknown setting")
        else:
            message = error["msg"].removeprefix("Value error, ")
            parts.append(f"{key}: {message}" if key else message)
        env_name = ENV_PREFIX + "__".join(str(p) for p in loc if not isinstance(p, int)).upper()
        if loc and env_name in os.environ:
            parts[-1] += f" (set by {env_name})"
    return "; ".join(parts)


def _format_loc(loc: list[Any], document: dict[str, Any]) -> str:
    text = ""
    node: Any = document
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
            if isinstance(node, list) and part < len(node):
                node = node[part]
                if isinstance(node, dict) and "name" in node:
                    text += f"({node['name']})"
        else:
            text += f".{part}" if text else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return text


def default_config_toml(home: Path) -> str:
    """The arkhiv.toml that `arkhiv init` writes: the embedded one-machine archive."""
    return f"""# Arkhiv configuration.
# ARKHIV_<SECTION>__<KEY> environment variables override any value in this file.
# Relative paths are relative to this file's folder ({home}).

[catalog]
# Embedded default: catalog.sqlite beside this file. Scale-out: a PostgreSQL URL such as
# url = "postgresql+psycopg://arkhiv@db.example.org/arkhiv"

# Three local stores labelled as separate sites. For real geographic separation replace them
# with disks in other buildings or S3 buckets in other regions:
# [[stores]]
# name = "s3-frankfurt"
# kind = "s3"
# bucket = "arkhiv-replica"
# region = "eu-central"
# jurisdiction = "DE"
# endpoint_url = "https://s3.eu-central-1.amazonaws.com"

[[stores]]
name = "site-a"
kind = "local"
path = "stores/site-a"
region = "site-a"
jurisdiction = "local"
description = "first local copy"

[[stores]]
name = "site-b"
kind = "local"
path = "stores/site-b"
region = "site-b"
jurisdiction = "local"
description = "second local copy"

[[stores]]
name = "site-c"
kind = "local"
path = "stores/site-c"
region = "site-c"
jurisdiction = "local"
description = "third local copy"

[preservation]
min_copies = 3
min_regions = 2
audit_interval_days = 90
digest_algorithms = ["sha512", "sha256"]

[location]
# The public and researchers see locations snapped to cells this many kilometres wide.
public_precision_km = 25
method = "grid"

[access]
anonymous_role = "public"
# Roles and their permissions default to: public, researcher, museum, partner, officer, admin.
# Override one with a table such as:
# [access.roles.researcher]
# permissions = ["view_public", "download_access_copies", "request_dips"]

[ingest]
# Decompression bombs: every reader checks what a file declares (points, mesh elements, pixels,
# decoded sizes) against these before decoding it, and refuses the package with the reason.
# What reading one file may allocate; larger files are not loaded whole (2 GiB).
memory_budget_bytes = 2147483648
# Declared decoded size / stored size of compressed geometry (LAZ: 5-15 in practice).
max_decoded_ratio = 200
# max_points = 10000000000
# max_mesh_elements = 4000000000
# max_image_pixels = 500000000

[identifiers]
# Objects are named ark:NAAN/SHOULDER... (docs/aip.md). 99999 is the ARK test number:
# register your institution's own NAAN (free) before archiving for real.
naan = "99999"
shoulder = "b3"
resolver = "https://n2t.net/"

[jobs]
lease_seconds = 300
max_attempts = 5
backoff_base_seconds = 30
retention_days = 30

[reconstruction]
# Every archived capture without a model gets a `reconstruct` job (docs/reconstruction.md).
on_ingest = true
max_attempts = 3
# Photos are matched and stereo-matched at this size (long side, pixels); larger is slower.
max_image_side = 1600
# "auto" uses COLMAP's PatchMatch stereo where pycolmap was built with CUDA, else the CPU stereo.
dense = "auto"
# Threads per reconstruction; 0 uses every core of the worker's machine.
threads = 0

[scheduler]
enabled = true

[server]
host = "127.0.0.1"
port = 8000
embedded_worker = true
# Request bodies over this are refused (413) before anything reads them; uploads and the
# submissions API stream to disk under the ingest limits instead.
max_body_bytes = 65536
# Prepared dissemination packages are removed after this many days (rebuilt when asked again).
dip_retention_days = 7
"""
