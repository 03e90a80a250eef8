#!/usr/bin/env python3
"""A real SMTP server (aiosmtpd) for mail_gateway's integration tests.

It records every message it accepts, byte for byte with its envelope, as one JSON line in
--out, and answers some addresses with scripted errors:
  MAIL FROM refuse-sender@…     -> 553 5.7.1
  RCPT TO   reject…@…           -> 550 5.1.1
  RCPT TO   tempfail…@…         -> 451 4.2.0
  a message with a line "X-Test-Reject: yes" -> 554 5.6.0 after DATA
  a message From: sendas…@…     -> Microsoft 365's 554 5.2.252 SendAsDenied after DATA (its own text)
--quota-after N accepts N messages, then answers every MAIL FROM with Google's 550 5.4.5
"Daily user sending limit exceeded" (its own text).
--auth-reply TEXT answers every AUTH with TEXT (a provider's refusal, e.g. Microsoft's
"535 5.7.139 … SmtpClientAuthentication is disabled for the Tenant").
--tls starttls|ssl uses --cert/--key; --auth USER:PASSWORD requires AUTH (PLAIN or LOGIN);
--xoauth2 USER:TOKEN also accepts AUTH XOAUTH2 with that access token (with --xoauth2-introspect
URL: any token for USER that URL calls active, as an OAuth2 provider would); --client-ca FILE
requires a client certificate signed by FILE (its CN is recorded as "peer").
--hang accepts connections and never answers (timeout tests).
--flaky P answers 4xx at random (RCPT with probability P, DATA P/2), drops the line at MAIL
(P/4) and answers slowly (P/4): a server having a bad day (fault tests).
--pipelining and --chunking advertise PIPELINING and CHUNKING (BDAT, RFC 3030, implemented
here); --no-ehlo refuses EHLO, so the client falls back to HELO and gets no extension at all.
--delay S waits S seconds before answering each message (many connections in flight).
--rate-limit N:S accepts N messages, then answers every MAIL FROM with 421 and closes the
connection for S seconds, then accepts N more (a provider's rate limit).
Each record names its session (the client's port), so tests can count connections.
Prints READY once it listens.
"""
import argparse
import asyncio
import base64
import json
import logging
import random
import socket
import ssl
import sys
import threading
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, LoginPassword

# aiosmtpd 1.4 sets its own deprecated Session.login_data after every AUTH and logs a warning
# each time: thousands of identical lines that bury a failing test's output.
logging.getLogger("mail.log").addFilter(lambda record: "login_data is deprecated" not in record.getMessage())


class Recorder:
    def __init__(self, out, xoauth2=None, extensions=(), no_ehlo=False, delay=0.0, rate_limit=None,
                 quota_after=None):
        self.out = out
        self.quota_after = quota_after
        self.xoauth2 = xoauth2
        self.extensions = list(extensions)
        self.no_ehlo = no_ehlo
        self.delay = delay
        self.rate_limit = rate_limit  # (messages, seconds)
        self.window_count = 0
        self.closed_until = 0.0
        self.lock = threading.Lock()
        self.count = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        if self.no_ehlo:
            return ["502 5.5.2 Error: command not recognized"]
        session.host_name = hostname
        return responses[:-1] + ["250-" + e for e in self.extensions] + responses[-1:]

    async def auth_XOAUTH2(self, server, args):
        # RFC-less but common: base64("user=U\x01auth=Bearer T\x01\x01") as initial response.
        if self.xoauth2 is None or len(args) < 2:
            return AuthResult(success=False, handled=False)
        fields = dict(f.split("=", 1) for f in base64.b64decode(args[1]).decode().split("\x01") if "=" in f)
        user, token = self.xoauth2
        bearer = fields.get("auth", "")
        if INTROSPECT:
            given = bearer[len("Bearer "):] if bearer.startswith("Bearer ") else ""
            active = await asyncio.get_running_loop().run_in_executor(None, introspect, given)
            ok = fields.get("user") == user and active
        else:
            ok = fields.get("user") == user and bearer == "Bearer " + token
        return AuthResult(success=ok, handled=False, auth_data=user if ok else None)

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.rate_limit and time.monotonic() < self.closed_until:
            # 421 closes the connection, after the answer is written.
            asyncio.get_running_loop().call_later(0.1, server.transport.close)
            return "421 4.7.0 too many messages, slow down"
        if FLAKY and random.random() < FLAKY / 4:
            server.transport.close()  # the line drops
            return "421 4.3.0 closing"
        if FLAKY and random.random() < FLAKY / 4:
            await asyncio.sleep(0.3)  # a slow answer
        if address.lower().startswith("refuse-sender"):
            return "553 5.7.1 <%s>: sender address rejected" % address
        if self.quota_after is not None and self.count >= self.quota_after:
            return ("550-5.4.5 Daily user sending limit exceeded. For more information on Gmail\r\n"
                    "550-5.4.5 sending limits go to\r\n"
                    "550 5.4.5  https://support.google.com/a/answer/166852 d9443c01a7336-2 - gsmtp")
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
        if self.delay:
            await asyncio.sleep(self.delay)
        data = envelope.original_content
        if b"\r\nX-Test-Reject: yes\r\n" in data or data.startswith(b"X-Test-Reject: yes\r\n"):
            return "554 5.6.0 message refused by content policy"
        if b"\r\nFrom: sendas" in data or data.startswith(b"From: sendas"):
            return ("554 5.2.252 SendAsDenied; %s not allowed to send as sendas@mycompany.com; "
                    "STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; "
                    "Failed to process message due to a permanent exception with message "
                    "[BeginDiagnosticData]Cannot submit message.[EndDiagnosticData]" % envelope.mail_from)
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "data": base64.b64encode(data).decode(),
            "tls": server.transport.get_extra_info("ssl_object") is not None,
            "auth": session.auth_data if session.authenticated else None,
            "peer": peer_cn(server),
            "session": session.peer[1] if session.peer else None,
            "open_sessions": OPEN_SESSIONS[0],
        }
        with self.lock:
            if self.rate_limit:
                self.window_count += 1
                if self.window_count >= self.rate_limit[0]:
                    self.window_count = 0
                    self.closed_until = time.monotonic() + self.rate_limit[1]
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


def authenticator(user, password, refusal=None):
    def check(server, session, envelope, mechanism, auth_data):
        if refusal:
            return AuthResult(success=False, handled=False, message=refusal)
        ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user and auth_data.password.decode() == password
        return AuthResult(success=ok, handled=False, auth_data=user if ok else None)

    return check


FLAKY = 0.0
INTROSPECT = None


def introspect(token):
    """Asks the test OAuth2 provider whether an access token is valid now."""
    import urllib.parse
    import urllib.request
    data = urllib.parse.urlencode({"token": token}).encode()
    try:
        with urllib.request.urlopen(INTROSPECT, data=data, timeout=5) as r:
            return bool(json.load(r).get("active"))
    except Exception:
        return False


OPEN_SESSIONS = [0]


class ChunkingSMTP(SMTP):
    """aiosmtpd with BDAT (RFC 3030): chunks of exactly the announced size, not dot-stuffed;
    the last one hands the message to the handler as DATA would. It also counts the open
    sessions, which each record reports."""

    def connection_made(self, transport):
        OPEN_SESSIONS[0] += 1
        super().connection_made(transport)

    def connection_lost(self, error):
        OPEN_SESSIONS[0] -= 1
        super().connection_lost(error)

    async def smtp_BDAT(self, arg):
        words = (arg or "").split()
        if not words or not words[0].isdigit() or len(words) > 2 or (len(words) == 2 and words[1].upper() != "LAST"):
            await self.push("501 5.5.4 Syntax: BDAT size [LAST]")
            return
        chunk = await self._reader.readexactly(int(words[0]))
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        # The chunks live on the envelope: RSET and the end of a message start a new one.
        chunks = getattr(self.envelope, "bdat_chunks", [])
        chunks.append(chunk)
        self.envelope.bdat_chunks = chunks
        if len(words) == 1:
            await self.push("250 2.0.0 %d octets received" % len(chunk))
            return
        content = b"".join(chunks)
        self.envelope.original_content = content
        self.envelope.content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)


class RecordingController(Controller):
    def factory(self):
        return ChunkingSMTP(self.handler, **self.SMTP_kwargs)


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
    p.add_argument("--auth-reply")
    p.add_argument("--xoauth2")
    p.add_argument("--xoauth2-introspect")
    p.add_argument("--client-ca")
    p.add_argument("--hang", action="store_true")
    p.add_argument("--flaky", type=float, default=0.0, help="probability of a 4xx answer (and of drops and delays)")
    p.add_argument("--pipelining", action="store_true")
    p.add_argument("--chunking", action="store_true")
    p.add_argument("--no-ehlo", action="store_true")
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--rate-limit")
    p.add_argument("--quota-after", type=int)
    a = p.parse_args()
    global FLAKY, INTROSPECT
    FLAKY = a.flaky
    INTROSPECT = a.xoauth2_introspect
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
        kwargs["authenticator"] = authenticator(user, password, a.auth_reply)
        kwargs["auth_required"] = True
        kwargs["auth_require_tls"] = a.tls != "none"
    xoauth2 = tuple(a.xoauth2.split(":", 1)) if a.xoauth2 else None
    extensions = (["PIPELINING"] if a.pipelining else []) + (["CHUNKING"] if a.chunking else [])
    rate_limit = tuple(float(x) for x in a.rate_limit.split(":")) if a.rate_limit else None
    recorder = Recorder(a.out, xoauth2, extensions, a.no_ehlo, a.delay, rate_limit, a.quota_after)
    controller = RecordingController(recorder, **kwargs)
    controller.start()
    print("READY", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        controller.stop()


if __name__ == "__main__":
    main()
