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
