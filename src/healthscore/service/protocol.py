"""Uvicorn's HTTP/1.1 protocol with the service's JSON error shape for bad requests.

A request that is not valid HTTP/1.1 (such as a Content-Length that is not a
number) never reaches the app: Uvicorn responds with status 400 and a plain
text body. `JsonErrorProtocol` responds in the error shape of every other error
(`healthscore.service.errors`), and closes the connection as Uvicorn does.
"""

from __future__ import annotations

import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from healthscore.service.errors import STATUS_CODES

#: Message of the 400 response to a request that is not valid HTTP/1.1.
INVALID_REQUEST_MESSAGE = (
    "the request is not valid HTTP/1.1; check its request line, its headers and "
    "that Content-Length is the byte length of the body"
)


class JsonErrorProtocol(H11Protocol):
    """H11Protocol whose 400 response to a malformed request is JSON."""

    def send_400_response(self, msg: str) -> None:
        body = json.dumps(
            {
                "error": {
                    "status": 400,
                    "code": STATUS_CODES[400],
                    "message": INVALID_REQUEST_MESSAGE,
                    "details": [],
                }
            }
        ).encode("utf-8")
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode("ascii")),
            (b"connection", b"close"),
        ]
        # Sent as Uvicorn sends its own 400 response: h11 lets a server respond to a
        # request that it could not parse, and the connection is closed after it.
        self.transport.write(
            self.conn.send(
                h11.Response(status_code=400, headers=headers, reason=b"Bad Request")
            )
        )
        self.transport.write(self.conn.send(h11.Data(data=body)))
        self.transport.write(self.conn.send(h11.EndOfMessage()))
        self.transport.close()
