from __future__ import annotations

import defusedxml.ElementTree as DET
import pytest
from hypothesis import given
from hypothesis import strategies as st

from examples.object_store_gateway.errors import STATUS_BY_CODE, S3Error, error_xml


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("NoSuchBucket", 404),
        ("NoSuchKey", 404),
        ("AccessDenied", 403),
        ("InvalidAccessKeyId", 403),
        ("SignatureDoesNotMatch", 403),
        ("RequestTimeTooSkewed", 403),
        ("BadDigest", 400),
        ("InvalidDigest", 400),
        ("XAmzContentSHA256Mismatch", 400),
        ("InvalidRange", 416),
        ("PreconditionFailed", 412),
        ("NotModified", 304),
        ("MethodNotAllowed", 405),
        ("NotImplemented", 501),
        ("MissingContentLength", 411),
        ("BucketAlreadyOwnedByYou", 409),
        ("BucketNotEmpty", 409),
        ("NoSuchUpload", 404),
        ("InternalError", 500),
        ("SlowDown", 503),
        ("InvalidObjectState", 403),
    ],
)
def test_status_from_table(code: str, status: int) -> None:
    err = S3Error(code)
    assert err.status == status == STATUS_BY_CODE[code]
    assert err.code == code
    assert err.message  # S3's default text, never empty
    assert err.fields == {}


def test_explicit_status_message_and_fields() -> None:
    err = S3Error("AccessDenied", "Request has expired", status=403, Expires="x", ServerTime="y")
    assert (err.code, err.message, err.status) == ("AccessDenied", "Request has expired", 403)
    assert err.fields == {"Expires": "x", "ServerTime": "y"}
    assert str(err) == "AccessDenied: Request has expired"
    assert "403" in repr(err)


def test_unknown_code_is_a_client_error() -> None:
    err = S3Error("SomethingNew")
    assert err.status == 400
    assert err.message == "SomethingNew"


def test_error_xml_document() -> None:
    err = S3Error("NoSuchKey", BucketName="b", Key="k")
    doc = error_xml(err, "/b/k", "REQ1")
    assert doc.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<Error>')
    root = DET.fromstring(doc, forbid_dtd=True)
    assert root.tag == "Error"
    assert [c.tag for c in root] == [
        "Code",
        "Message",
        "BucketName",
        "Key",
        "Resource",
        "RequestId",
    ]
    assert root.findtext("Code") == "NoSuchKey"
    assert root.findtext("Message") == "The specified key does not exist."
    assert root.findtext("Key") == "k"
    assert root.findtext("Resource") == "/b/k"
    assert root.findtext("RequestId") == "REQ1"


def test_error_xml_escapes_injection() -> None:
    key = "a<b>&c\"'</Key><Code>Owned</Code>"
    doc = error_xml(S3Error("NoSuchKey", Key=key), f"/b/{key}", "r")
    root = DET.fromstring(doc, forbid_dtd=True)
    assert root.findtext("Code") == "NoSuchKey"
    assert root.findtext("Key") == key
    assert root.findtext("Resource") == f"/b/{key}"


@given(st.text(), st.text())
def test_error_xml_always_parses(key: str, message: str) -> None:
    # Any text (controls, lone surrogates from surrogateescape-decoded keys) gives a document
    # a strict parser accepts; characters XML cannot carry become U+FFFD, the rest round-trips.
    doc = error_xml(S3Error("InvalidArgument", message, ArgumentValue=key), key, "id")
    root = DET.fromstring(doc, forbid_dtd=True)
    got = root.findtext("ArgumentValue")
    assert got is not None
    assert len(got) == len(key)
    for original, seen in zip(key, got, strict=True):
        assert seen in (original, "\ufffd")
    assert root.findtext("Message") is not None


def test_error_xml_keeps_carriage_return() -> None:
    root = DET.fromstring(error_xml(S3Error("InvalidArgument", "a\r\nb"), "/", "i"))
    assert root.findtext("Message") == "a\r\nb"


def test_error_xml_replaces_surrogates_from_undecodable_keys() -> None:
    key = b"caf\xe9".decode("utf-8", "surrogateescape")
    root = DET.fromstring(error_xml(S3Error("NoSuchKey", Key=key), "/", "i"))
    assert root.findtext("Key") == "caf\ufffd"
