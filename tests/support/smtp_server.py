"""A real SMTP server for the tests (aiosmtpd): accepts mail on 127.0.0.1 and appends one JSON
line per message (envelope sender, recipients, login, whether it came over TLS, and the
message's subject, id and decoded body) to a file.

Usage: python3 smtp_server.py OUT_FILE [--auth USER PASSWORD] [--starttls CERT KEY | --tls CERT KEY]
-- prints the port it listens on. With --auth it accepts only that login; with --starttls it
requires STARTTLS (with that certificate) before anything else; with --tls it speaks TLS from
the first byte (SMTPS).
"""
import argparse
import email
import email.policy
import json
import socket
import ssl
import time
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

parser = argparse.ArgumentParser()
parser.add_argument("out")
parser.add_argument("--auth", nargs=2, metavar=("USER", "PASSWORD"))
parser.add_argument("--starttls", nargs=2, metavar=("CERT", "KEY"))
parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
args = parser.parse_args()


class Store:
    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with open(args.out, "a") as out:
            out.write(json.dumps({
                "from": envelope.mail_from,
                "to": envelope.rcpt_tos,
                "login": session.auth_data if session.authenticated else None,
                "tls": session.ssl is not None
                or server.transport.get_extra_info("ssl_object") is not None,
                "subject": message["Subject"],
                "message_id": message["Message-ID"],
                "body": message.get_content(),
            }) + "\n")
        return "250 OK"


def authenticator(user, password):
    def check(server, session, envelope, mechanism, auth_data):
        ok = auth_data.login.decode() == user and auth_data.password.decode() == password
        return AuthResult(success=ok, auth_data=auth_data.login.decode() if ok else None)
    return check


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Plain AUTH on loopback is the point of some tests.
warnings.filterwarnings("ignore")
port = free_port()
kwargs = {}
if args.auth:
    kwargs.update(authenticator=authenticator(*args.auth), auth_required=True,
                  # aiosmtpd counts only STARTTLS as TLS for AUTH; SMTPS is TLS throughout.
                  auth_require_tls=bool(args.starttls))
if args.starttls:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*args.starttls)
    kwargs.update(tls_context=context, require_starttls=True)
if args.tls:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*args.tls)
    kwargs.update(ssl_context=context)
controller = Controller(Store(), hostname="127.0.0.1", port=port, **kwargs)
controller.start()
print(port, flush=True)
try:
    while True:
        time.sleep(3600)
finally:
    controller.stop()
