#!/usr/bin/env python3
"""A message submission client (RFC 6409) for tests/submission_auth.rs:
connects with smtplib in the clear, with STARTTLS or with implicit TLS
(SMTP_SSL), optionally authenticates (PLAIN or LOGIN), then tries one
transaction. It prints ONE line of JSON with every reply it saw and
asserts nothing about spate: the Rust test does. It exits non-zero only
when it cannot run at all. Standard library only.

usage: submit_client.py HOST PORT --mode plain|starttls|ssl [--cafile PEM]
           [--mech PLAIN|LOGIN] [--user U] [--password P]
           --sender ADDR --rcpt ADDR... [--marker M]
"""

import argparse
import json
import smtplib
import ssl
import sys
import time
import traceback

TIMEOUT = 20


def reply(code, msg):
    if isinstance(msg, bytes):
        msg = msg.decode("utf-8", "replace")
    return {"code": code, "text": msg}


def features(s):
    return {k.lower(): v for k, v in s.esmtp_features.items()}


def message(marker, sender, rcpts):
    body = "".join(f"{marker} body line {i:03d} the quick brown fox\r\n" for i in range(20))
    return (
        f"From: <{sender}>\r\nTo: <{rcpts[0]}>\r\nSubject: {marker}\r\n"
        f"Message-ID: <{marker}@client.test>\r\n\r\n{body}"
    ).encode()


def tls_context(cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = True
    return ctx


def run(a, out):
    if a.mode == "ssl":
        s = smtplib.SMTP_SSL(timeout=TIMEOUT, context=tls_context(a.cafile))
    else:
        s = smtplib.SMTP(timeout=TIMEOUT)
    s._host = a.host  # the name TLS verifies (connect() does not set it)
    out["greeting"] = reply(*s.connect(a.host, a.port))
    out["ehlo"] = reply(*s.ehlo("client.test"))
    out["features"] = features(s)
    if a.mode == "ssl":
        out["cipher"] = s.sock.cipher()[0]
    if a.mode == "starttls":
        out["starttls"] = reply(*s.starttls(context=tls_context(a.cafile)))
        out["cipher"] = s.sock.cipher()[0]
        out["ehlo_tls"] = reply(*s.ehlo("client.test"))
        out["features_tls"] = features(s)
    if a.mech:
        s.user, s.password = a.user, a.password
        auth = {"PLAIN": s.auth_plain, "LOGIN": s.auth_login}[a.mech]
        started = time.monotonic()
        try:
            out["auth"] = reply(*s.auth(a.mech, auth, initial_response_ok=True))
        except smtplib.SMTPAuthenticationError as e:
            out["auth"] = reply(e.smtp_code, e.smtp_error)
        except smtplib.SMTPException as e:
            out["auth"] = {"code": -1, "text": repr(e)}
        out["auth_seconds"] = round(time.monotonic() - started, 3)
    out["mail"] = reply(*s.mail(a.sender))
    if out["mail"]["code"] == 250:
        out["rcpt"] = [reply(*s.rcpt(r)) for r in a.rcpt]
        if any(r["code"] == 250 for r in out["rcpt"]):
            try:
                out["data"] = reply(*s.data(message(a.marker, a.sender, a.rcpt)))
            except smtplib.SMTPDataError as e:
                out["data"] = reply(e.smtp_code, e.smtp_error)
        else:
            out["rset"] = reply(*s.rset())
    out["quit"] = reply(*s.quit())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--mode", choices=["plain", "starttls", "ssl"], default="starttls")
    p.add_argument("--cafile")
    p.add_argument("--mech", choices=["PLAIN", "LOGIN"])
    p.add_argument("--user", default="")
    p.add_argument("--password", default="")
    p.add_argument("--sender", required=True)
    p.add_argument("--rcpt", action="append", required=True)
    p.add_argument("--marker", default="submit")
    a = p.parse_args()
    out = {}
    try:
        run(a, out)
    except Exception:  # report what was seen so far; the Rust test judges
        out["exception"] = traceback.format_exc()
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
