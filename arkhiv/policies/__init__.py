"""Policies: what the archive promises (copies, regions, audits), who may see what, and how
precisely a site's location may be shown. Pure data with validation; no I/O."""

from arkhiv.policies.access import AccessPolicy, Permission, RoleGrant
from arkhiv.policies.location import LocationPolicy
from arkhiv.policies.preservation import PreservationPolicy

__all__ = ["AccessPolicy", "LocationPolicy", "Permission", "PreservationPolicy", "RoleGrant"]
