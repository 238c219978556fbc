"""Database URLs: checked before any connection, their passwords kept out
of every message.

libpq (psycopg's conninfo_to_dict) is the one parser: asyncpg is handed a
URL rebuilt from what libpq read (dbpool.asyncpg_dsn). A check never echoes
a value from the URL: in a URL with an unencoded '/' or '@' in the password,
libpq reads part of the password as the host, the port or the database.
"""

from __future__ import annotations

import contextlib
import re
from urllib.parse import unquote

import psycopg
from psycopg.conninfo import conninfo_to_dict

from flowworker.errors import ConfigurationError

URL_SCHEMES = ("postgresql://", "postgres://")
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
HIDDEN = "***"
# libpq puts the piece of the URL it complains about in double quotes,
# Python and asyncpg in single quotes.
_QUOTED = re.compile(r'"[^"]*"|\'[^\']*\'')
# Quoted by libpq's own wording ("matching "]" in IPv6 host address"),
# except after "unexpected character".
_WORDING = frozenset({'"]"', '"="', '":"', '"/"'})
_PASSWORD_PARAM = re.compile(r"password\s*=\s*('(?:[^'\\]|\\.)*'|[^\s&]*)", re.IGNORECASE)


def parse(url: str) -> dict[str, str]:
    """The parameters libpq reads in `url` (a URL or key=value string);
    ConfigurationError, showing nothing of the URL, when it is malformed
    or names a port or sslmode libpq would refuse when connecting."""
    try:
        params = {key: str(value) for key, value in conninfo_to_dict(url).items()}
    except psycopg.ProgrammingError as exc:
        raise invalid(str(exc), url) from None
    _check_at_signs(url)
    _check_ports(params.get("host", ""), params.get("port", ""))
    if params.get("sslmode", "prefer") not in SSLMODES:
        raise ConfigurationError(
            f"invalid database URL: sslmode must be one of {', '.join(SSLMODES)}")
    return params


def servers(url: str) -> str:
    """`host:port` of each server the URL names (libpq's defaults filled
    in), for messages: never the user, the password or the database."""
    params = parse(url)
    hosts = (params.get("host") or params.get("hostaddr") or "localhost").split(",")
    ports = (params.get("port") or "5432").split(",")
    if len(ports) == 1:
        ports *= len(hosts)
    named = [f"{host}/.s.PGSQL.{port or '5432'}" if host.startswith("/")  # a socket folder
             else f"{host}:{port or '5432'}" for host, port in zip(hosts, ports, strict=True)]
    return redact(", ".join(named), url)


def invalid(driver_message: str, url: str) -> ConfigurationError:
    """`invalid database URL: <what the driver said>`, minus what it echoed."""
    lines = [line.strip() for line in driver_message.splitlines() if line.strip()]
    said = _QUOTED.sub(_hide_echo, lines[0]) if lines else "does not parse"
    return ConfigurationError(f"invalid database URL: {redact(said, url)}")


def _hide_echo(quoted: re.Match[str]) -> str:
    before = quoted.string[:quoted.start()]
    if quoted[0] in _WORDING and not before.endswith("character "):
        return quoted[0]
    return '"…"'


def redact(text: str, url: str) -> str:
    """`text` with every form of url's password in it replaced by ***."""
    for secret in sorted(_password_forms(url), key=len, reverse=True):
        text = text.replace(secret, HIDDEN)
    return text


def _password_forms(url: str) -> set[str]:
    """The password as libpq reads it, as written, and as a user may have
    meant it (up to the first or the last '@'), raw and percent-decoded."""
    found: set[str] = set()
    with contextlib.suppress(psycopg.ProgrammingError):
        found.add(str(conninfo_to_dict(url).get("password") or ""))
    if url.startswith(URL_SCHEMES):
        userinfo = url.split("://", 1)[1].rpartition("@")[0]
        found.add(userinfo.partition(":")[2])
        found.add(userinfo.partition("@")[0].partition(":")[2])
    for match in _PASSWORD_PARAM.finditer(url):
        found.add(match[1].strip("'"))
    found |= {unquote(secret) for secret in found}
    return {secret for secret in found if secret}


def _check_at_signs(url: str) -> None:
    """One '@' at most, and only at the end of the user name and password:
    any other means a password with an unencoded '@' or '/', whose pieces
    libpq would take for the host, the port or the database name."""
    if not url.startswith(URL_SCHEMES):
        return
    rest = url.split("://", 1)[1]
    # libpq: the user info ends at the first '@', unless a '/' comes first.
    end = min((i for i in (rest.find("@"), rest.find("/")) if i >= 0), default=-1)
    after = rest[end + 1:] if end >= 0 and rest[end] == "@" else rest
    if "@" in after.partition("?")[0]:
        raise ConfigurationError(
            "invalid database URL: '@' after the user name and password; percent-encode "
            "'@' as %40 and '/' as %2F in the user name, password and database name")


def _check_ports(hosts: str, ports: str) -> None:
    """Each port empty (the default) or 1-65535; one, or one per host."""
    if not ports:
        return
    each = ports.split(",")
    if not all(p == "" or (p.isascii() and p.isdigit() and 1 <= int(p) <= 65535) for p in each):
        raise ConfigurationError(
            "invalid database URL: the port must be a number from 1 to 65535")
    if len(each) > 1 and len(each) != len(hosts.split(",")):
        raise ConfigurationError(
            "invalid database URL: give one port, or one port per host")
