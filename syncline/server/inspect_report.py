"""``syncline inspect URL``: the inspector's summary (:mod:`.inspect`) as tables in a
terminal, fetched once with the credentials the server's guard checks."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from ..exceptions import SynclineError

__all__ = ["InspectFetchError", "fetch_summary", "render_summary", "summary_url"]


class InspectFetchError(SynclineError):
    """The summary could not be fetched; the message says why and what to do."""


def summary_url(url: str) -> str:
    """The summary's URL from what a user types: the server (``http://host:8000``), its
    sync path (``…/sync``), the page (``…/sync/inspect``) or the summary itself."""
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InspectFetchError(f"{url!r} is not an http:// or https:// URL")
    path = parts.path.rstrip("/")
    if path.endswith("/inspect/summary"):
        pass
    elif path.endswith("/inspect"):
        path += "/summary"
    elif path.endswith("/sync"):
        path += "/inspect/summary"
    elif not path:
        path = "/sync/inspect/summary"
    else:
        path += "/inspect/summary"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def fetch_summary(url: str, headers: Mapping[str, str], timeout: float = 10.0) -> dict[str, Any]:
    target = summary_url(url)
    request = urllib.request.Request(target, headers={"Accept": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise InspectFetchError(
                f"no inspector at {target} (404): the server runs without "
                "SynclineServer(inspect=...), or under another path"
            ) from None
        if exc.code == 403:
            raise InspectFetchError(
                f"{target} refused (403): the server's inspect guard said no; pass the "
                "credentials it checks with --header (e.g. -H 'Cookie: session=...')"
            ) from None
        raise InspectFetchError(f"{target} answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise InspectFetchError(f"cannot reach {target}: {reason}") from None
    except ValueError as exc:
        raise InspectFetchError(f"{target} did not answer JSON: {exc}") from None
    if data.get("t") != "inspect":
        raise InspectFetchError(f"{target} answered something other than an inspector summary")
    return data


def _clock(t: float | None) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S.%f")[:-3] if t else ""


def _counted(total: int, shown: int) -> str:
    return str(total) if shown >= total else f"{total}, {shown} shown"


def render_summary(s: Mapping[str, Any]) -> Iterable[Any]:
    """Rich renderables: a heading line and one table per part of the summary."""
    from rich.table import Table

    log, reader = s.get("log", {}), s.get("reader", {})
    backplane = s.get("backplane", {})
    if "error" in log:
        yield f"log unreadable: {log['error']}"
    else:
        yield f"log head {log['head']} · floor {log['floor']} · epoch {log['epoch']}"
    yield (
        f"reader at {reader.get('position')} · {reader.get('joined')} joined · "
        f"{reader.get('steps')} steps · {reader.get('step_seconds', 0):.3f} s in steps · "
        f"backplane {backplane.get('kind')} {backplane.get('state') or ''}"
    )
    counts = s.get("mutations") or {}
    yield "mutations: " + (" · ".join(f"{k} {n}" for k, n in counts.items()) or "none yet")

    conns = s["connections"]
    table = Table(title=f"connections ({_counted(conns['total'], len(conns['shown']))})")
    for column in ("client id", "principal", "subscriptions", "cursor", "outbox"):
        table.add_column(column)
    for c in conns["shown"]:
        queries = "\n".join(f"{q}: {k}" for q, k in c["queries"].items())
        table.add_row(
            c["client_id"] or "(no hello yet)",
            c["principal"],
            queries,
            str(c["cursor"]),
            str(c["outbox"]),
        )
    yield table

    queries = s["queries"]
    table = Table(title=f"fan-out by query ({_counted(queries['total'], len(queries['shown']))})")
    table.add_column("query key")
    table.add_column("connections", justify="right")
    for q in s["queries"]["shown"]:
        table.add_row(q["key"], str(q["connections"]))
    yield table

    table = Table(title="recent conflicts and rejects")
    for column in ("time (UTC)", "kind", "client id", "mutation", "code", "where", "message"):
        table.add_column(column)
    for e in s["events"]:
        if e["kind"] == "reject":
            where = " ".join(str(x) for x in (e["collection"], e["id"], e["field"]) if x)
            code = e["code"] + ("" if e["permanent"] else " (temporary)")
        else:
            where = "\n".join(f"{c['collection']} {c['id']} {c['field']}" for c in e["conflicts"])
            code = ""
        table.add_row(
            _clock(e["time"]), e["kind"], e["client_id"], str(e["mid"]), code, where,
            e.get("message") or "",
        )  # fmt: skip
    yield table

    table = Table(title="last changes")
    for column in ("seq", "time (UTC)", "kind", "collection", "id", "client id", "fields"):
        table.add_column(column)
    for c in log.get("changes", []):
        fields = (
            " ".join(f"{f}={v}" for f, v in c["values"].items())
            if "values" in c
            else " ".join(c["fields"])
        )
        table.add_row(
            str(c["seq"]), _clock(c["time"]), c["kind"], c["collection"], c["id"],
            c["client_id"] or "", fields,
        )  # fmt: skip
    yield table
