"""Endpoints: the one grammar every announced, configured or advertised endpoint must pass.

Whatever a frame announces ends up in ``connect()``, in monitor-event matching
and in other peers' tables, so the validator accepts exactly what the connect
path can use, and nothing else: ``tcp://HOST:PORT`` where HOST is a dotted-quad
IPv4 address, a bracketed IPv6 address or a DNS name, and ``ipc://PATH``.
Parsing is by hand, not ``urllib.parse``: ``urlsplit`` raises on inputs such
as ``tcp://[abc]:5`` or ``ipc://[x``, and it is an URL parser, not a ZeroMQ
endpoint parser (libzmq has no query, fragment or user-info parts).

Numeric spellings other than the dotted quad (``127.1``, ``0x7f000001``,
``2130706433``) are refused: ``getaddrinfo`` accepts them as aliases of an
address, which would let one listener be announced under many names.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from dataclasses import dataclass

from .errors import WireError

#: The endpoint field of the classic frame holds 256 bytes and a NUL.
MAX_ENDPOINT_LEN = 256
#: Schemes a peer may announce. ``inproc`` is meaningless across processes and
#: the multicast transports do not fit a connect-per-peer mesh.
DEFAULT_SCHEMES = frozenset({"tcp", "ipc"})
#: Linux's ``sun_path`` holds 108 bytes with the NUL; libzmq refuses longer.
MAX_IPC_PATH = 107
WILDCARD_HOSTS = frozenset({"*", "0.0.0.0", "::", "[::]"})

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_PORT = re.compile(r"^[1-9][0-9]{0,4}$")


@dataclass(frozen=True)
class TcpAddress:
    host: str  # as written, IPv6 without brackets
    port: int

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host.split("%", 1)[0])
        except ValueError:
            return False
        return True

    def endpoint(self, host: str | None = None) -> str:
        h = self.host if host is None else host
        return f"tcp://[{h}]:{self.port}" if ":" in h else f"tcp://{h}:{self.port}"


def _bad(detail: str, text: str, reason: str = "bad-endpoint") -> WireError:
    return WireError(reason, f"{detail}: {text[:80]!r}")


def validate_host(host: str, *, what: str = "host") -> str:
    """A host another machine can connect to: an IPv4 dotted quad, an IPv6
    address (brackets optional, returned without them) or a DNS name."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not host:
            raise _bad(f"empty bracketed {what}", host)
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _bad(f"{what} in brackets is not an IPv6 address", host) from None
        return host
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _bad(f"{what} is not an IPv6 address", host) from None
        return host
    if host in WILDCARD_HOSTS:
        raise _bad(f"wildcard {what} is not connectable", host)
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise _bad(f"{what} is not a dotted-quad IPv4 address", host) from None
        return host
    if len(host) > 253 or not all(_LABEL.match(label) for label in host.split(".")):
        raise _bad(f"{what} is not an IP address or DNS name", host)
    try:
        socket.inet_aton(host)
    except OSError:
        return host
    raise _bad(f"{what} is a numeric alias of an address (write it as a dotted quad)", host)


def parse_tcp(text: str) -> TcpAddress:
    """Split ``tcp://HOST:PORT`` and check both parts (raises :class:`WireError`)."""
    if not text.startswith("tcp://"):
        raise _bad("not a tcp:// endpoint", text)
    rest = text[len("tcp://") :]
    host, sep, port = rest.rpartition(":")
    if not sep or not _PORT.match(port) or int(port) > 65535:
        raise _bad("not tcp://host:port with a port 1-65535", text)
    return TcpAddress(validate_host(host), int(port))


# Cached: every peer decodes every other peer's endpoint in each C it hears, so
# the same few endpoints are checked over and over (wire.decode: about 20 us a
# frame uncached, 6-10 us cached). Pure: it returns its argument or raises, and
# a raise is not cached. Bounded: 4096 entries of at most MAX_ENDPOINT_LEN bytes.
@functools.lru_cache(maxsize=4096)
def validate_endpoint(text: str, schemes: frozenset[str] = DEFAULT_SCHEMES) -> str:
    """Return *text* if another process can connect to it; else raise
    :class:`WireError` (reason ``bad-endpoint`` or ``bad-scheme``)."""
    if not text or len(text.encode("utf-8")) > MAX_ENDPOINT_LEN:
        raise _bad(f"empty or longer than {MAX_ENDPOINT_LEN} bytes", text)
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise _bad("control or space characters", text)
    scheme, sep, rest = text.partition("://")
    if not sep or not rest:
        raise _bad("no scheme://address", text)
    if scheme not in schemes:
        raise _bad(f"scheme not allowed (allowed: {sorted(schemes)})", text, "bad-scheme")
    if scheme == "tcp":
        parse_tcp(text)
    elif scheme == "ipc":
        if len(rest.encode("utf-8")) > MAX_IPC_PATH:
            raise _bad(f"ipc path longer than {MAX_IPC_PATH} bytes", text)
        if rest == "*":
            raise _bad("wildcard ipc path is not connectable", text)
    return text


def validate_bind(text: str) -> str:
    """Return *text* if a socket can bind it: ``tcp://HOST:PORT`` with a
    wildcard, an address or a name for HOST and a port 0-65535 or ``*``, or
    ``ipc://PATH``. Raises :class:`WireError`."""
    if text.startswith("tcp://"):
        host, sep, port = text[len("tcp://") :].rpartition(":")
        if not sep or not (port == "*" or (port.isdigit() and int(port) <= 65535)):
            raise _bad("not a bind endpoint tcp://host:port with a port 0-65535 or *", text)
        if host not in WILDCARD_HOSTS:
            validate_host(host)
        return text
    if text.startswith("ipc://") and text != "ipc://":
        return validate_endpoint(text) if text != "ipc://*" else text
    raise _bad("not a tcp:// or ipc:// bind endpoint", text)


def advertised(bound: str, advertise: str | None) -> str:
    """The endpoint other hosts should connect to for a socket bound at
    *bound* (its ``LAST_ENDPOINT``): the host replaced by *advertise* when
    given. A wildcard bind without *advertise* is an error: nobody can
    connect to it. The result always passes :func:`validate_endpoint`."""
    if not bound.startswith("tcp://"):
        return validate_endpoint(bound)
    host, _, port = bound[len("tcp://") :].rpartition(":")
    if advertise:
        return validate_endpoint(TcpAddress(validate_host(advertise, what="advertised host"), int(port)).endpoint())
    if host in WILDCARD_HOSTS:
        raise WireError("bad-endpoint", f"bound on a wildcard address ({bound}); give an address to advertise")
    return validate_endpoint(bound)


@functools.lru_cache(maxsize=4096)
def canonical(endpoint: str) -> str:
    """*endpoint* with a DNS name resolved to its first address: monitor
    events name the resolved address, and two spellings of one listener must
    count as one. Endpoints that do not parse, or names that do not resolve,
    come back unchanged (they can never match a monitor event)."""
    if not endpoint.startswith("tcp://"):
        return endpoint
    try:
        addr = parse_tcp(endpoint)
    except WireError:
        return endpoint
    if addr.is_ip:
        return addr.endpoint(str(ipaddress.ip_address(addr.host.split("%", 1)[0])))
    try:
        # IPv4 first, as libzmq resolves (ZMQ_IPV6 is off): its monitor events
        # must name the same address ("localhost" is ::1 first on many hosts).
        info = socket.getaddrinfo(addr.host, addr.port, socket.AF_INET, socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        try:
            info = socket.getaddrinfo(addr.host, addr.port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return endpoint
    return addr.endpoint(str(info[0][4][0]))
