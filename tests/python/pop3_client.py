#!/usr/bin/env python3
"""Client-side POP3 scenarios run against a live spate by the Rust
integration tests (tests/pop3_clients.rs), with Python's poplib.

Usage: pop3_client.py SCENARIO HOST PORT --user U --password P
                      [--mode plain|stls|pop3s] [--cafile PEM]

Scenarios:
  fetch       log in (over the connection --mode asks for), list, UIDL and
              RETR every message, QUIT without deleting anything.
  before_tls  on a plain connection: CAPA, USER/PASS and AUTH PLAIN (each
              expected to be refused by a server that does not trust the
              client), then STLS, CAPA again, USER/PASS and STAT.

Prints ONE line of JSON with what it saw; messages are base64 of the bytes
poplib returned, re-joined with CRLF (poplib strips line ends and undoes
the dot-stuffing). It asserts nothing about spate itself: the Rust test
does. Exits non-zero only when it cannot run at all. Standard library only.
"""

import argparse
import base64
import json
import poplib
import ssl
import sys

TIMEOUT = 30


def context(cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = True
    return ctx


def text(b):
    if isinstance(b, bytes):
        return b.decode("utf-8", "replace")
    return str(b)


def attempt(fn, *args):
    """Runs a poplib call; {"ok": reply} or {"err": reply}."""
    try:
        return {"ok": text(fn(*args))}
    except poplib.error_proto as e:
        return {"err": text(e.args[0] if e.args else e)}


def connect(args):
    if args.mode == "pop3s":
        return poplib.POP3_SSL(
            args.host, args.port, timeout=TIMEOUT, context=context(args.cafile)
        )
    return poplib.POP3(args.host, args.port, timeout=TIMEOUT)


def tls_version(p):
    sock = p.sock
    return sock.version() if isinstance(sock, ssl.SSLSocket) else None


def fetch(args):
    out = {}
    p = connect(args)
    out["greeting"] = text(p.getwelcome())
    out["capa_before"] = sorted(p.capa().keys())
    if args.mode == "stls":
        out["stls"] = text(p.stls(context=context(args.cafile)))
        out["capa_after"] = sorted(p.capa().keys())
    out["tls_version"] = tls_version(p)
    out["user"] = text(p.user(args.user))
    out["pass"] = text(p.pass_(args.password))
    count, octets = p.stat()
    out["stat"] = [count, octets]
    resp, lines, _ = p.list()
    out["list"] = [text(l) for l in lines]
    resp, lines, _ = p.uidl()
    out["uidl"] = [text(l).split(" ", 1)[1] for l in lines]
    messages = []
    for i in range(1, count + 1):
        resp, lines, octets = p.retr(i)
        body = b"".join(line + b"\r\n" for line in lines)
        messages.append(base64.b64encode(body).decode())
    out["messages"] = messages
    out["quit"] = text(p.quit())
    return out


def before_tls(args):
    out = {}
    p = poplib.POP3(args.host, args.port, timeout=TIMEOUT)
    out["capa_before"] = sorted(p.capa().keys())
    out["user"] = attempt(p.user, args.user)
    out["pass"] = attempt(p.pass_, args.password)
    plain = base64.b64encode(
        b"\0" + args.user.encode() + b"\0" + args.password.encode()
    ).decode()
    out["auth_plain"] = attempt(p._shortcmd, "AUTH PLAIN " + plain)
    out["stat_unauthenticated"] = attempt(p._shortcmd, "STAT")
    out["stls"] = text(p.stls(context=context(args.cafile)))
    out["tls_version"] = tls_version(p)
    out["capa_after"] = sorted(p.capa().keys())
    out["user_after"] = attempt(p.user, args.user)
    out["pass_after"] = attempt(p.pass_, args.password)
    out["stat_after"] = list(p.stat())
    out["quit"] = text(p.quit())
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", choices=["fetch", "before_tls"])
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--mode", choices=["plain", "stls", "pop3s"], default="plain")
    ap.add_argument("--cafile")
    args = ap.parse_args()
    try:
        out = fetch(args) if args.scenario == "fetch" else before_tls(args)
    except Exception as e:  # report, let the Rust side show it
        out = {"exception": f"{type(e).__name__}: {e}"}
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
