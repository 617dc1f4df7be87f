from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Permission(StrEnum):
    VIEW_PUBLIC = "view_public"
    DOWNLOAD_ACCESS_COPIES = "download_access_copies"
    REQUEST_DIPS = "request_dips"
    DOWNLOAD_ORIGINALS = "download_originals"
    PRECISE_LOCATION = "precise_location"
    SUBMIT = "submit"
    MANAGE_PRESERVATION = "manage_preservation"
    ADMINISTER = "administer"


class RoleGrant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = ""
    permissions: list[Permission] = Field(default_factory=list)


def _default_roles() -> dict[str, RoleGrant]:
    p = Permission
    public = [p.VIEW_PUBLIC, p.DOWNLOAD_ACCESS_COPIES]
    researcher = [*public, p.REQUEST_DIPS]
    museum = [*researcher, p.SUBMIT]
    partner = [*researcher, p.PRECISE_LOCATION, p.DOWNLOAD_ORIGINALS]
    officer = [*partner, p.SUBMIT, p.MANAGE_PRESERVATION]
    return {
        "public": RoleGrant(description="anyone, signed in or not", permissions=public),
        "citizen": RoleGrant(
            description="volunteers who capture sites and submit their photos and scans",
            permissions=[*public, p.SUBMIT],
        ),
        "researcher": RoleGrant(description="registered researchers", permissions=researcher),
        "museum": RoleGrant(description="museums submitting their collections", permissions=museum),
        "partner": RoleGrant(
            description="trusted partners (restoration, heritage protection)", permissions=partner
        ),
        "officer": RoleGrant(description="preservation officers", permissions=officer),
        # Administrators run accounts and the archive, not field work: where sites are is for
        # the partners and officers whose work needs it.
        "admin": RoleGrant(
            description="administrators",
            permissions=[perm for perm in Permission if perm != p.PRECISE_LOCATION],
        ),
    }


class AccessPolicy(BaseModel):
    """Roles and what each may see. Unknown roles get nothing; `anonymous_role` applies to
    requests without a token."""

    model_config = ConfigDict(extra="forbid")

    roles: dict[str, RoleGrant] = Field(default_factory=_default_roles)
    anonymous_role: str = "public"

    @model_validator(mode="after")
    def _anonymous_role_exists(self) -> "AccessPolicy":
        if self.anonymous_role not in self.roles:
            raise ValueError(f"anonymous_role {self.anonymous_role!r} is not one of the roles")
        return self

    def allows(self, role: str, permission: Permission) -> bool:
        grant = self.roles.get(role)
        return grant is not None and permission in grant.permissions
