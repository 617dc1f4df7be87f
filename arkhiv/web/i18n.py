"""The pages' languages: English in the templates, other languages in gettext catalogues
(`locales/<lang>/LC_MESSAGES/messages.po`, read with Babel at start-up, so translators edit
the .po files and nothing needs compiling).

Which language a request gets: `?lang=` (remembered in a cookie), then the cookie, then the
browser's Accept-Language, then English."""

from __future__ import annotations

import gettext
import io
from contextvars import ContextVar
from functools import cache
from importlib import resources

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

LANGUAGES = {"en": "English", "uk": "Українська"}
DEFAULT = "en"
COOKIE = "arkhiv_lang"

current_language: ContextVar[str] = ContextVar("arkhiv_language", default=DEFAULT)


@cache
def catalogue(language: str) -> gettext.NullTranslations:
    if language == DEFAULT:
        return gettext.NullTranslations()
    source = resources.files("arkhiv.web").joinpath(
        "locales", language, "LC_MESSAGES", "messages.po"
    )
    with source.open("rb") as handle:
        messages = read_po(handle, locale=language)
    compiled = io.BytesIO()
    write_mo(compiled, messages)
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)


def gettext_(message: str) -> str:
    return catalogue(current_language.get()).gettext(message)


def ngettext_(singular: str, plural: str, count: int) -> str:
    return catalogue(current_language.get()).ngettext(singular, plural, count)


def choose(asked: str | None, remembered: str | None, accept_language: str | None) -> str:
    for candidate in (asked, remembered):
        if candidate in LANGUAGES:
            return candidate
    for part in (accept_language or "").split(","):
        language = part.split(";")[0].strip().replace("_", "-").split("-")[0].lower()
        if language in LANGUAGES:
            return language
    return DEFAULT


# States the pages show as words; the catalogue's own values, translated like the rest.
STATES = (
    "received",
    "ingesting",
    "archived",
    "rejected",  # submissions
    "queued",
    "running",
    "done",
    "dead",  # jobs
    "preserved",
    "at_risk",
    "damaged",
    "withdrawn",  # objects
    "success",
    "failure",
    "pass",
    "fail",
    "warn",
    "skip",  # outcomes
)


def value_messages() -> list[str]:
    """Every value the templates pass through gettext (types, conditions, capture modes,
    states, PREMIS event names), so that a test can check each language has them all."""
    from arkhiv.ingest.capture_metadata import CaptureMode, ConditionStatus, ObjectType
    from arkhiv.metadata.premis_vocabulary import EventType

    values = [*ObjectType, *ConditionStatus, *CaptureMode]
    return [str(v.value) for v in values] + list(STATES) + [e.label for e in EventType]
