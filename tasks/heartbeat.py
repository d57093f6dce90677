"""The heartbeat service (healthchecks.io, Uptime Kuma, or anything with their ping conventions):
the only place pgha talks to it.

A ping URL is a credential (whoever has it can ping, or silence a dead man's switch), so neither
the URL nor an error that would carry it is ever logged or raised: callers get a short outcome.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from stack.alerts import Heartbeat, HeartbeatEvent


def heartbeat_ping(hb: Heartbeat, scope: str, event: HeartbeatEvent, message: str = "") -> tuple[str, str] | None:
    """(method, URL) of one ping in the service's convention, or None when the style has no such ping.

    healthchecks.io: `URL/start`, `URL` (success), `URL/fail`, each may carry a body (the audit's
    verdict), so the check's log shows why. Uptime Kuma's push monitors know up and down only:
    `URL?status=up|down&msg=...`.
    """
    assert hb.url is not None
    parts = urlsplit(hb.url.replace("{scope}", quote(scope, safe="")))
    if hb.style == "uptime-kuma":
        if event == "start":
            return None
        q = "&".join(x for x in (parts.query, f"status={'up' if event == 'success' else 'down'}",
                                 f"msg={quote(message[:200] or event, safe='')}") if x)
        return "GET", urlunsplit(parts._replace(query=q))
    path = parts.path.rstrip("/") + {"start": "/start", "success": "", "fail": "/fail"}[event]
    return "POST", urlunsplit(parts._replace(path=path or "/"))


def ping(hb: Heartbeat, scope: str, event: HeartbeatEvent, message: str = "") -> str:
    """Send one ping; returns what happened in words ("start: 200", "fail: ConnectError"), never raises."""
    req = heartbeat_ping(hb, scope, event, message)
    if req is None:
        return f"{event}: not sent ({hb.style} has no {event} ping)"
    method, url = req
    try:
        # trust_env: a heartbeat service is outside this host, often behind the site's proxy.
        r = httpx.request(method, url, content=message.encode()[:10000] if method == "POST" else None,
                          timeout=hb.timeout_s, follow_redirects=True)
    except httpx.HTTPError as exc:
        return f"{event}: {type(exc).__name__}"  # not str(exc): it names the URL
    return f"{event}: {r.status_code}"
