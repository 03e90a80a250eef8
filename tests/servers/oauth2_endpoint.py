#!/usr/bin/python3
"""An OAuth2 provider for mail_gateway's tests: a token endpoint and an introspection endpoint
that Dovecot's oauth2 passdb and the test SMTP server ask whether an access token is valid.

Usage: oauth2_endpoint.py PORT DIR USER REFRESH_TOKEN

POST /token      grant_type=refresh_token (client_secret_post) or authorization_code
POST /introspect token=T (Dovecot's introspection_mode = post) -> {"active": …, "username": USER}
GET  /introspect?token=T   the same, for the SMTP server

Behaviour comes from DIR/control.json, read at every request (the tests rewrite it):
  lifetime  seconds an access token lives (3600)
  rotate    a new refresh token at every refresh, the old one dead at once (true)
  revoked   every refresh answers invalid_grant, as Microsoft does for a revoked grant (false)
  delay     seconds to wait before answering /token (0)
  fail      an HTTP status to answer /token with, e.g. 503 (0: none)
  client_id, client_secret   what the client must send ("mg-app", "mg-secret")
  codes     authorization codes that work once (["the-code"]), redirect_uri ("http://localhost")
After each /token request DIR/state.json says what happened: requests, refreshes, grants,
reuses (a rotated-away refresh token used again: a bug of the client), the last form's keys.
Prints READY once it listens.
"""
import json
import os
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

PORT, DIR, USER, FIRST_REFRESH = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
LOCK = threading.Lock()
STATE = {
    "requests": 0,
    "refreshes": 0,
    "grants": 0,
    "reuses": 0,
    "refused": 0,
    "concurrent_max": 0,
    "refresh_token": FIRST_REFRESH,
    "last_keys": [],
    "last_grant_type": None,
}
OLD_REFRESH = set()
USED_CODES = set()
ACCESS = {}  # token -> expiry (time.time())
IN_FLIGHT = [0]


def control():
    try:
        with open(os.path.join(DIR, "control.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def save_state():
    path = os.path.join(DIR, "state.json")
    with open(path + ".tmp", "w") as f:
        json.dump(STATE, f)
    os.replace(path + ".tmp", path)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True

    def form(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode()
        return {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}

    def introspect(self, token):
        expiry = ACCESS.get(token)
        if expiry is not None and time.time() < expiry:
            return {"active": True, "username": USER, "email": USER}
        return {"active": False}

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/introspect":
            token = parse_qs(url.query).get("token", [""])[0]
            return self.reply(200, self.introspect(token))
        self.reply(404, {"error": "not_found"})

    def do_POST(self):
        url = urlparse(self.path)
        form = self.form()
        if url.path == "/introspect":
            return self.reply(200, self.introspect(form.get("token", "")))
        if url.path != "/token":
            return self.reply(404, {"error": "not_found"})
        c = control()
        with LOCK:
            IN_FLIGHT[0] += 1
            STATE["concurrent_max"] = max(STATE["concurrent_max"], IN_FLIGHT[0])
        try:
            if c.get("delay"):
                time.sleep(float(c["delay"]))
            status, body = self.token(form, c)
        finally:
            with LOCK:
                IN_FLIGHT[0] -= 1
        self.reply(status, body)

    def token(self, form, c):
        with LOCK:
            STATE["requests"] += 1
            STATE["last_keys"] = sorted(form)
            STATE["last_grant_type"] = form.get("grant_type")
            try:
                if c.get("fail"):
                    STATE["refused"] += 1
                    return int(c["fail"]), {"error": "temporarily_unavailable", "error_description": "try again later"}
                if form.get("client_id") != c.get("client_id", "mg-app") or form.get("client_secret") != c.get("client_secret", "mg-secret"):
                    STATE["refused"] += 1
                    return 401, {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."}
                grant = form.get("grant_type")
                if grant == "refresh_token":
                    STATE["refreshes"] += 1
                    given = form.get("refresh_token", "")
                    if c.get("revoked"):
                        STATE["refused"] += 1
                        return 400, {"error": "invalid_grant", "error_description": "AADSTS50173: The provided grant has expired due to it being revoked, a fresh auth token is needed."}
                    if given in OLD_REFRESH:
                        STATE["reuses"] += 1
                        STATE["refused"] += 1
                        return 400, {"error": "invalid_grant", "error_description": "refresh token already used"}
                    if given != STATE["refresh_token"]:
                        STATE["refused"] += 1
                        return 400, {"error": "invalid_grant", "error_description": "AADSTS70008: The provided authorization code or refresh token has expired due to inactivity."}
                elif grant == "authorization_code":
                    code = form.get("code", "")
                    if code in USED_CODES or code not in c.get("codes", ["the-code"]) or form.get("redirect_uri") != c.get("redirect_uri", "http://localhost"):
                        STATE["refused"] += 1
                        return 400, {"error": "invalid_grant", "error_description": "AADSTS70000: The provided authorization code is invalid or expired."}
                    USED_CODES.add(code)
                    STATE["refresh_token"] = "rt-code-" + secrets.token_hex(6)
                else:
                    return 400, {"error": "unsupported_grant_type"}
                lifetime = float(c.get("lifetime", 3600))
                access = "at-%d-%s" % (STATE["grants"] + 1, secrets.token_hex(8))
                ACCESS[access] = time.time() + lifetime
                STATE["grants"] += 1
                body = {"token_type": "Bearer", "access_token": access, "expires_in": lifetime, "scope": form.get("scope", "")}
                if grant == "authorization_code" or c.get("rotate", True):
                    if grant == "refresh_token":
                        OLD_REFRESH.add(STATE["refresh_token"])
                        STATE["refresh_token"] = "rt-%d-%s" % (STATE["grants"], secrets.token_hex(6))
                    body["refresh_token"] = STATE["refresh_token"]
                return 200, body
            finally:
                save_state()

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # A client that gave up on a slow answer (the tests make some wait on purpose) is
        # expected, not a traceback in the test's output.
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


server = Server(("127.0.0.1", PORT), Handler)
server.daemon_threads = True
save_state()
print("READY", flush=True)
server.serve_forever()
