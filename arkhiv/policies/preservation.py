from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

DigestAlgorithm = Literal["sha512", "sha256", "sha1", "md5", "blake2b-512"]


class PreservationPolicy(BaseModel):
    """NDSA-style promises: how many verified copies, in how many regions, audited how often."""

    model_config = ConfigDict(extra="forbid")

    min_copies: int = Field(3, ge=1, description="verified replicas every file must have")
    min_regions: int = Field(2, ge=1, description="distinct store regions those replicas span")
    audit_interval_days: float = Field(
        90, gt=0, description="every replica is re-verified within this many days"
    )
    digest_algorithms: list[DigestAlgorithm] = Field(
        default_factory=lambda: ["sha512", "sha256"],
        description="digests computed for every file; sha512 addresses OCFL content",
    )

    @field_validator("digest_algorithms")
    @classmethod
    def _sha512_first(cls, algorithms: list[str]) -> list[str]:
        if "sha512" not in algorithms:
            raise ValueError("must include sha512, the OCFL content digest")
        if len(set(algorithms)) != len(algorithms):
            raise ValueError("lists an algorithm twice")
        return algorithms

    def status_of(self, copies: Mapping[str, Sequence[str]]) -> str:
        """An object's state from the regions of each file's verified copies (content path ->
        regions, one per verified replica; every file of the object must be a key):
        `damaged` when some file has no verified copy left anywhere, `at_risk` when some file
        has fewer copies or regions than the policy asks, `preserved` otherwise."""
        status = "preserved"
        for regions in copies.values():
            if not regions:
                return "damaged"
            if len(regions) < self.min_copies or len(set(regions)) < self.min_regions:
                status = "at_risk"
        return status
