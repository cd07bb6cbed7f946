#!/usr/bin/env python3
"""Client-side SMTP scenarios run against a live spate by the Rust
integration tests (tests/smtplib_transactions.rs, tests/starttls.rs, ...).

Usage: smtp_scenarios.py SCENARIO HOST PORT [--cafile PEM] [--limit N]

Each scenario talks to the server with Python's smtplib (or, where smtplib
cannot, a raw socket: PIPELINING groups, BDAT, STARTTLS injection) and
prints ONE line of JSON with what it saw. It asserts nothing about spate's
behaviour itself: the Rust test does, so a failure shows both sides. The
script exits non-zero only when it cannot run at all.
Standard library only.
"""

import argparse
import json
import smtplib
import socket
import ssl
import sys
import time
import traceback

DOMAIN = "example.test"
TIMEOUT = 20


def reply_dict(code, msg):
    if isinstance(msg, bytes):
        msg = msg.decode("utf-8", "replace")
    return {"code": code, "text": msg}


def message(marker, size=400):
    """An RFC 5322 message with CRLF endings, about `size` bytes of body."""
    head = (
        f"From: <sender@{DOMAIN}>\r\nTo: <rcpt@{DOMAIN}>\r\n"
        f"Subject: {marker}\r\nMessage-ID: <{marker}@client.test>\r\n\r\n"
    )
    body = []
    n = 0
    i = 0
    while n < size:
        line = f"{marker} body line {i:05d} the quick brown fox\r\n"
        body.append(line)
        n += len(line)
        i += 1
    return (head + "".join(body)).encode()


def connect(host, port):
    s = smtplib.SMTP(timeout=TIMEOUT)
    s._host = host  # the name STARTTLS verifies (connect() does not set it)
    code, msg = s.connect(host, port)
    return s, reply_dict(code, msg)


def features(s):
    return {k.lower(): v for k, v in s.esmtp_features.items()}


# ---------------------------------------------------------------- smtplib


def sc_ehlo(a, out):
    s, greeting = connect(a.host, a.port)
    code, msg = s.ehlo("client.test")
    out.update({"greeting": greeting, "ehlo": reply_dict(code, msg), "features": features(s)})
    out["helo_after_ehlo"] = reply_dict(*s.helo("client.test"))
    out["quit"] = reply_dict(*s.quit())
    return out


def sc_transactions(a, out):
    """Several transactions in one session through smtplib's own API,
    including the null sender, several recipients, DSN parameters,
    SMTPUTF8 and 8BITMIME, and the small commands."""
    s, greeting = connect(a.host, a.port)
    s.ehlo("client.test")
    out.update({"greeting": greeting, "features": features(s), "messages": []})

    def tx(label, sender, rcpts, msg, mail_opts=(), rcpt_opts=()):
        rec = {"label": label, "from": sender, "to": rcpts, "size_sent": len(msg)}
        code, resp = s.mail(sender, list(mail_opts))
        rec["mail"] = reply_dict(code, resp)
        rec["rcpt"] = []
        for r in rcpts:
            rec["rcpt"].append(reply_dict(*s.rcpt(r, list(rcpt_opts))))
        code, resp = s.data(msg)
        rec["data"] = reply_dict(code, resp)
        out["messages"].append(rec)

    tx("plain", f"alice@{DOMAIN}", [f"bob@{DOMAIN}"], message("plain"))
    tx("null-sender", "", [f"postmaster@{DOMAIN}"], message("bounce"))
    tx(
        "three-rcpts",
        f"alice@{DOMAIN}",
        [f"r1@{DOMAIN}", f"r2@{DOMAIN}", "r3@relay.example"],
        message("three"),
    )
    tx(
        "dsn",
        f"alice@{DOMAIN}",
        [f"dsn@{DOMAIN}"],
        message("dsn"),
        mail_opts=["RET=HDRS", "ENVID=QQ314159"],
        rcpt_opts=["NOTIFY=SUCCESS,FAILURE", f"ORCPT=rfc822;dsn@{DOMAIN}"],
    )
    utf8 = (
        "From: <j\u00f6rg@example.test>\r\nTo: <\u7528\u6237@example.test>\r\n"
        "Subject: gr\u00fc\u00dfe\r\n\r\nK\u00e4se und \u00dcbermut\r\n"
    ).encode("utf-8")
    tx(
        "smtputf8",
        f"j\u00f6rg@{DOMAIN}",
        [f"\u7528\u6237@{DOMAIN}"],
        utf8,
        mail_opts=["SMTPUTF8", "BODY=8BITMIME"],
    )
    tx("quoted-local-part", f'"john doe"@{DOMAIN}', [f'"a..b"@{DOMAIN}'], message("quoted"))
    tx("address-literal", f"alice@{DOMAIN}", ["postmaster@[127.0.0.1]"], message("literal"))
    out["noop"] = reply_dict(*s.noop())
    out["rset"] = reply_dict(*s.rset())
    out["vrfy"] = reply_dict(*s.docmd("VRFY", f"bob@{DOMAIN}"))
    out["help"] = reply_dict(*s.docmd("HELP"))
    # sendmail() is what most programs use: it adds SIZE= by itself.
    refused = s.sendmail(f"carol@{DOMAIN}", [f"dave@{DOMAIN}"], message("sendmail", 2000))
    out["sendmail_refused"] = {k: list(v) for k, v in refused.items()}
    out["quit"] = reply_dict(*s.quit())
    return out


def sc_size(a, out):
    """SIZE declared too big at MAIL, SIZE within the limit, and a message
    that overflows the limit without SIZE (refused after the data)."""
    limit = a.limit
    s, _ = connect(a.host, a.port)
    s.ehlo("client.test")
    out.update({"advertised": features(s).get("size")})
    out["mail_too_big"] = reply_dict(*s.mail(f"alice@{DOMAIN}", [f"SIZE={limit + 1}"]))
    s.rset()
    out["mail_huge"] = reply_dict(*s.mail(f"alice@{DOMAIN}", ["SIZE=99999999999999999999"]))
    s.rset()
    out["mail_ok"] = reply_dict(*s.mail(f"alice@{DOMAIN}", [f"SIZE={limit // 2}"]))
    s.rset()
    # Undeclared overflow: the server must refuse at the end of the data.
    s.mail(f"alice@{DOMAIN}")
    s.rcpt(f"bob@{DOMAIN}")
    big = message("toobig", limit + 5000)
    out["data_overflow"] = reply_dict(*s.data(big))
    # The session must still work afterwards.
    s.rset()
    s.mail(f"alice@{DOMAIN}")
    s.rcpt(f"bob@{DOMAIN}")
    out["after"] = reply_dict(*s.data(message("after-overflow", 200)))
    # sendmail() declares SIZE itself and gets the refusal at MAIL.
    try:
        s.sendmail(f"alice@{DOMAIN}", [f"bob@{DOMAIN}"], message("sendmail-big", limit + 10))
        out["sendmail_big"] = {"code": 250, "text": "accepted"}
    except smtplib.SMTPSenderRefused as e:
        out["sendmail_big"] = reply_dict(e.smtp_code, e.smtp_error)
    except smtplib.SMTPDataError as e:
        out["sendmail_big"] = reply_dict(e.smtp_code, e.smtp_error)
    try:
        out["quit"] = reply_dict(*s.quit())
    except smtplib.SMTPServerDisconnected:
        out["quit"] = None
    return out


def sc_relay(a, out):
    """Local domain accepted from anyone, a foreign domain refused."""
    s, _ = connect(a.host, a.port)
    s.ehlo("client.test")
    out.update({})
    out["mail"] = reply_dict(*s.mail("someone@elsewhere.example"))
    out["rcpt_local"] = reply_dict(*s.rcpt(f"bob@{DOMAIN}"))
    out["rcpt_local_upper"] = reply_dict(*s.rcpt(f"Bob@{DOMAIN.upper()}"))
    out["rcpt_foreign"] = reply_dict(*s.rcpt("victim@relay.example"))
    out["rcpt_foreign_literal"] = reply_dict(*s.rcpt("victim@[192.0.2.1]"))
    out["data"] = reply_dict(*s.data(message("relay-local")))
    # A transaction with only foreign recipients never reaches DATA.
    s.mail("someone@elsewhere.example")
    out["rcpt_foreign_2"] = reply_dict(*s.rcpt("victim@relay.example"))
    out["data_no_rcpt"] = reply_dict(*s.docmd("DATA"))
    try:
        out["quit"] = reply_dict(*s.quit())
    except smtplib.SMTPServerDisconnected:
        out["quit"] = None
    return out


def sc_errors(a, out):
    """Unknown commands, a line too long, bad sequences, bad syntax; the
    session keeps working after each."""
    s, _ = connect(a.host, a.port)
    out.update({})
    out["mail_before_ehlo"] = reply_dict(*s.docmd("MAIL", f"FROM:<alice@{DOMAIN}>"))
    s.rset()
    s.ehlo("client.test")
    out["unknown"] = reply_dict(*s.docmd("FROBNICATE", "now"))
    out["unknown_empty"] = reply_dict(*s.docmd(""))
    out["noop_after_unknown"] = reply_dict(*s.noop())
    out["too_long"] = reply_dict(*s.docmd("NOOP", "x" * (a.limit + 100)))
    out["noop_after_too_long"] = reply_dict(*s.noop())
    out["mail_too_long"] = reply_dict(*s.docmd("MAIL", "FROM:<" + "a" * (a.limit + 100) + f"@{DOMAIN}>"))
    out["noop_after_mail_too_long"] = reply_dict(*s.noop())
    out["rcpt_before_mail"] = reply_dict(*s.docmd("RCPT", f"TO:<bob@{DOMAIN}>"))
    out["data_before_mail"] = reply_dict(*s.docmd("DATA"))
    out["mail_syntax"] = reply_dict(*s.docmd("MAIL", "FROM:alice at example"))
    out["mail"] = reply_dict(*s.mail(f"alice@{DOMAIN}"))
    out["mail_twice"] = reply_dict(*s.docmd("MAIL", f"FROM:<alice@{DOMAIN}>"))
    out["data_before_rcpt"] = reply_dict(*s.docmd("DATA"))
    out["rcpt_syntax"] = reply_dict(*s.docmd("RCPT", "TO:<no-at-sign>"))
    out["rcpt_unknown_param"] = reply_dict(*s.docmd("RCPT", f"TO:<bob@{DOMAIN}> FROBNICATE=1"))
    out["rcpt"] = reply_dict(*s.rcpt(f"bob@{DOMAIN}"))
    out["data"] = reply_dict(*s.data(message("after-errors")))
    out["quit"] = reply_dict(*s.quit())
    return out


def sc_recipients(a, out):
    """More RCPTs than max_recipients (a.limit): the extra ones get 452."""
    s, _ = connect(a.host, a.port)
    s.ehlo("client.test")
    s.mail(f"alice@{DOMAIN}")
    rcpts = [f"r{i:03d}@{DOMAIN}" for i in range(a.limit + 3)]
    out.update({"rcpt": [reply_dict(*s.rcpt(r)) for r in rcpts], "to": rcpts})
    out["data"] = reply_dict(*s.data(message("many-rcpts")))
    out["quit"] = reply_dict(*s.quit())
    return out


# ------------------------------------------------------- raw socket: ESMTP


class Raw:
    """A minimal line-oriented client for what smtplib cannot send."""

    def __init__(self, host, port, sock=None):
        self.sock = sock or socket.create_connection((host, port), timeout=TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def line(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("closed")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.rstrip(b"\r").decode("utf-8", "replace")

    def reply(self):
        lines = []
        while True:
            l = self.line()
            lines.append(l[4:])
            if len(l) < 4 or l[3] != "-":
                return {"code": int(l[:3]), "text": "\n".join(lines)}

    def replies(self, n):
        return [self.reply() for _ in range(n)]

    def cmd(self, c):
        self.send(c.encode() + b"\r\n")
        return self.reply()


def stuff(msg):
    out = []
    for l in msg.split(b"\r\n"):
        out.append(b"." + l if l.startswith(b".") else l)
    return b"\r\n".join(out)


def sc_pipelining(a, out):
    """RFC 2920 groups: MAIL/RCPT/RCPT/DATA in one write; the message data,
    its end and the next group in one write; a failing RCPT in a group; and
    RSET/NOOP/QUIT at the end of a group."""
    r = Raw(a.host, a.port)
    out.update({"greeting": r.reply()})
    out["ehlo"] = r.cmd("EHLO client.test")
    groups = []
    n = 10
    first = (
        f"MAIL FROM:<p0@{DOMAIN}>\r\nRCPT TO:<a@{DOMAIN}>\r\n"
        f"RCPT TO:<b@{DOMAIN}>\r\nDATA\r\n"
    ).encode()
    r.send(first)
    groups.append(r.replies(4))
    sizes = []
    for i in range(n):
        msg = message(f"pipelined-{i}", 300 + 37 * i)
        if i % 3 == 0:
            msg += b".leading dot line\r\n..two dots\r\n"
        sizes.append(len(msg))
        data = stuff(msg) + b".\r\n"
        if i + 1 < n:
            # message end + next transaction, with one bad RCPT in between
            nxt = (
                f"MAIL FROM:<p{i + 1}@{DOMAIN}>\r\nRCPT TO:<no-at-sign>\r\n"
                f"RCPT TO:<c{i}@{DOMAIN}>\r\nDATA\r\n"
            ).encode()
            r.send(data + nxt)
            groups.append(r.replies(5))
        else:
            r.send(data + b"RSET\r\nNOOP\r\nQUIT\r\n")
            groups.append(r.replies(4))
    out["groups"] = groups
    out["sizes"] = sizes
    return out


def sc_bdat(a, out):
    """RFC 3030 CHUNKING: several chunks, BDAT 0 LAST, a pipelined
    MAIL/RCPT/BDAT LAST group, binary-safe content that looks like a dot
    line, and the sequencing errors."""
    r = Raw(a.host, a.port)
    out.update({"greeting": r.reply(), "ehlo": r.cmd("EHLO client.test"), "messages": []})

    def chunks(label, parts, last_empty=False, sender=None):
        rec = {"label": label, "size_sent": sum(len(p) for p in parts)}
        rec["mail"] = r.cmd(f"MAIL FROM:<{sender or label}@{DOMAIN}>")
        rec["rcpt"] = r.cmd(f"RCPT TO:<bdat@{DOMAIN}>")
        rec["chunks"] = []
        for i, p in enumerate(parts):
            last = i == len(parts) - 1 and not last_empty
            r.send(f"BDAT {len(p)}{' LAST' if last else ''}\r\n".encode() + p)
            rec["chunks"].append(r.reply())
        if last_empty:
            rec["chunks"].append(r.cmd("BDAT 0 LAST"))
        out["messages"].append(rec)

    m1 = message("bdat-one", 1000)
    chunks("bdat-one", [m1])
    m2 = message("bdat-three", 200_000)
    chunks("bdat-three", [m2[:70_000], m2[70_000:140_001], m2[140_001:]])
    m3 = message("bdat-zero-last", 3000)
    chunks("bdat-zero-last", [m3[:1000], m3[1000:]], last_empty=True)
    # Content that would end DATA early or smuggle a command if it were
    # parsed for dots: in BDAT it is just bytes.
    m4 = message("bdat-dots", 100) + (
        f"\r\n.\r\nMAIL FROM:<evil@{DOMAIN}>\r\nRCPT TO:<victim@{DOMAIN}>\r\nDATA\r\n"
        "smuggled\r\n.\r\n"
    ).encode()
    chunks("bdat-dots", [m4])
    # Pipelined: the whole transaction in one write.
    m5 = message("bdat-pipelined", 500)
    r.send(
        f"MAIL FROM:<bdat-pipelined@{DOMAIN}>\r\nRCPT TO:<bdat@{DOMAIN}>\r\n".encode()
        + f"BDAT {len(m5)} LAST\r\n".encode()
        + m5
        + b"NOOP\r\n"
    )
    rs = r.replies(4)
    out["messages"].append(
        {"label": "bdat-pipelined", "size_sent": len(m5), "mail": rs[0], "rcpt": rs[1], "chunks": [rs[2]], "noop": rs[3]}
    )
    # Errors: BDAT with no transaction, DATA after BDAT, bad size.
    out["bdat_without_mail"] = None
    r.send(b"BDAT 5 LAST\r\nhello")
    out["bdat_without_mail"] = r.reply()
    out["noop1"] = r.cmd("NOOP")
    r.cmd(f"MAIL FROM:<mixed@{DOMAIN}>")
    r.cmd(f"RCPT TO:<bdat@{DOMAIN}>")
    r.send(b"BDAT 5\r\nabc\r\n")
    out["bdat_first_chunk"] = r.reply()
    out["data_after_bdat"] = r.cmd("DATA")
    out["rset"] = r.cmd("RSET")
    out["bdat_bad_size"] = r.cmd("BDAT banana")
    out["noop2"] = r.cmd("NOOP")
    out["quit"] = r.cmd("QUIT")
    return out


# ---------------------------------------------------------------- STARTTLS


def tls_context(cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = True
    return ctx


def sc_starttls(a, out):
    s, greeting = connect(a.host, a.port)
    s.ehlo("client.test")
    out.update({"features_before": features(s)})
    code, msg = s.starttls(context=tls_context(a.cafile))
    out["starttls"] = reply_dict(code, msg)
    # smtplib forgets the old EHLO; say it again over TLS.
    s.ehlo("client.test")
    out["features_after"] = features(s)
    out["tls_version"] = s.sock.version()
    out["cipher"] = s.sock.cipher()[0]
    s.mail(f"alice@{DOMAIN}")
    s.rcpt(f"bob@{DOMAIN}")
    out["data"] = reply_dict(*s.data(message("over-tls", 800)))
    out["starttls_again"] = reply_dict(*s.docmd("STARTTLS"))
    out["quit"] = reply_dict(*s.quit())
    return out


def sc_starttls_injection(a, out):
    """CVE-2011-0411 style: plaintext pipelined after STARTTLS must not be
    executed inside the TLS session."""
    r = Raw(a.host, a.port)
    out.update({"greeting": r.reply(), "ehlo": r.cmd("EHLO client.test")})
    r.send(b"STARTTLS\r\nRSET\r\nMAIL FROM:<injected@example.test>\r\n")
    out["starttls"] = r.reply()
    ctx = tls_context(a.cafile)
    try:
        tls = ctx.wrap_socket(r.sock, server_hostname="localhost")
    except (ssl.SSLError, OSError) as e:
        out["handshake"] = f"failed: {e}"
        return out
    out["handshake"] = "ok"
    t = Raw(a.host, a.port, sock=tls)
    t.buf = b""
    try:
        t.send(b"EHLO client.test\r\n")
        out["first_reply_after_tls"] = t.reply()
        out["mail"] = t.cmd(f"MAIL FROM:<alice@{DOMAIN}>")
        out["quit"] = t.cmd("QUIT")
    except (EOFError, OSError, ssl.SSLError) as e:
        out["closed_after_tls"] = str(e)
    return out


def sc_no_starttls(a, out):
    s, _ = connect(a.host, a.port)
    s.ehlo("client.test")
    out.update({"features": features(s), "starttls": reply_dict(*s.docmd("STARTTLS"))})
    out["noop"] = reply_dict(*s.noop())
    out["quit"] = reply_dict(*s.quit())
    return out


SCENARIOS = {
    name[3:]: fn for name, fn in globals().items() if name.startswith("sc_") and callable(fn)
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("scenario", choices=sorted(SCENARIOS))
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--cafile")
    p.add_argument("--limit", type=int, default=0)
    a = p.parse_args()
    started = time.monotonic()
    out = {}
    try:
        SCENARIOS[a.scenario](a, out)
    except Exception:  # report what was seen so far; the Rust test judges
        out["exception"] = traceback.format_exc()
    out["elapsed"] = round(time.monotonic() - started, 3)
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
