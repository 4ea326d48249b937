"""A fake Hugging Face Hub and a plain file server on 127.0.0.1, for the downloader tests.

The hub serves enough of ``/{repo}/resolve/{revision}/{path}`` for huggingface_hub via
``HF_ENDPOINT`` (HEAD/GET with ETag, X-Repo-Commit, Content-Length, Range); any other path is a
plain file (GitHub-release style). ``cut[path] = n`` makes the next n GETs of ``path`` stop
half-way through the body, as a dropped connection does.
"""
from __future__ import annotations

import hashlib
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"
RANGE_RE = re.compile(r"bytes=(\d+)-$")


class FakeServer:
    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self.respond(body=False)

            def do_GET(self):
                self.respond(body=True)

            def respond(self, body: bool):
                path = urlsplit(self.path).path
                server.requests.append((self.command, path, {k.lower(): v for k, v in self.headers.items()}))
                if path == "/":
                    return self.send_bytes(200, b"", {}, body)
                data = server.files.get(path)
                if data is None:
                    headers = {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found"}
                    return self.send_bytes(404, b"not found", headers, body)
                headers = {
                    "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                    "X-Repo-Commit": COMMIT,
                    "Accept-Ranges": "bytes",
                }
                start = 0
                match = RANGE_RE.match(self.headers.get("Range", ""))
                if match:
                    start = int(match.group(1))
                    if start >= len(data):
                        return self.send_bytes(416, b"", {"Content-Range": f"bytes */{len(data)}"}, body)
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                status = 206 if match else 200
                if body and server.cut.get(path, 0) > 0:
                    server.cut[path] -= 1
                    return self.send_cut(status, data[start:], headers)
                self.send_bytes(status, data[start:], headers, body)

            def start_reply(self, status, headers, length):
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(length))
                self.end_headers()

            def send_bytes(self, status, data, headers, body):
                self.start_reply(status, headers, len(data))
                if body:
                    self.wfile.write(data)

            def send_cut(self, status, data, headers):
                # The full length is announced: the client sees a body that stops short.
                self.start_reply(status, headers, len(data))
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def add_hf(self, repo: str, path: str, data: bytes, revision: str = "main") -> None:
        self.files[f"/{repo}/resolve/{revision}/{path}"] = data

    def add(self, path: str, data: bytes) -> str:
        self.files[path] = data
        return self.url + path

    def gets(self, path_part: str) -> list[dict[str, str]]:
        return [h for m, p, h in self.requests if m == "GET" and path_part in p]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"
