"""moto's S3 server, plus the check AWS S3 makes and moto leaves undone (a TODO in moto): a put
whose body does not match its x-amz-checksum-sha256 is refused with 400 BadDigest, as AWS, MinIO
and Ceph do. Run: python tests/checking_s3_server.py HOST PORT."""

from __future__ import annotations

import base64
import hashlib
import io
import sys

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple

REFUSAL = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>BadDigest</Code>'
    b"<Message>The SHA256 you specified did not match the calculated checksum.</Message></Error>"
)


def checking(application):
    def app(environ, start_response):
        claimed = environ.get("HTTP_X_AMZ_CHECKSUM_SHA256")
        if environ["REQUEST_METHOD"] == "PUT" and claimed:
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            if base64.b64encode(hashlib.sha256(body).digest()).decode() != claimed:
                start_response(
                    "400 Bad Request",
                    [("Content-Type", "application/xml"), ("Content-Length", str(len(REFUSAL)))],
                )
                return [REFUSAL]
            environ["wsgi.input"] = io.BytesIO(body)
        return application(environ, start_response)

    return app


if __name__ == "__main__":
    host, port = sys.argv[1], int(sys.argv[2])
    run_simple(host, port, checking(DomainDispatcherApplication(create_backend_app)), threaded=True)
