#!/usr/bin/env python3
"""A scripted SMTP receiver for delivery tests: accepts mail and appends
each message as one JSON line to OUT (with its arrival time); refuses
chosen recipients with 550 and answers 451 to the first N end-of-data.
Records each connection with the number open at that moment. Standard
library only. Prints "ready" once listening; stops on SIGTERM.

With --dsn it announces DSN (RFC 3461) and records the MAIL and RCPT
command lines as received, parameters included.

usage: capture_sink.py IP PORT OUT [--reject ADDR]... [--tempfail N] [--tempfail-text REPLY] [--delay-ms MS] [--dsn]
"""
import argparse
import json
import socketserver
import threading
import time

ap = argparse.ArgumentParser()
ap.add_argument("ip")
ap.add_argument("port", type=int)
ap.add_argument("out")
ap.add_argument("--reject", action="append", default=[])
ap.add_argument("--tempfail", type=int, default=0)
ap.add_argument("--tempfail-text", default="451 4.3.0 Error: try again later", help="the reply to a tempfailed end-of-data")
ap.add_argument("--delay-ms", type=int, default=0, help="pause before each end-of-data reply")
ap.add_argument("--dsn", action="store_true", help="announce DSN")
args = ap.parse_args()

lock = threading.Lock()
state = {"tempfail": args.tempfail, "open": 0}


def record(obj):
    with lock:
        with open(args.out, "a") as f:
            f.write(json.dumps(obj) + "\n")


class Handler(socketserver.StreamRequestHandler):
    def send(self, line):
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self):
        with lock:
            state["open"] += 1
            open_now = state["open"]
        record({"event": "connection", "open": open_now, "at": time.time()})
        self.counted = True
        try:
            self.session()
        finally:
            self.uncount()

    def uncount(self):
        with lock:
            if self.counted:
                state["open"] -= 1
                self.counted = False

    def session(self):
        self.send("220 sink.test ESMTP")
        sender, rcpts, lines = None, [], []
        while True:
            line = self.rfile.readline(4096)
            if not line:
                return
            cmd = line.decode("latin-1").strip()
            verb = cmd.split(" ", 1)[0].upper()
            if verb == "EHLO":
                self.send("250-sink.test")
                self.send("250-8BITMIME")
                if args.dsn:
                    self.send("250-DSN")
                self.send("250 ENHANCEDSTATUSCODES")
            elif verb == "HELO":
                self.send("250 sink.test")
            elif verb == "MAIL":
                sender, rcpts, lines = cmd[cmd.index("<") + 1 : cmd.index(">")], [], [cmd]
                self.send("250 2.1.0 Ok")
            elif verb == "RCPT":
                addr = cmd[cmd.index("<") + 1 : cmd.index(">")]
                if addr in args.reject:
                    self.send(f"550 5.1.1 <{addr}>: Recipient address rejected: no such user")
                else:
                    rcpts.append(addr)
                    lines.append(cmd)
                    self.send("250 2.1.5 Ok")
            elif verb == "DATA":
                if not rcpts:
                    self.send("554 5.5.1 Error: no valid recipients")
                    continue
                self.send("354 End data with <CR><LF>.<CR><LF>")
                data = b""
                while True:
                    chunk = self.rfile.readline(1 << 20)
                    if not chunk:
                        return
                    if chunk == b".\r\n":
                        break
                    data += chunk[1:] if chunk.startswith(b".") else chunk
                time.sleep(args.delay_ms / 1000)
                with lock:
                    fail = state["tempfail"] > 0
                    if fail:
                        state["tempfail"] -= 1
                if fail:
                    self.send(args.tempfail_text)
                else:
                    record({"event": "message", "from": sender, "to": rcpts, "data": data.decode("latin-1"), "at": time.time(), "commands": lines})
                    self.send("250 2.0.0 Ok: queued")
                sender, rcpts = None, []
            elif verb == "RSET":
                sender, rcpts = None, []
                self.send("250 2.0.0 Ok")
            elif verb == "NOOP":
                self.send("250 2.0.0 Ok")
            elif verb == "QUIT":
                # The client is done with this connection once it says
                # QUIT: it may open the next before it reads our 221.
                self.uncount()
                self.send("221 2.0.0 Bye")
                return
            else:
                self.send("502 5.5.2 Error: command not recognized")


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    # The default backlog of 5 drops connects when a relay opens twenty at
    # once; the relay would then wait out its 5-minute greeting timeout.
    request_queue_size = 512


with Server((args.ip, args.port), Handler) as server:
    print("ready", flush=True)
    server.serve_forever()
