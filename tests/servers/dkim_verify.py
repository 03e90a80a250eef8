#!/usr/bin/env python3
"""Independent DKIM verification (dkimpy), with the key given instead of looked up in DNS.

usage: dkim_verify.py MESSAGE_FILE "v=DKIM1; k=rsa; p=…"
Prints PASS and exits 0 when the signature verifies, else prints FAIL and exits 1.
"""
import sys

import dkim


def main():
    message = open(sys.argv[1], "rb").read()
    record = sys.argv[2].encode()
    ok = dkim.verify(message, dnsfunc=lambda name, timeout=5: record)
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
