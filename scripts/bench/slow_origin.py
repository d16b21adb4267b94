#!/usr/bin/env python3
"""Slow origin for the cold-key stampede (stdlib only).

Every GET (except /count) sleeps 200 ms, counts the request per path and
answers a cacheable 1 KiB JSON body. GET /count?path=/x returns how many
requests reached the origin for /x (plain integer).

Usage: slow_origin.py PORT
"""
import collections
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COUNTS = collections.Counter()
LOCK = threading.Lock()
BODY = (b'{"slow":true,"pad":"' + b"x" * 1000 + b'"}')[:1024]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _send(self, status, body, cache):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/count":
            path = urllib.parse.parse_qs(url.query).get("path", [""])[0]
            with LOCK:
                n = COUNTS.get(path, 0)
            self._send(200, str(n).encode(), "no-store")
            return
        with LOCK:
            COUNTS[url.path] += 1
        time.sleep(0.2)
        self._send(200, BODY, "public, max-age=3600")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 4096


if __name__ == "__main__":
    Server(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
