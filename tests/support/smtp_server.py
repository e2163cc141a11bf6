"""A real SMTP server for the tests (aiosmtpd): accepts mail on 127.0.0.1 and appends one JSON
line per message (envelope sender, recipients, login, and the message's subject, id and decoded body) to a file.
With USER and PASSWORD it offers AUTH PLAIN/LOGIN and accepts only that login.

Usage: python3 smtp_server.py OUT_FILE [USER PASSWORD]  -- prints the port it listens on.
"""
import email
import email.policy
import json
import socket
import sys
import time
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


class Store:
    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with open(sys.argv[1], "a") as out:
            out.write(json.dumps({
                "from": envelope.mail_from,
                "to": envelope.rcpt_tos,
                "login": session.auth_data if session.authenticated else None,
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


# Plain AUTH on loopback is the point here.
warnings.filterwarnings("ignore")
port = free_port()
kwargs = {}
if len(sys.argv) == 4:
    kwargs = dict(authenticator=authenticator(sys.argv[2], sys.argv[3]), auth_require_tls=False, auth_required=True)
controller = Controller(Store(), hostname="127.0.0.1", port=port, **kwargs)
controller.start()
print(port, flush=True)
try:
    while True:
        time.sleep(3600)
finally:
    controller.stop()
