"""Arkhiv's persistent identifiers: ARKs (Archival Resource Keys, draft-kunze-ark).

An object is named `ark:NAAN/SHOULDERBLADE` + check character, for example
`ark:99999/b3k7m2q9xw9`:

- NAAN: the Name Assigning Authority Number the institution registered (free) with the ARK
  Alliance; 99999 is the number reserved for tests and examples, the default until a real one
  is configured.
- shoulder: a short betanumeric prefix naming this archive within the NAAN (`b3` by default).
- blade: random betanumerics (digits and consonants without `l`: no vowels, so no words; no
  `l`, so no `1`/`l` confusion), 29^10 ≈ 4·10^14 possibilities.
- the last character is the NOID check character, which catches any single wrong character and
  any swap of two adjacent ones, so a mistyped citation is refused instead of resolving to
  nothing.

The ARK specification prefers `ark:NAAN/...` and treats the older `ark:/NAAN/...` as the same
identifier; both are accepted on input and the first is what Arkhiv writes. A citation carries
the identifier through a resolver, e.g. `https://n2t.net/ark:99999/b3k7m2q9xw9`.
"""

from __future__ import annotations

import re
import secrets

BETANUMERIC = "0123456789bcdfghjkmnpqrstvwxz"
BLADE_LENGTH = 10
_ARK = re.compile(r"^ark:/?(?P<naan>[0-9bcdfghjkmnpqrstvwxz]{5,})/(?P<name>[0-9a-z]+)$")


class IdentifierError(ValueError):
    pass


def check_character(text: str) -> str:
    """The NOID check character of `text` ("NAAN/name"): the sum of each character's position
    (from 1) times its betanumeric ordinal (0 for characters outside the alphabet), mod 29."""
    total = sum(
        position * BETANUMERIC.index(char) if char in BETANUMERIC else 0
        for position, char in enumerate(text, start=1)
    )
    return BETANUMERIC[total % len(BETANUMERIC)]


def check_naming(naan: str, shoulder: str) -> None:
    if not re.fullmatch(r"\d{5}|[0-9bcdfghjkmnpqrstvwxz]{5,}", naan):
        raise IdentifierError(f"NAAN {naan!r} is not a five-digit (or longer betanumeric) number")
    if not re.fullmatch(r"[bcdfghjkmnpqrstvwxz]+[0-9]", shoulder):
        raise IdentifierError(
            f"shoulder {shoulder!r}: use betanumeric letters ending in one digit, e.g. 'b3'"
        )


def mint(naan: str, shoulder: str) -> str:
    """A new, random ARK under NAAN and shoulder."""
    check_naming(naan, shoulder)
    blade = "".join(secrets.choice(BETANUMERIC) for _ in range(BLADE_LENGTH))
    body = f"{naan}/{shoulder}{blade}"
    return f"ark:{body}{check_character(body)}"


def normalize(identifier: str) -> str:
    """The identifier as Arkhiv writes it: surrounding space and a resolver prefix removed,
    `ark:/` written `ark:`, case folded. IdentifierError when it is not an ARK or its check
    character is wrong."""
    text = identifier.strip().lower()
    if "://" in text and "ark:" in text:  # a resolver URL such as https://n2t.net/ark:...
        text = text[text.index("ark:") :]
    match = _ARK.match(text)
    if match is None:
        raise IdentifierError(f"{identifier!r} is not an ARK like ark:99999/b3k7m2q9xw9")
    body = f"{match['naan']}/{match['name']}"
    if len(match["name"]) < 2 or check_character(body[:-1]) != body[-1]:
        raise IdentifierError(f"{identifier!r}: wrong check character (mistyped?)")
    return f"ark:{body}"


def resolver_url(identifier: str, resolver: str) -> str:
    return resolver.rstrip("/") + "/" + identifier
