"""URLs we fetch and URLs we hand out.

Input URLs: a host is read the way a browser's URL parser (WHATWG URL Standard, "host parsing")
reads it, so that every spelling of an address reaches the SSRF check as that address:
numeric forms (``0177.0.0.1``, ``0x7f.1``, ``2130706433``, ``127.1``), IDNA-mapped digits
(``①②⑦.0.0.1``, fullwidth ``１２７．０．０．１``) and IPv4 addresses inside IPv6
(``[::ffff:127.0.0.1]``, ``[::127.0.0.1]``). Anything unparsable is a ``UrlError``.

Output URLs: the absolute v2 URLs (segmind-api.md §4.1) come from the configured public base
URL, or from ``X-Forwarded-*`` only when the peer is a trusted proxy, else from the request's
own Host header, so a client cannot make the server hand out links to another host.
"""
from __future__ import annotations

import ipaddress
import re
import unicodedata
import urllib.parse
from dataclasses import dataclass

import idna

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_PORTS = {"http": 80, "https": 443}
# UTS 46 maps these full stops to "." (NFKC alone maps only U+FF0E).
IDEOGRAPHIC_STOPS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
DNS_NAME = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)(\.(?!-)[a-z0-9_-]{1,63}(?<!-))*$")
FORBIDDEN_IN_URL = re.compile(r"[\x00-\x20\x7f]")


class UrlError(ValueError):
    """An input URL that cannot be parsed; the message says why."""


@dataclass(frozen=True)
class HttpTarget:
    """An http(s) URL with its host in canonical form."""

    scheme: str
    host: str  # dotted IPv4, compressed IPv6 (no brackets) or an ASCII (punycode) name
    port: int
    target: str  # path and query, as sent in the request line
    address: IPAddress | None  # the host when it is an address literal, IPv4 inside IPv6 unwrapped

    @property
    def authority(self) -> str:
        """The Host header: canonical host, and the port when it is not the scheme's default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    def at(self, address: IPAddress) -> str:
        """This URL with its host replaced by ``address`` (the address checked, then connected to)."""
        host = f"[{address}]" if address.version == 6 else str(address)
        return f"{self.scheme}://{host}:{self.port}{self.target}"


def parse_ipv4_number(part: str) -> int | None:
    """One part of a numeric IPv4 host: decimal, octal with a leading 0, hex with 0x."""
    if part[:2] in ("0x", "0X"):
        digits, radix = part[2:] or "0", 16
    elif len(part) > 1 and part.startswith("0"):
        digits, radix = part[1:], 8
    else:
        digits, radix = part, 10
    if not digits.isascii() or not digits.isalnum():
        return None
    try:
        return int(digits, radix)
    except ValueError:
        return None


def ends_in_a_number(host: str) -> bool:
    """WHATWG's test for a host that must be read as IPv4 (and is invalid if it cannot be)."""
    parts = host.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()
    last = parts[-1]
    if last and last.isascii() and last.isdigit():
        return True
    return last[:2] in ("0x", "0X") and parse_ipv4_number(last) is not None


def parse_ipv4_host(host: str) -> ipaddress.IPv4Address:
    """The address behind any of the 1- to 4-part numeric IPv4 spellings."""
    parts = host.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()
    if len(parts) > 4:
        raise UrlError(f"{host} is not a valid IPv4 address")
    numbers = [parse_ipv4_number(part) for part in parts]
    if any(n is None for n in numbers):
        raise UrlError(f"{host} is not a valid IPv4 address")
    *leading, last = numbers
    if any(n > 255 for n in leading) or last >= 256 ** (5 - len(numbers)):
        raise UrlError(f"{host} is not a valid IPv4 address")
    value = last + sum(n << (8 * (3 - i)) for i, n in enumerate(leading))
    return ipaddress.IPv4Address(value)


def unwrap_ipv4(address: IPAddress) -> IPAddress:
    """IPv4-mapped (``::ffff:a.b.c.d``) and IPv4-compatible (``::a.b.c.d``) IPv6 as the IPv4
    address they name; ``::`` and ``::1`` are themselves, every other address unchanged."""
    if address.version == 4:
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    value = int(address)
    if value >> 32 == 0 and value > 1:
        return ipaddress.IPv4Address(value)
    return address


def parse_ipv6_host(bracketed: str) -> ipaddress.IPv6Address:
    inner = bracketed[1:-1]
    if "%" in inner:  # a zone id names an interface of *this* machine
        raise UrlError(f"{bracketed} has a zone id, which input URLs may not use")
    try:
        return ipaddress.IPv6Address(inner)
    except ValueError:
        raise UrlError(f"{bracketed} is not a valid IPv6 address") from None


def canonical_name(raw: str) -> str:
    """A host name after percent-decoding and IDNA mapping: lower case, ASCII (punycode)."""
    try:
        text = urllib.parse.unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise UrlError(f"{raw} is not a valid host name") from None
    text = unicodedata.normalize("NFKC", text).translate(IDEOGRAPHIC_STOPS).lower()
    if ends_in_a_number(text):
        return text
    if not text.isascii():
        try:
            text = idna.encode(text, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError, ValueError):
            raise UrlError(f"{raw} is not a valid host name") from None
    name = text[:-1] if text.endswith(".") else text
    if not DNS_NAME.match(name):
        raise UrlError(f"{raw} is not a valid host name")
    return name


def parse_http_url(url: str) -> HttpTarget:
    """An http(s) URL with a canonical host, or ``UrlError``."""
    url = url.strip()
    if FORBIDDEN_IN_URL.search(url):
        raise UrlError("the URL contains spaces or control characters")
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in DEFAULT_PORTS:
        raise UrlError("only http(s) URLs can be fetched")
    authority_end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, remainder = rest[:authority_end], rest[authority_end:]
    if "@" in authority:
        raise UrlError("credentials in input URLs are not accepted")
    if authority.startswith("["):
        close = authority.find("]")
        if close < 0:
            raise UrlError("the IPv6 address is not closed with ]")
        host_text, port_text = authority[:close + 1], authority[close + 1:]
        if port_text and not port_text.startswith(":"):
            raise UrlError("unexpected text after the IPv6 address")
        port_text = port_text[1:]
    else:
        host_text, _, port_text = authority.partition(":")
    if not host_text:
        raise UrlError("the URL has no host")
    port = DEFAULT_PORTS[scheme]
    if port_text:
        if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
            raise UrlError(f"{port_text} is not a valid port")
        port = int(port_text)
    if host_text.startswith("["):
        literal = parse_ipv6_host(host_text)
        host, address = str(literal), unwrap_ipv4(literal)
    else:
        name = canonical_name(host_text)
        if ends_in_a_number(name):
            address = parse_ipv4_host(name)
            host = str(address)
        else:
            host, address = name, None
    target = remainder.partition("#")[0] or "/"
    if not target.startswith("/"):
        target = "/" + target
    return HttpTarget(scheme=scheme, host=host, port=port, target=target, address=address)


# -- absolute URLs we hand out ----------------------------------------------------------------

HOST_HEADER = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?$")
PATH_PREFIX = re.compile(r"^(?:/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)*$")


def is_trusted_proxy(peer: str | None, trusted: list[IPNetwork]) -> bool:
    if not peer:
        return False
    try:
        address = unwrap_ipv4(ipaddress.ip_address(peer))
    except ValueError:
        return False
    return any(address in net for net in trusted if net.version == address.version)


def first_value(value: str | None) -> str:
    """The first (client-most) entry of a comma-separated forwarded header."""
    return (value or "").split(",")[0].strip()


def public_base_url(configured: str | None, headers, peer: str | None, scheme: str,
                    server: tuple[str, int] | None, root_path: str, trusted: list[IPNetwork]) -> str:
    """Where clients reach this server, for absolute URLs (segmind-api.md §4.1).

    ``X-Forwarded-Proto/Host/Prefix`` are honoured only from a trusted proxy: from anyone else
    they would let a client plant a foreign host in the links it is given. A header that is
    not a well-formed scheme, host or path is ignored.
    """
    if configured:
        return configured.rstrip("/")
    host = headers.get("host", "")
    prefix = root_path
    if is_trusted_proxy(peer, trusted):
        scheme = first_value(headers.get("x-forwarded-proto")).lower() or scheme
        host = first_value(headers.get("x-forwarded-host")) or host
        prefix = headers.get("x-forwarded-prefix", prefix).strip()
    if scheme not in DEFAULT_PORTS:
        scheme = "http"
    if not HOST_HEADER.match(host):
        bound_host, bound_port = server or ("127.0.0.1", 80)
        host = f"[{bound_host}]:{bound_port}" if ":" in bound_host else f"{bound_host}:{bound_port}"
    prefix = prefix.rstrip("/")
    if not PATH_PREFIX.match(prefix):
        prefix = ""
    return f"{scheme}://{host}{prefix}"
