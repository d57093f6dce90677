"""What a spec string may hold before it reaches a config file: one line of text, and a type.

Spec strings end up in pg_hba (space-separated, `#` starts a comment), haproxy.cfg (one
directive a line), patroni.yml (YAML), pgBackRest's ini files (`key=value` lines) and etcd's
flags (comma- and `=`-separated URL lists). So no spec string may hold a control character
(C0, DEL, C1), a Unicode line or paragraph separator or an invisible format character, and the
fields that reach those files are typed: addresses (`ipaddress`), host names (RFC 1123), S3
endpoints, buckets and regions, paths, image references, Docker network names, PostgreSQL
parameter names. Each check raises ValueError with one line naming what is wrong; pydantic
puts the field's name in front.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

# Categories refused anywhere in a spec string: controls (C0, DEL, C1), format characters (bidi
# overrides, zero-width joiners: text that reads differently from what a parser sees), line and
# paragraph separators (YAML reads U+2028/U+2029 as line breaks), surrogates.
REFUSED_CATEGORIES = ("Cc", "Cf", "Zl", "Zp", "Cs")
HOST_LABEL_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
S3_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
S3_REGION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
SAFE_PATH_RE = re.compile(r"^/[A-Za-z0-9._@+/-]*$")
IMAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*(:[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?(@sha256:[0-9a-f]{64})?$")
DOCKER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
PARAMETER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


def control_character(text: str) -> str | None:
    """The first refused character of `text` as `U+XXXX` (None: the text is one line of visible text)."""
    for ch in text:
        if unicodedata.category(ch) in REFUSED_CATEGORIES:
            return f"U+{ord(ch):04X}"
    return None


def control_problem(value: Any, where: str = "") -> str | None:
    """Where in a raw spec value (mapping keys included) a string holds a refused character, as one line."""
    if isinstance(value, str):
        if (ch := control_character(value)) is not None:
            if "-----BEGIN" in value:
                return f"{where or 'value'} holds a key or certificate: give the path of a file, never the key itself"
            return f"{where or 'value'} holds the control character {ch}; spec strings are one line of visible text"
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            sub = f"{where}.{k}" if where else str(k)
            if isinstance(k, str) and (ch := control_character(k)) is not None:
                return f"a key of {where or 'the spec'} holds the control character {ch}"
            if (why := control_problem(v, sub)) is not None:
                return why
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            if (why := control_problem(v, f"{where}.{i}" if where else str(i))) is not None:
                return why
    return None


def host_name(v: str) -> str:
    """An RFC 1123 host name (letters, digits, dashes; dot-separated labels of 1-63)."""
    if len(v) > 253 or not all(HOST_LABEL_RE.match(label) for label in v.removesuffix(".").split(".")):
        raise ValueError(f"'{v}' is not an IPv4 address or a host name (letters, digits, dashes and dots)")
    return v


def host_address(v: str) -> str:
    """An IPv4 address a host can be reached at, or a host name. IPv6 is refused: pg_hba masks,
    HAProxy's servers and etcd's URLs are rendered for IPv4 and names."""
    try:
        ip = ipaddress.ip_address(v)
    except ValueError:
        if re.fullmatch(r"[0-9.]+", v):
            raise ValueError(f"'{v}' is not a valid IPv4 address") from None
        if ":" in v:
            raise ValueError(f"'{v}': IPv6 addresses are not supported; give an IPv4 address or a host name") from None
        return host_name(v)
    if ip.version != 4:
        raise ValueError(f"'{v}': IPv6 addresses are not supported; give an IPv4 address or a host name")
    if ip.is_unspecified or ip.is_multicast or ip == ipaddress.IPv4Address("255.255.255.255"):
        raise ValueError(f"'{v}' is not an address a host can be reached at")
    return str(ip)


def endpoint(v: str) -> str:
    """`host[:port]` (host: IPv4 or a host name) — what pgBackRest's repo1-s3-endpoint takes; no scheme, no path."""
    if "://" in v:
        raise ValueError(f"'{v}': give the host (and :port), without a scheme")
    host, sep, port = v.rpartition(":") if ":" in v else (v, "", "")
    if sep and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"'{v}': the port must be 1-65535")
    host_address(host)
    return v


def s3_bucket(v: str) -> str:
    if not S3_BUCKET_RE.match(v) or ".." in v:
        raise ValueError(f"'{v}' is not an S3 bucket name (3-63 lowercase letters, digits, dots and dashes)")
    return v


def s3_region(v: str) -> str:
    if not S3_REGION_RE.match(v):
        raise ValueError(f"'{v}' is not a region name (letters, digits, dashes and underscores)")
    return v


def safe_path(v: str) -> str:
    """An absolute path of plain characters (it is written into config files): no spaces, quotes or `..`."""
    if not SAFE_PATH_RE.match(v) or ".." in v.split("/"):
        raise ValueError(f"'{v}' must be an absolute path of letters, digits and . _ @ + - / (no '..')")
    return v


def host_path(v: str | None) -> str | None:
    """A file on the host pgha reads (never written into a config file): any one-line path."""
    if v is None:
        return None
    if not v.strip() or "\0" in v:
        raise ValueError("must be a file path")
    return v


def image_ref(v: str | None) -> str | None:
    if v is None:
        return None
    if len(v) > 255 or not IMAGE_RE.match(v):
        raise ValueError(f"'{v}' is not an image reference (name[:tag][@sha256:digest])")
    return v


def docker_name(v: str | None) -> str | None:
    if v is None:
        return None
    if not DOCKER_NAME_RE.match(v):
        raise ValueError(f"'{v}' is not a Docker network name (letters, digits, _ . -)")
    return v


def parameter_name(v: str) -> str:
    if not PARAMETER_RE.match(v):
        raise ValueError(f"'{v}' is not a PostgreSQL parameter name (letters, digits, _; one dot for a custom one)")
    return v


class Strict(BaseModel):
    """A spec section: unknown keys refused, frozen, and no control character in any string it is given."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _one_line_strings(cls, data: Any) -> Any:
        if isinstance(data, dict) and (why := control_problem(data)) is not None:
            raise ValueError(why)
        return data
