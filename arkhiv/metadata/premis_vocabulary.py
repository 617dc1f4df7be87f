"""PREMIS event types from the Library of Congress vocabulary
(http://id.loc.gov/vocabulary/preservation/eventType). Codes checked against the published list;
beware that `der` there means *decryption*, not derivation (use creation, migration or
normalization for derivatives)."""

from enum import StrEnum

BASE = "http://id.loc.gov/vocabulary/preservation/eventType/"


class EventType(StrEnum):
    ACCESSION = "acc"
    CREATION = "cre"
    DELETION = "del"
    DISSEMINATION = "dis"
    ENCRYPTION = "enc"
    FIXITY_CHECK = "fix"
    FORMAT_IDENTIFICATION = "for"
    INGESTION_END = "ine"
    INGESTION_START = "ins"
    INFORMATION_PACKAGE_CREATION = "ipc"
    METADATA_EXTRACTION = "mee"
    METADATA_MODIFICATION = "mem"
    MESSAGE_DIGEST_CALCULATION = "mes"
    MIGRATION = "mig"
    NORMALIZATION = "nor"
    QUARANTINE = "qua"
    RECOVERY = "rec"
    REDACTION = "red"
    REPLICATION = "rep"
    UNPACKING = "unp"
    VALIDATION = "val"
    VIRUS_CHECK = "vir"

    @property
    def uri(self) -> str:
        return BASE + self.value

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", " ")


def label_of(uri: str) -> str:
    """The label of an event type URI (its last segment when it is not one of these)."""
    code = uri.rsplit("/", 1)[-1]
    try:
        return EventType(code).label
    except ValueError:
        return code
