#!/usr/bin/env python3
"""A real SMTP server (aiosmtpd) for mail_gateway's integration tests.

It records every message it accepts, byte for byte with its envelope, as one JSON line in
--out, and answers some addresses with scripted errors:
  MAIL FROM refuse-sender@…     -> 553 5.7.1
  RCPT TO   reject…@…           -> 550 5.1.1
  RCPT TO   tempfail…@…         -> 451 4.2.0
  a message with a line "X-Test-Reject: yes" -> 554 5.6.0 after DATA
--tls starttls|ssl uses --cert/--key; --auth USER:PASSWORD requires AUTH (PLAIN or LOGIN);
--xoauth2 USER:TOKEN also accepts AUTH XOAUTH2 with that access token; --client-ca FILE
requires a client certificate signed by FILE (its CN is recorded as "peer").
--hang accepts connections and never answers (timeout tests).
--flaky P answers 4xx at random (RCPT with probability P, DATA P/2), drops the line at MAIL
(P/4) and answers slowly (P/4): a server having a bad day (fault tests).
Prints READY once it listens.
"""
import argparse
import asyncio
import base64
import json
import random
import socket
import ssl
import sys
import threading
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Recorder:
    def __init__(self, out, xoauth2=None):
        self.out = out
        self.xoauth2 = xoauth2
        self.lock = threading.Lock()
        self.count = 0

    async def auth_XOAUTH2(self, server, args):
        # RFC-less but common: base64("user=U\x01auth=Bearer T\x01\x01") as initial response.
        if self.xoauth2 is None or len(args) < 2:
            return AuthResult(success=False, handled=False)
        fields = dict(f.split("=", 1) for f in base64.b64decode(args[1]).decode().split("\x01") if "=" in f)
        user, token = self.xoauth2
        ok = fields.get("user") == user and fields.get("auth") == "Bearer " + token
        return AuthResult(success=ok, handled=False, auth_data=user if ok else None)

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if FLAKY and random.random() < FLAKY / 4:
            server.transport.close()  # the line drops
            return "421 4.3.0 closing"
        if FLAKY and random.random() < FLAKY / 4:
            await asyncio.sleep(0.3)  # a slow answer
        if address.lower().startswith("refuse-sender"):
            return "553 5.7.1 <%s>: sender address rejected" % address
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@")[0].lower()
        if local.startswith("reject"):
            return "550 5.1.1 <%s>: recipient address rejected: user unknown" % address
        if local.startswith("tempfail") or (FLAKY and random.random() < FLAKY):
            return "451 4.2.0 <%s>: mailbox busy, try again later" % address
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        if FLAKY and random.random() < FLAKY / 2:
            return "451 4.3.0 temporary failure, try again"
        data = envelope.original_content
        if b"\r\nX-Test-Reject: yes\r\n" in data or data.startswith(b"X-Test-Reject: yes\r\n"):
            return "554 5.6.0 message refused by content policy"
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "data": base64.b64encode(data).decode(),
            "tls": server.transport.get_extra_info("ssl_object") is not None,
            "auth": session.auth_data if session.authenticated else None,
            "peer": peer_cn(server),
        }
        with self.lock:
            self.count += 1
            with open(self.out, "a") as f:
                f.write(json.dumps(record) + "\n")
        return "250 2.0.0 OK queued as %d" % self.count


def peer_cn(server):
    ssl_object = server.transport.get_extra_info("ssl_object")
    cert = ssl_object.getpeercert() if ssl_object else None
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None


def authenticator(user, password):
    def check(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user and auth_data.password.decode() == password
        return AuthResult(success=ok, handled=False, auth_data=user if ok else None)

    return check


FLAKY = 0.0


def hang(port):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(16)
    print("READY", flush=True)
    held = []
    while True:
        conn, _ = listener.accept()
        held.append(conn)  # never answered, never closed


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--out")
    p.add_argument("--tls", choices=["none", "starttls", "ssl"], default="none")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--auth")
    p.add_argument("--xoauth2")
    p.add_argument("--client-ca")
    p.add_argument("--hang", action="store_true")
    p.add_argument("--flaky", type=float, default=0.0, help="probability of a 4xx answer (and of drops and delays)")
    a = p.parse_args()
    global FLAKY
    FLAKY = a.flaky
    if a.hang:
        hang(a.port)
        return
    kwargs = {"hostname": "127.0.0.1", "port": a.port, "decode_data": False, "data_size_limit": 64 * 1024 * 1024}
    if a.tls != "none":
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(a.cert, a.key)
        if a.client_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(a.client_ca)
        if a.tls == "ssl":
            kwargs["ssl_context"] = ctx
        else:
            kwargs["tls_context"] = ctx
            kwargs["require_starttls"] = True
    if a.auth:
        user, password = a.auth.split(":", 1)
        kwargs["authenticator"] = authenticator(user, password)
        kwargs["auth_required"] = True
        kwargs["auth_require_tls"] = a.tls != "none"
    xoauth2 = tuple(a.xoauth2.split(":", 1)) if a.xoauth2 else None
    controller = Controller(Recorder(a.out, xoauth2), **kwargs)
    controller.start()
    print("READY", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        controller.stop()


if __name__ == "__main__":
    main()
