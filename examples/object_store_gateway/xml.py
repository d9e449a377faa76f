"""XML in and out: a hardened parser for request bodies, escaped templates for responses.

Parsing goes through ``defusedxml`` with ``forbid_dtd=True``, so entity expansion (billion
laughs, quadratic blow-up), external entities and external DTDs are refused before any work is
done (measured in the issue: under 0.1 ms per hostile payload, against 305 ms of CPU for the
stdlib parser on billion laughs), and bodies over :data:`MAX_XML_BYTES` are refused unread.

Responses are string templates with every value escaped, not ElementTree: a 1,000-key listing
builds in about a millisecond this way against 30 ms through a tree.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Final
from xml.etree.ElementTree import Element, ParseError
from xml.sax.saxutils import escape

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from .errors import S3Error

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "MAX_XML_BYTES",
    "NS",
    "iso8601",
    "parse_complete",
    "parse_delete",
    "parse_xml",
    "text",
]

NS: Final = "http://s3.amazonaws.com/doc/2006-03-01/"
HEAD: Final = '<?xml version="1.0" encoding="UTF-8"?>\n'
MAX_XML_BYTES: Final = 2 << 20  # DeleteObjects of 1,000 long keys fits; S3 caps it similarly
MAX_DELETE_KEYS: Final = 1000

# Characters XML 1.0 cannot carry even as references: they become U+FFFD in responses.
_NOT_XML: Final = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ENTITIES: Final = {"\r": "&#13;", '"': "&quot;"}


def text(value: str) -> str:
    """Escape a value for an element's text or an attribute."""
    return escape(_NOT_XML.sub("\ufffd", value), _ENTITIES)


def iso8601(ns: int) -> str:
    """A timestamp as S3 writes it in XML: ``2024-05-01T12:34:56.789Z``."""
    seconds, rest = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{rest // 1_000_000:03d}Z"


def parse_xml(body: bytes) -> Element:
    """Parse a request body, refusing DTDs, entities and oversized documents.

    Raises:
        S3Error: MalformedXML (not well-formed, a DTD or entity, or over the size cap).
    """
    if len(body) > MAX_XML_BYTES:
        raise S3Error("MalformedXML", "The XML you provided was larger than the allowed size.")
    try:
        root: Element = fromstring(body, forbid_dtd=True)
    except (ParseError, DefusedXmlException, ValueError, UnicodeError):
        raise S3Error("MalformedXML") from None
    return root


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _children(el: Element, name: str) -> Iterable[Element]:
    return (c for c in el if _local(c.tag) == name)


def _child_text(el: Element, name: str) -> str | None:
    for c in _children(el, name):
        return c.text or ""
    return None


def parse_delete(body: bytes) -> tuple[list[str], bool]:
    """Parse a DeleteObjects body: the keys (in order) and whether Quiet was asked for.

    Raises:
        S3Error: MalformedXML (wrong root, no or over 1,000 objects, an object without a key).
    """
    root = parse_xml(body)
    if _local(root.tag) != "Delete":
        raise S3Error("MalformedXML")
    keys: list[str] = []
    for obj in _children(root, "Object"):
        key = _child_text(obj, "Key")
        if key is None:
            raise S3Error("MalformedXML")
        keys.append(key)
    if not keys or len(keys) > MAX_DELETE_KEYS:
        raise S3Error("MalformedXML")
    quiet = (_child_text(root, "Quiet") or "false").strip().lower() == "true"
    return keys, quiet


def parse_complete(body: bytes) -> list[tuple[int, str]]:
    """Parse a CompleteMultipartUpload body: (part number, ETag without quotes) in order.

    Raises:
        S3Error: MalformedXML (wrong root, no parts, a part without number or ETag);
            InvalidArgument (a part number out of 1-10,000).
    """
    root = parse_xml(body)
    if _local(root.tag) != "CompleteMultipartUpload":
        raise S3Error("MalformedXML")
    parts: list[tuple[int, str]] = []
    for part in _children(root, "Part"):
        number = _child_text(part, "PartNumber")
        etag = _child_text(part, "ETag")
        if number is None or etag is None:
            raise S3Error("MalformedXML")
        try:
            n = int(number.strip())
        except ValueError:
            raise S3Error("MalformedXML") from None
        if not 1 <= n <= 10_000:
            raise S3Error("InvalidArgument", "Part number must be an integer between 1 and 10000")
        parts.append((n, etag.strip().strip('"')))
    if not parts:
        raise S3Error("MalformedXML")
    return parts


def parse_location(body: bytes) -> str | None:
    """The LocationConstraint of a CreateBucket body (None if the body is empty).

    Raises:
        S3Error: MalformedXML.
    """
    if not body.strip():
        return None
    root = parse_xml(body)
    if _local(root.tag) != "CreateBucketConfiguration":
        raise S3Error("MalformedXML")
    return _child_text(root, "LocationConstraint")


def document(root: str, inner: Iterable[str]) -> bytes:
    """A response document: ``<root xmlns=S3>inner...</root>`` as UTF-8."""
    return f'{HEAD}<{root} xmlns="{NS}">{"".join(inner)}</{root}>'.encode()


def elem(name: str, value: str | int | bool | None) -> str:
    """One escaped element; None gives nothing, booleans are ``true``/``false``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        value = "true" if value else "false"
    return f"<{name}>{text(str(value))}</{name}>"
