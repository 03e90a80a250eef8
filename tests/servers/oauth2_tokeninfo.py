#!/usr/bin/python3
"""A token-info endpoint for Dovecot's oauth2 passdb: GET /tokeninfo?access_token=T answers
{"email": USER} for the one valid token, 401 otherwise. Usage: oauth2_tokeninfo.py PORT USER TOKEN"""
import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlparse

PORT, USER, TOKEN = int(sys.argv[1]), sys.argv[2], sys.argv[3]


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        token = parse_qs(urlparse(self.path).query).get("access_token", [""])[0]
        if token == TOKEN:
            body, status = json.dumps({"email": USER, "active": True}).encode(), 200
        else:
            body, status = json.dumps({"error": "invalid_token"}).encode(), 401
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
