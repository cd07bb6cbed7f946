"""Verifies the topmost DKIM signature of each message file with dkimpy
(Debian's python3-dkim; Ed25519 through python3-nacl), the public keys
read over DNS from the test's own server through dnspython. An
independent verifier: it shares no code with spate or mail-auth.

usage: /usr/bin/python3 dkim_verify.py DNS_IP:PORT FILE...
prints one JSON line: {FILE: {"signed", "ok", "d", "s", "a", "error"}}
"""
import json
import re
import sys

import dkim
import dns.resolver

server, port = sys.argv[1].rsplit(":", 1)
resolver = dns.resolver.Resolver(configure=False)
resolver.nameservers = [server]
resolver.port = int(port)


def txt(name, timeout=5):
    if isinstance(name, bytes):
        name = name.decode()
    try:
        answer = resolver.resolve(name, "TXT", lifetime=timeout)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return None
    return b"".join(answer[0].strings)


results = {}
for path in sys.argv[2:]:
    with open(path, "rb") as f:
        message = f.read()
    signed = re.search(rb"^DKIM-Signature:", message, re.I | re.M) is not None
    d = dkim.DKIM(message, minkey=1024)
    error = None
    try:
        ok = bool(d.verify(dnsfunc=txt))
    except dkim.DKIMException as e:
        ok, error = False, str(e)
    fields = dict(d.signature_fields or {})

    def tag(name):
        value = fields.get(name)
        return value.decode() if value is not None else None

    results[path] = {
        "signed": signed,
        "ok": ok,
        "d": tag(b"d"),
        "s": tag(b"s"),
        "a": tag(b"a"),
        "h": tag(b"h"),
        "error": error,
    }
print(json.dumps(results))
