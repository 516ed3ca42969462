#!/usr/bin/env python3
"""oauth_server: a local OAuth 2.0 token server for imapferry's integration tests.

Started and stopped by ferry_harness.py (never on its own in the tests):

  oauth_server.py --config DIR/oauth/config.json

config.json: {"cert": PEM, "key": PEM, "public_key": PEM of the test service
account, "client_email": the account's e-mail, "users": [harness users],
"fixed_tokens": {user: token}, "port_file": path, "pid_file": path}.

It listens on a free 127.0.0.1 port over HTTPS (the harness's certificate),
writes that port to port_file once it accepts connections, and serves:

  POST /token       Google's JWT-bearer grant (RFC 7523) as
                    oauth2.googleapis.com/token answers it: the RS256
                    signature is checked against the service account's public
                    key, then iss, aud (https://127.0.0.1:PORT/token), scope
                    (https://mail.google.com/), iat/exp and sub (a harness
                    user). Success: {"access_token", "token_type": "Bearer",
                    "expires_in"}; a random token bound to sub. Failure: HTTP
                    400 {"error": "invalid_grant", "error_description": ...}.
  POST /introspect  What Dovecot's oauth2 passdb calls (introspection_mode =
  GET  /introspect  post, or get with ?token=): {"active": true, "username":
                    user} for an issued or fixed token, else {"active": false}.
  GET  /stats       {"grants": {sub: n}, "last_tokens": {sub: token},
                    "introspections": n} for the tests (local test tokens).

Tokens and assertions are never written to the log. Python 3 standard
library; python3-cryptography verifies signatures when installed, else the
openssl command does.
"""

import argparse
import base64
import json
import os
import secrets
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:  # python3-cryptography; else the openssl command verifies
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding
except ImportError:
    serialization = None

SCOPE = "https://mail.google.com/"
GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_LIFETIME = 3600
MAX_BODY = 65536
CLOCK_SKEW = 300  # seconds of iat in the future that are accepted


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class State:
    def __init__(self, cfg):
        self.public_key_file = cfg["public_key"]
        self.public_key = None
        if serialization is not None:
            with open(cfg["public_key"], "rb") as f:
                self.public_key = serialization.load_pem_public_key(f.read())
        self.client_email = cfg["client_email"]
        self.users = set(cfg["users"])
        self.tokens = {tok: (user, None) for user, tok in cfg["fixed_tokens"].items()}
        self.grants = {}
        self.last_tokens = {}  # sub: the last token issued (for the tests' leak checks)
        self.introspections = 0
        self.aud = None  # set once the port is known
        self.lock = threading.Lock()

    def verify(self, signed, signature):
        """RS256 (RSASSA-PKCS1-v1_5 with SHA-256) against the account's key."""
        if self.public_key is not None:
            try:
                self.public_key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
                return True
            except (InvalidSignature, ValueError):
                return False
        with tempfile.TemporaryDirectory() as tmp:
            data, sig = os.path.join(tmp, "data"), os.path.join(tmp, "sig")
            with open(data, "wb") as f:
                f.write(signed)
            with open(sig, "wb") as f:
                f.write(signature)
            r = subprocess.run(["openssl", "dgst", "-sha256", "-verify", self.public_key_file,
                                "-signature", sig, data], capture_output=True)
            return r.returncode == 0

    def grant(self, assertion):
        """(status, reply dict) for a JWT-bearer assertion."""
        def refuse(desc, error="invalid_grant"):
            return 400, {"error": error, "error_description": desc}

        parts = assertion.split(".")
        if len(parts) != 3:
            return refuse("Invalid JWT: Token must be a short-lived token and in a reasonable "
                          "timeframe")
        try:
            header = json.loads(b64url_decode(parts[0]))
            claims = json.loads(b64url_decode(parts[1]))
            signature = b64url_decode(parts[2])
        except (ValueError, UnicodeDecodeError):
            return refuse("Invalid JWT: not base64url JSON")
        if not isinstance(header, dict) or header.get("alg") != "RS256":
            return refuse("Invalid JWT: alg must be RS256")
        if not self.verify(f"{parts[0]}.{parts[1]}".encode("ascii"), signature):
            return refuse("Invalid JWT Signature.")
        if not isinstance(claims, dict):
            return refuse("Invalid JWT: claims are not an object")
        now = time.time()
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or not isinstance(exp, int) or iat > now + CLOCK_SKEW \
                or exp <= now or exp - iat > TOKEN_LIFETIME:
            return refuse("Invalid JWT: Token must be a short-lived token (60 minutes) and in "
                          "a reasonable timeframe. Check your iat and exp values in the JWT "
                          "claim.")
        if claims.get("iss") != self.client_email:
            return refuse("Invalid JWT: unknown issuer", "invalid_client")
        if claims.get("aud") != self.aud:
            return refuse(f"Invalid JWT: aud must be {self.aud}")
        if SCOPE not in str(claims.get("scope", "")).split():
            return refuse("Invalid JWT: scope must include " + SCOPE, "invalid_scope")
        sub = claims.get("sub")
        if sub not in self.users:
            return refuse("Invalid email or User ID", "unauthorized_client")
        token = "ya29.ferry-" + secrets.token_urlsafe(32)
        with self.lock:
            self.tokens[token] = (sub, now + TOKEN_LIFETIME)
            self.grants[sub] = self.grants.get(sub, 0) + 1
            self.last_tokens[sub] = token
        return 200, {"access_token": token, "token_type": "Bearer",
                     "expires_in": TOKEN_LIFETIME}

    def introspect(self, token):
        with self.lock:
            self.introspections += 1
            user, expires = self.tokens.get(token or "", (None, None))
        if user is None or (expires is not None and expires < time.time()):
            return {"active": False}
        return {"active": True, "username": user, "scope": SCOPE}


def make_handler(state):
    class Handler(BaseHTTPRequestHandler):
        server_version = "ferry-oauth/1"
        protocol_version = "HTTP/1.0"

        def log_message(self, fmt, *args):  # the path only: never a token
            sys.stderr.write(f"{self.log_date_time_string()} {self.command} "
                             f"{urllib.parse.urlsplit(self.path).path} {args[1] if len(args) > 1 else ''}\n")

        def reply(self, status, obj):
            data = json.dumps(obj).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def form(self):
            try:
                n = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                n = -1
            if n < 0 or n > MAX_BODY:
                return None
            return urllib.parse.parse_qs(self.rfile.read(n).decode("utf-8", "replace"))

        def bearer(self):
            auth = self.headers.get("Authorization", "")
            return auth[7:].strip() if auth.lower().startswith("bearer ") else None

        def do_POST(self):
            path = urllib.parse.urlsplit(self.path).path
            form = self.form()
            if form is None:
                return self.reply(413, {"error": "invalid_request"})
            if path == "/token":
                if form.get("grant_type", [""])[0] != GRANT:
                    return self.reply(400, {"error": "unsupported_grant_type",
                                            "error_description": "Invalid grant_type"})
                status, obj = state.grant(form.get("assertion", [""])[0])
                return self.reply(status, obj)
            if path == "/introspect":
                token = form.get("token", [None])[0] or self.bearer()
                return self.reply(200, state.introspect(token))
            return self.reply(404, {"error": "not_found"})

        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            if url.path == "/introspect":
                token = urllib.parse.parse_qs(url.query).get("token", [None])[0] or self.bearer()
                return self.reply(200, state.introspect(token))
            if url.path == "/stats":
                with state.lock:
                    return self.reply(200, {"grants": dict(state.grants),
                                            "last_tokens": dict(state.last_tokens),
                                            "introspections": state.introspections})
            return self.reply(404, {"error": "not_found"})

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True)
    args = ap.parse_args()
    with open(args.config) as f:
        cfg = json.load(f)
    state = State(cfg)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    httpd.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cfg["cert"], cfg["key"])
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    port = httpd.server_address[1]
    state.aud = f"https://127.0.0.1:{port}/token"
    with open(cfg["pid_file"] + ".tmp", "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(cfg["pid_file"] + ".tmp", cfg["pid_file"])
    with open(cfg["port_file"] + ".tmp", "w") as f:
        f.write(f"{port}\n")
    os.replace(cfg["port_file"] + ".tmp", cfg["port_file"])
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
