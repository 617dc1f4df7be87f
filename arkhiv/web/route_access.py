"""Who may call each route: the table a security review starts from.

Every route the application serves has an entry here: the permissions it checks (all of them
needed) and what narrows it further (whose records, what is held back). `route_table` renders the
entries against an access policy, one column per role, for docs/access.md; a test fails when a
route has no entry, an entry has no route, or the document's table is not the one rendered here.
Regenerate it with `python -m arkhiv.web.route_access docs/access.md`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from arkhiv.policies.access import AccessPolicy, Permission

P = Permission
START = "<!-- route-table:start (python -m arkhiv.web.route_access docs/access.md) -->"
END = "<!-- route-table:end -->"


@dataclass(frozen=True)
class Rule:
    needs: tuple[Permission, ...] = ()
    signed_in: bool = False  # anonymous visitors are refused whatever their role allows
    note: str = ""


ANYONE = Rule()
OWN_ONLY = "their own only (others' are answered 404, as if they did not exist)"

ROUTES: dict[tuple[str, str], Rule] = {
    # The API's description and the pages' static files.
    ("GET", "/openapi.json"): ANYONE,
    ("GET", "/docs"): ANYONE,
    ("GET", "/docs/oauth2-redirect"): ANYONE,
    ("GET", "/redoc"): ANYONE,
    ("GET", "/static/{path}"): Rule(note="the pages' scripts, styles and translations"),
    ("GET", "/health"): Rule(note="liveness and whether the catalog answers; no details"),
    # Accounts and tokens.
    ("GET", "/api/v1/tokens"): Rule(signed_in=True, note=OWN_ONLY + "; never the token itself"),
    ("POST", "/api/v1/tokens"): Rule(
        signed_in=True,
        note="only signed in with a password (session cookie + CSRF token): neither a token "
        "nor a session opened with one",
    ),
    ("DELETE", "/api/v1/tokens/{token_id}"): Rule(
        signed_in=True, note="their own; `administer`: anyone's"
    ),
    ("GET", "/signin"): ANYONE,
    ("POST", "/signin"): Rule(note="failures counted per address and per name (429)"),
    ("POST", "/signout"): ANYONE,
    ("GET", "/account"): Rule(signed_in=True),
    ("POST", "/account/tokens"): Rule(
        signed_in=True, note="only signed in with a password, not with a token"
    ),
    ("POST", "/account/tokens/{number}/revoke"): Rule(signed_in=True, note="their own"),
    ("POST", "/account/password"): Rule(
        signed_in=True,
        note="only signed in with a password and giving it again; ends the user's other "
        "sessions, and their tokens if asked",
    ),
    # The catalogue.
    ("GET", "/"): Rule(note="the public catalogue: public cells only"),
    ("GET", "/api/v1/objects"): Rule(
        note="public fields, no location; withdrawn objects only with `manage_preservation`"
    ),
    ("GET", "/api/v1/objects/{object_id:path}"): Rule(
        note="the public record and the files the role may download; `manage_preservation`: "
        "the whole record (stores, replicas, events)"
    ),
    ("GET", "/objects/{object_id:ark}"): Rule(note="as the API's object; partners may ask there"),
    ("GET", "/api/v1/formats"): ANYONE,
    ("GET", "/oai"): Rule(note="OAI-PMH: public records, no coordinates, not even the cell"),
    ("POST", "/oai"): Rule(note="OAI-PMH: public records, no coordinates, not even the cell"),
    ("GET", "/iiif/{object_id:ark}/manifest"): Rule(note="the public record; no location"),
    # Downloads.
    ("GET", "/api/v1/objects/{object_id:ark}/export/{fmt}"): Rule(
        (P.DOWNLOAD_ACCESS_COPIES,), note="models in a local frame"
    ),
    ("GET", "/api/v1/objects/{object_id:ark}/lod/{level}"): Rule((P.DOWNLOAD_ACCESS_COPIES,)),
    ("GET", "/api/v1/objects/{object_id:ark}/print"): Rule((P.DOWNLOAD_ACCESS_COPIES,)),
    ("GET", "/api/v1/objects/{object_id:ark}/files/{logical_path:path}"): Rule(
        note="derivatives: `download_access_copies`; originals: `download_originals`, as "
        "submitted only with `precise_location` (logged when located), else pictures cleaned "
        "and nothing else; camera poses and tag files only with `precise_location`; the "
        "archive's metadata files: `manage_preservation`"
    ),
    # Locations.
    ("GET", "/api/v1/objects/{object_id:path}/location"): Rule(
        note="the public cell; `precise=true`: `precise_location`, a purpose and (with a "
        "cookie) the CSRF token, written to the audit log"
    ),
    ("POST", "/objects/{object_id:ark}/location"): Rule(
        (P.PRECISE_LOCATION,), signed_in=True, note="a purpose; written to the audit log"
    ),
    # Dissemination packages.
    ("POST", "/api/v1/objects/{object_id:ark}/dips"): Rule(
        (P.REQUEST_DIPS,), note="with originals: also `download_originals`"
    ),
    ("POST", "/objects/{object_id:ark}/dips"): Rule(
        (P.REQUEST_DIPS,), signed_in=True, note="with originals: also `download_originals`"
    ),
    ("GET", "/api/v1/dips/{job_id}"): Rule((P.REQUEST_DIPS,), note="the recipient only"),
    ("GET", "/api/v1/dips/{job_id}/download"): Rule(
        (P.REQUEST_DIPS,),
        note="the recipient only, holding every permission the contents took (originals, "
        "precise locations) at each download; located contents logged at each download",
    ),
    ("GET", "/requests"): Rule((P.REQUEST_DIPS,), signed_in=True, note=OWN_ONLY),
    # Submissions and uploads.
    ("POST", "/api/v1/submissions"): Rule(
        (P.SUBMIT,), note="streams to disk under the ingest limits"
    ),
    ("GET", "/api/v1/submissions/{submission_id}"): Rule(
        note="the submitter; `manage_preservation`: any (others: 404)"
    ),
    ("GET", "/capture"): Rule((P.SUBMIT,), signed_in=True),
    ("POST", "/capture"): Rule((P.SUBMIT,), signed_in=True),
    ("GET", "/submit"): Rule((P.SUBMIT,), signed_in=True),
    ("POST", "/submit"): Rule((P.SUBMIT,), signed_in=True),
    ("GET", "/submissions"): Rule((P.SUBMIT,), signed_in=True, note=OWN_ONLY),
    ("GET", "/submissions/{submission_id}"): Rule(
        signed_in=True, note="the submitter; `manage_preservation`: any (others: 404)"
    ),
    ("OPTIONS", "/uploads"): Rule(note="tus discovery"),
    ("OPTIONS", "/uploads/{upload_id}"): Rule(note="tus discovery"),
    ("POST", "/uploads"): Rule(
        (P.SUBMIT,), signed_in=True, note="tus; uploads per hour and bytes per day per user"
    ),
    ("HEAD", "/uploads/{upload_id}"): Rule((P.SUBMIT,), signed_in=True, note=OWN_ONLY),
    ("PATCH", "/uploads/{upload_id}"): Rule((P.SUBMIT,), signed_in=True, note=OWN_ONLY),
    ("POST", "/uploads/{upload_id}"): Rule(
        (P.SUBMIT,), signed_in=True, note=OWN_ONLY + " (method override for PATCH/DELETE)"
    ),
    ("DELETE", "/uploads/{upload_id}"): Rule((P.SUBMIT,), signed_in=True, note=OWN_ONLY),
    # Preservation.
    ("GET", "/api/v1/status"): Rule((P.MANAGE_PRESERVATION,)),
    ("PATCH", "/api/v1/objects/{object_id:path}/description"): Rule((P.MANAGE_PRESERVATION,)),
    ("GET", "/officer"): Rule((P.MANAGE_PRESERVATION,), signed_in=True),
    ("GET", "/officer/objects/{object_id:ark}"): Rule((P.MANAGE_PRESERVATION,), signed_in=True),
    ("GET", "/officer/reports/fixity.{fmt}"): Rule((P.MANAGE_PRESERVATION,), signed_in=True),
}


def served_routes(app) -> set[tuple[str, str]]:
    """(method, path) of every route `app` serves, included routers and mounts too (a mount
    as `{path}` below it). HEAD beside GET is left out: it is the same route."""
    found: set[tuple[str, str]] = set()

    def walk(routes, prefix: str) -> None:
        for route in routes:
            included = getattr(route, "original_router", None)
            if included is not None:  # FastAPI's included router, kept whole
                walk(included.routes, prefix + route.include_context.prefix)
                continue
            methods = getattr(route, "methods", None)
            path = prefix + route.path
            if methods is None:  # a mount: the static files
                found.add(("GET", path + "/{path}"))
                continue
            for method in methods:
                if method == "HEAD" and "GET" in methods:
                    continue
                found.add((method, path))

    walk(app.router.routes, "")
    return found


def route_table(policy: AccessPolicy) -> str:
    """The Markdown table: a row per route, a column per role of `policy` (the anonymous role
    first, as 'anyone'), ✓ where the role may call it (what narrows it further in the notes)."""
    roles = [policy.anonymous_role, *(r for r in policy.roles if r != policy.anonymous_role)]
    head = ["route", *[f"{r} (anyone)" if r == policy.anonymous_role else r for r in roles]]
    lines = [
        "| " + " | ".join(head) + " | needs, and what narrows it |",
        "|" + "---|" * (len(head) + 1),
    ]
    for (method, path), rule in sorted(ROUTES.items(), key=lambda item: (item[0][1], item[0][0])):
        cells = []
        for role in roles:
            allowed = all(policy.allows(role, need) for need in rule.needs)
            if rule.signed_in and role == policy.anonymous_role:
                allowed = False
            cells.append("✓" if allowed else "—")
        needs = ", ".join(f"`{need.value}`" for need in rule.needs)
        if rule.signed_in:
            needs = ", ".join(filter(None, ["signed in", needs]))
        narrows = "; ".join(filter(None, [needs, rule.note])).replace("|", "\\|")
        lines.append(f"| `{method} {path}` | " + " | ".join(cells) + f" | {narrows} |")
    return "\n".join(lines) + "\n"


def document_section(policy: AccessPolicy) -> str:
    return f"{START}\n{route_table(policy)}{END}"


def rewrite(document: Path, policy: AccessPolicy) -> bool:
    """Put the current table into `document` between its markers; True when it changed."""
    text = document.read_text(encoding="utf-8")
    before, _, rest = text.partition(START)
    _, _, after = rest.partition(END)
    updated = before + document_section(policy) + after
    if updated != text:
        document.write_text(updated, encoding="utf-8")
    return updated != text


if __name__ == "__main__":
    changed = rewrite(Path(sys.argv[1]), AccessPolicy())
    print("rewritten" if changed else "unchanged")
