#!/usr/bin/python3
"""An authoritative DNS server for tests (dnslib): answers from a JSON zone file
{"name": {"TXT": [...], "MX": [[10, "host"]], "A": [...], "AAAA": [...]}} on 127.0.0.1, UDP and
TCP. Unknown names are NXDOMAIN; known names without the type answer empty.
Usage: dns_server.py PORT ZONES.json"""
import json
import sys
import time

from dnslib import AAAA, MX, QTYPE, RCODE, RR, TXT, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer

PORT, ZONES = int(sys.argv[1]), json.load(open(sys.argv[2]))
ZONES = {k.lower().rstrip("."): v for k, v in ZONES.items()}


class Resolver(BaseResolver):
    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        qtype = QTYPE[request.q.qtype]
        zone = ZONES.get(name)
        if zone is None:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        for value in zone.get(qtype, []):
            if qtype == "TXT":
                chunks = [value[i:i + 255].encode() for i in range(0, len(value), 255)] or [b""]
                rdata = TXT(chunks)
            elif qtype == "MX":
                rdata = MX(value[1], value[0])
            elif qtype == "A":
                rdata = A(value)
            elif qtype == "AAAA":
                rdata = AAAA(value)
            else:
                continue
            reply.add_answer(RR(request.q.qname, request.q.qtype, rdata=rdata, ttl=60))
        return reply


quiet = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data")
for tcp in (False, True):
    DNSServer(Resolver(), address="127.0.0.1", port=PORT, tcp=tcp, logger=quiet).start_thread()
print("READY", flush=True)
while True:
    time.sleep(3600)
