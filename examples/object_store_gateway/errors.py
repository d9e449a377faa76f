"""S3 errors: one exception type, the status of every code, and the XML error document.

Every failure the gateway reports to a client is an :class:`S3Error`; the one handler in the app
turns it into S3's ``<Error>`` document with :func:`error_xml`. The code decides the HTTP status
through :data:`STATUS_BY_CODE` (values as Amazon S3 sends them, from the "Error responses" table
of the S3 API reference); a caller passes ``status=`` only where S3 itself varies it.

The document is an escaped string template rather than ElementTree: a few fields, built on every
error path, where the tree costs tens of times more for the same bytes.
"""

from __future__ import annotations

import re
from typing import Final, final
from xml.sax.saxutils import escape

__all__ = ["STATUS_BY_CODE", "S3Error", "error_xml"]

# S3 error code -> HTTP status. Others may add codes here; an unknown code answers 400, as a
# client error is the safe reading of a code nobody classified.
STATUS_BY_CODE: Final[dict[str, int]] = {
    # Addressing and existence.
    "NoSuchBucket": 404,
    "NoSuchKey": 404,
    "NoSuchUpload": 404,
    "NoSuchVersion": 404,
    "BucketAlreadyOwnedByYou": 409,
    "BucketAlreadyExists": 409,
    "BucketNotEmpty": 409,
    "InvalidBucketName": 400,
    "KeyTooLongError": 400,
    "MethodNotAllowed": 405,
    "NotImplemented": 501,
    # Authentication and authorisation.
    "AccessDenied": 403,
    "InvalidAccessKeyId": 403,
    "SignatureDoesNotMatch": 403,
    "RequestTimeTooSkewed": 403,
    "AuthorizationHeaderMalformed": 400,
    "AuthorizationQueryParametersError": 400,
    "ExpiredToken": 400,
    "MissingSecurityHeader": 400,
    "InvalidSecurity": 403,
    # Request bodies and integrity.
    "BadDigest": 400,
    "InvalidDigest": 400,
    "XAmzContentSHA256Mismatch": 400,
    "IncompleteBody": 400,
    "MissingContentLength": 411,
    "EntityTooSmall": 400,
    "EntityTooLarge": 400,
    "MalformedXML": 400,
    "RequestTimeout": 400,
    # Arguments and state.
    "InvalidRequest": 400,
    "InvalidArgument": 400,
    "InvalidPart": 400,
    "InvalidPartOrder": 400,
    "InvalidRange": 416,
    "PreconditionFailed": 412,
    "NotModified": 304,
    "InvalidObjectState": 403,
    "InvalidStorageClass": 400,
    # Server side.
    "InternalError": 500,
    "ServiceUnavailable": 503,
    "SlowDown": 503,
}

# The message S3 sends when the caller gives none.
_DEFAULT_MESSAGES: Final[dict[str, str]] = {
    "NoSuchBucket": "The specified bucket does not exist",
    "NoSuchKey": "The specified key does not exist.",
    "NoSuchUpload": "The specified upload does not exist. The upload ID may be invalid, "
    "or the upload may have been aborted or completed.",
    "BucketAlreadyOwnedByYou": "Your previous request to create the named bucket succeeded "
    "and you already own it.",
    "BucketNotEmpty": "The bucket you tried to delete is not empty",
    "InvalidBucketName": "The specified bucket is not valid.",
    "KeyTooLongError": "Your key is too long",
    "MethodNotAllowed": "The specified method is not allowed against this resource.",
    "NotImplemented": "A header you provided implies functionality that is not implemented",
    "AccessDenied": "Access Denied",
    "InvalidAccessKeyId": "The AWS Access Key Id you provided does not exist in our records.",
    "SignatureDoesNotMatch": "The request signature we calculated does not match the signature "
    "you provided. Check your key and signing method.",
    "RequestTimeTooSkewed": "The difference between the request time and the current time "
    "is too large.",
    "BadDigest": "The Content-MD5 you specified did not match what we received.",
    "InvalidDigest": "The Content-MD5 you specified is not valid.",
    "XAmzContentSHA256Mismatch": "The provided 'x-amz-content-sha256' header does not match "
    "what was computed.",
    "IncompleteBody": "You did not provide the number of bytes specified by the "
    "Content-Length HTTP header",
    "MissingContentLength": "You must provide the Content-Length HTTP header.",
    "EntityTooSmall": "Your proposed upload is smaller than the minimum allowed object size.",
    "EntityTooLarge": "Your proposed upload exceeds the maximum allowed object size.",
    "MalformedXML": "The XML you provided was not well-formed or did not validate against "
    "our published schema.",
    "InvalidPart": "One or more of the specified parts could not be found.  The part may not "
    "have been uploaded, or the specified entity tag may not match the part's entity tag.",
    "InvalidPartOrder": "The list of parts was not in ascending order. Parts must be ordered "
    "by part number.",
    "InvalidRange": "The requested range is not satisfiable",
    "PreconditionFailed": "At least one of the pre-conditions you specified did not hold",
    "NotModified": "Not Modified",
    "InternalError": "We encountered an internal error. Please try again.",
    "SlowDown": "Please reduce your request rate.",
    "ServiceUnavailable": "Please reduce your request rate.",
}


@final
class S3Error(Exception):
    """A request failed with an S3 error code; the app answers with S3's error document.

    Attributes:
        code: the S3 error code, e.g. ``"NoSuchKey"``.
        message: the human-readable message (S3's default for the code if none was given).
        status: the HTTP status (from :data:`STATUS_BY_CODE` unless given).
        fields: extra elements of the error document (``BucketName``, ``Key``,
            ``StringToSign``, ...), in the order given.
    """

    __slots__ = ("code", "fields", "message", "status")

    def __init__(
        self, code: str, message: str | None = None, *, status: int | None = None, **fields: str
    ) -> None:
        if message is None:
            message = _DEFAULT_MESSAGES.get(code, code)
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.status = STATUS_BY_CODE.get(code, 400) if status is None else status
        self.fields = fields

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"S3Error({self.code!r}, {self.message!r}, status={self.status})"


_HEAD: Final = '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>'


# Characters XML 1.0 cannot carry, even as references (controls, lone surrogates from keys
# decoded with surrogateescape, U+FFFE/U+FFFF).
_NOT_XML: Final = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_CR: Final = {"\r": "&#13;"}


def _text(value: str) -> str:
    # A key or header echoed in an error may carry characters XML refuses; they become U+FFFD
    # rather than an unparseable document. A CR is kept as a reference, which parsers keep.
    return escape(_NOT_XML.sub("\ufffd", value), _CR)


def error_xml(err: S3Error, resource: str, request_id: str) -> bytes:
    """Render S3's ``<Error>`` document for err.

    Args:
        err: the error to report.
        resource: the bucket or object the request addressed (``/bucket/key``).
        request_id: the request's ``x-amz-request-id``.

    Returns:
        The UTF-8 document: Code, Message, the extra fields, Resource, RequestId. Every value is
        escaped, so a key such as ``a<b&c`` cannot break or inject into the document.
    """
    parts = [_HEAD, _text(err.code), "</Code><Message>", _text(err.message), "</Message>"]
    for name, value in err.fields.items():
        parts.append(f"<{name}>{_text(value)}</{name}>")
    parts.append(f"<Resource>{_text(resource)}</Resource><RequestId>{_text(request_id)}")
    parts.append("</RequestId></Error>")
    return "".join(parts).encode()
