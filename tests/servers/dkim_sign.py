#!/usr/bin/env python3
"""Signs a message with DKIM (dkimpy, independent of mail_gateway), for tests of inbound mail.

usage: dkim_sign.py DOMAIN SELECTOR PRIVATE_KEY_PEM_FILE < message > signed message
Relaxed/relaxed, rsa-sha256, the usual headers.
"""
import sys

import dkim


def main():
    domain, selector, key_file = sys.argv[1:4]
    message = sys.stdin.buffer.read()
    signature = dkim.sign(
        message,
        selector.encode(),
        domain.encode(),
        open(key_file, "rb").read(),
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=[b"from", b"to", b"subject", b"message-id", b"in-reply-to", b"date"],
    )
    sys.stdout.buffer.write(signature + message)


if __name__ == "__main__":
    main()
