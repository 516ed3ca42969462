#!/usr/bin/env python3
"""imapferry-sync's OAuth2 logins, live against the harness's two Dovecots.

Both Dovecots check XOAUTH2/OAUTHBEARER tokens with an oauth2 passdb that
introspects them at the harness's token server (oauth_server.py), which also
implements Google's JWT-bearer grant for a test service account
(DIR/oauth/key.json, token_uri = the local server).

Covers: --oauthaccesstoken1/2 (string and file), --oauthdirect1/2,
--authmech OAUTHBEARER, the service-account flow with key.json on both sides
(copy, then a re-run copying 0; the token is fetched again at a reconnect),
the 'iss;file.p12;passphrase' form (modern and legacy PKCS#12), and the
failures: a bad token (161/162), a token endpoint that refuses the JWT (161,
with the endpoint's error), an unreachable endpoint, an endpoint whose
certificate is not trusted, an unreadable or unusable key (66); and that
neither the token, the JWT nor the key shows up in the output, the log file
or the --debugimap trace.

Uses user ivan on both sides. Needs FERRY_ENV_DIR (the ctest fixture) and
FERRY_SYNC (the binary).
"""

import atexit
import base64
import json
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import unittest
import urllib.request

import ferry_harness as fh

USER = "ivan"
ENV = fh.Env.load()
SYNC = os.environ["FERRY_SYNC"]
WORKDIR = tempfile.mkdtemp(prefix="ferry-oauth-test-")
atexit.register(shutil.rmtree, WORKDIR, ignore_errors=True)
KEY_JSON = str(ENV.oauth_key_json)
SA_KEY = str(ENV.oauth_sa_key)


def base_args(auth1, auth2, log=None):
    """A run for ivan -> ivan; auth1/auth2: the login options of each side."""
    args = [SYNC,
            "--host1", "127.0.0.1", "--port1", str(ENV.port("src", "imap")), "--user1", USER,
            *auth1,
            "--host2", "127.0.0.1", "--port2", str(ENV.port("dst", "imap")), "--user2", USER,
            *auth2,
            "--sslargs1", "SSL_ca_file=" + ENV.ca_file, "--sslargs2", "SSL_ca_file=" + ENV.ca_file,
            "--pidfile", os.path.join(WORKDIR, "sync.pid"), "--tmpdir", WORKDIR]
    if log:
        args += ["--logdir", WORKDIR, "--logfile", log]
    else:
        args += ["--nolog"]
    return args


def run_sync(auth1, auth2, *extra, log=None, env=None):
    p = subprocess.run(base_args(auth1, auth2, log) + list(extra), capture_output=True, text=True,
                       timeout=300, cwd=WORKDIR, env=env)
    return p.returncode, p.stdout + p.stderr


def pw(side):
    return ["--password%d" % side, ENV.password(USER)]


def jwt(side, key=KEY_JSON, mech="XOAUTH2"):
    return ["--authmech%d" % side, mech, "--password%d" % side, key]


def token_stats():
    ctx = ssl.create_default_context(cafile=ENV.ca_file)
    url = f"https://127.0.0.1:{ENV.oauth_port}/stats"
    with urllib.request.urlopen(url, context=ctx, timeout=10) as r:
        return json.load(r)


def grants():
    return token_stats()["grants"].get(USER, 0)


def write(name, text, mode=0o600):
    path = os.path.join(WORKDIR, name)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=WORKDIR)


def key_variant(name, **changes):
    """A copy of the harness key.json with some fields changed."""
    with open(KEY_JSON) as f:
        key = json.load(f)
    key.update(changes)
    return write(name, json.dumps(key))


def pem_body_lines():
    """Some lines of the service account's private key, to look for."""
    with open(SA_KEY) as f:
        lines = [ln for ln in f.read().splitlines() if ln and not ln.startswith("-----")]
    return lines[1:4]


def message(n):
    return (f"From: a@example.net\r\nTo: {USER}@example.org\r\nSubject: oauth {n}\r\n"
            f"Message-ID: <oauth-{n}@example.net>\r\nDate: Mon, 1 Jan 2024 10:00:0{n} +0000\r\n"
            f"\r\nbody {n}\r\n").encode()


class SyncOAuth(unittest.TestCase):

    def setUp(self):
        fh.wipe(ENV, "src", USER)
        fh.wipe(ENV, "dst", USER)

    def assert_login(self, rc, out, mech1, mech2):
        self.assertEqual(0, rc, out[-3000:])
        self.assertIn(f"Host1: success login on [127.0.0.1] with user [{USER}] auth [{mech1}]", out)
        self.assertIn(f"Host2: success login on [127.0.0.1] with user [{USER}] auth [{mech2}]", out)

    def test_access_token_string_and_file(self):
        tok_file = write("token2", ENV.oauth_token(USER) + "\n")
        rc, out = run_sync(["--oauthaccesstoken1", ENV.oauth_token(USER)],
                           ["--oauthaccesstoken2", tok_file], "--justlogin")
        self.assert_login(rc, out, "XOAUTH2", "XOAUTH2")
        self.assertNotIn(ENV.oauth_token(USER), out)

    def test_oauthdirect(self):
        raw = f"user={USER}\x01auth=Bearer {ENV.oauth_token(USER)}\x01\x01".encode()
        direct = base64.b64encode(raw).decode()
        direct_file = write("direct2", direct + "\n")
        rc, out = run_sync(["--oauthdirect1", direct], ["--oauthdirect2", direct_file],
                           "--justlogin")
        self.assert_login(rc, out, "XOAUTH2", "XOAUTH2")
        self.assertNotIn(direct, out)

    def test_oauthbearer(self):
        rc, out = run_sync(["--oauthaccesstoken1", ENV.oauth_token(USER),
                            "--authmech1", "OAUTHBEARER"],
                           ["--oauthaccesstoken2", ENV.oauth_token(USER),
                            "--authmech2", "OAUTHBEARER"], "--justlogin")
        self.assert_login(rc, out, "OAUTHBEARER", "OAUTHBEARER")

    def test_bad_token(self):
        rc, out = run_sync(["--oauthaccesstoken1", "not-a-valid-token"], pw(2), "--justlogin")
        self.assertEqual(161, rc, out[-3000:])
        self.assertIn("Host1 failure: Error login on [127.0.0.1] with user [ivan] auth [XOAUTH2]",
                      out)
        rc, out = run_sync(pw(1), ["--oauthaccesstoken2", ENV.oauth_token("alice")], "--justlogin")
        self.assertEqual(162, rc, out[-3000:])  # alice's token is not ivan's
        self.assertIn("EXIT_AUTHENTICATION_FAILURE_USER2", out)

    def test_service_account_sync_and_rerun(self):
        for n in range(1, 4):
            fh.deliver(ENV, USER, message(n), side="src")
        before = grants()
        rc, out = run_sync(jwt(1), jwt(2, mech="OAUTHBEARER"))
        self.assert_login(rc, out, "XOAUTH2", "OAUTHBEARER")
        self.assertRegex(out, r"Host1: getting an OAuth2 access token for \[ivan\] as service "
                              r"account \[ferry-sync@[^\]]+\] from https://127\.0\.0\.1:\d+/token")
        self.assertRegex(out, r"Messages transferred\s*: 3\b")
        self.assertIn("The sync looks good", out)
        self.assertEqual(before + 2, grants())
        self.assertEqual([], [str(d) for d in fh.compare(ENV, USER, "src", USER, "dst")])
        rc, out = run_sync(jwt(1), jwt(2))
        self.assert_login(rc, out, "XOAUTH2", "XOAUTH2")
        self.assertRegex(out, r"Messages transferred\s*: 0\b")
        self.assertEqual(before + 4, grants())

    def test_service_account_token_refetched_on_reconnect(self):
        fh.populate(ENV, "src", USER, "small", seed=11)
        before = grants()
        p = subprocess.Popen(base_args(jwt(1), jwt(2)) + ["--syncduplicates"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             cwd=WORKDIR)
        lines, kicked = [], False
        for line in p.stdout:
            lines.append(line)
            if not kicked and " copied to " in line:
                subprocess.run(["doveadm", "-c", ENV.values["FERRY_DST_DOVECOT_CONF"], "kick",
                                USER], check=True, capture_output=True)
                kicked = True
        rc = p.wait(timeout=120)
        p.stdout.close()
        out = "".join(lines)
        self.assertTrue(kicked)
        self.assertEqual(0, rc, out[-3000:])
        self.assertIn("Host2: connection lost", out)
        self.assertRegex(out, r"Reconnections to host2\s*: [1-9]")
        reconnects = int(re.search(r"Reconnections to host2\s*: (\d+)", out).group(1))
        self.assertEqual(before + 2 + reconnects, grants())
        self.assertEqual(reconnects + 1,
                         out.count("Host2: getting an OAuth2 access token for [ivan]"))
        self.assertEqual([], [str(d) for d in fh.compare(ENV, USER, "src", USER, "dst")])

    def test_p12_forms(self):
        openssl("req", "-x509", "-key", SA_KEY, "-subj", "/CN=ferry-sync", "-days", "2",
                "-out", "sa.crt")
        email = ENV.oauth_sa_email
        env = dict(os.environ, IMAPFERRY_OAUTH_TOKEN_URI=ENV.oauth_token_uri)
        for name, legacy in (("sa.p12", []), ("sa-legacy.p12", ["-legacy"])):
            openssl("pkcs12", "-export", *legacy, "-in", "sa.crt", "-inkey", SA_KEY,
                    "-passout", "pass:not;a;secret", "-out", name)
            spec = f"{email};{os.path.join(WORKDIR, name)};not;a;secret"
            rc, out = run_sync(jwt(1, spec), jwt(2, spec), "--justlogin", env=env)
            self.assert_login(rc, out, "XOAUTH2", "XOAUTH2")
            self.assertNotIn("not;a;secret", out)
        rc, out = run_sync(jwt(1, f"{email};{os.path.join(WORKDIR, 'sa.p12')};wrong"), pw(2),
                           "--justlogin", env=env)
        self.assertEqual(66, rc, out[-3000:])
        self.assertIn("can not use the PKCS#12 file", out)

    def test_endpoint_refuses_wrong_key(self):
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                "-out", "wrong.key")
        with open(os.path.join(WORKDIR, "wrong.key")) as f:
            wrong = key_variant("wrong.json", private_key=f.read())
        rc, out = run_sync(jwt(1, wrong), pw(2), "--justlogin")
        self.assertEqual(161, rc, out[-3000:])
        self.assertRegex(out, r"Host1 failure: Error login on \[127\.0\.0\.1\] with user \[ivan\] "
                              r"auth \[XOAUTH2\]: token endpoint https://\S+ refused \(HTTP 400\): "
                              r"invalid_grant: Invalid JWT Signature\.")
        self.assertNotIn("trying the LOGIN command", out)  # a key is not a password
        rc, out = run_sync(pw(1), jwt(2, wrong), "--justlogin")
        self.assertEqual(162, rc, out[-3000:])
        self.assertIn("invalid_grant: Invalid JWT Signature.", out)

    def test_endpoint_unreachable_or_untrusted(self):
        port = fh._free_ports(1)[0]
        closed = key_variant("closed.json", token_uri=f"https://127.0.0.1:{port}/token")
        rc, out = run_sync(jwt(1, closed), pw(2), "--justlogin")
        self.assertEqual(161, rc, out[-3000:])
        self.assertIn(f"token endpoint https://127.0.0.1:{port}/token is unreachable: can not "
                      f"connect to 127.0.0.1 port {port}: Connection refused", out)
        # plain IMAP (nothing to verify there), but the token endpoint's
        # certificate is checked against the side's CA file
        args = base_args(jwt(1), pw(2)) + ["--justlogin", "--notls1"]
        args[args.index("SSL_ca_file=" + ENV.ca_file)] = "SSL_ca_file=/etc/ssl/certs/ca-certificates.crt"
        p = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=WORKDIR)
        out = p.stdout + p.stderr
        self.assertEqual(161, p.returncode, out[-3000:])
        self.assertIn("TLS handshake failed: certificate verify failed", out)

    def test_unreadable_or_unusable_key(self):
        missing = os.path.join(WORKDIR, "missing.json")
        rc, out = run_sync(jwt(1, missing), pw(2), "--justlogin")
        self.assertEqual(66, rc, out[-3000:])
        self.assertIn(f"Host1 failure: --password1 service-account key: can not read key file "
                      f"{missing}: No such file or directory", out)
        self.assertIn("EX_NOINPUT", out)
        # a password given by mistake (no such file) is never shown
        rc, out = run_sync(jwt(1, "my-Secret-pw"), pw(2), "--justlogin")
        self.assertEqual(66, rc, out[-3000:])
        self.assertIn("--password1 (MASKED) is neither a readable service-account key file", out)
        self.assertNotIn("my-Secret-pw", out)
        broken = write("broken.json", "{\"client_email\": \"x@y\", ")
        rc, out = run_sync(pw(1), jwt(2, broken), "--justlogin")
        self.assertEqual(66, rc, out[-3000:])
        self.assertIn("is not a JSON object", out)
        nokey = key_variant("nokey.json", private_key="-----BEGIN PRIVATE KEY-----\nAAAA\n")
        rc, out = run_sync(jwt(1, nokey), pw(2), "--justlogin")
        self.assertEqual(66, rc, out[-3000:])
        self.assertIn("\"private_key\" is not a usable PEM key", out)

    def test_no_secrets_in_output_log_or_trace(self):
        fh.deliver(ENV, USER, message(7), side="src")
        rc, out = run_sync(jwt(1), ["--oauthaccesstoken2", ENV.oauth_token(USER)],
                           "--debugimap", "--debug", log="oauth.log")
        self.assert_login(rc, out, "XOAUTH2", "XOAUTH2")
        with open(os.path.join(WORKDIR, "oauth.log")) as f:
            logged = f.read()
        self.assertIn("AUTHENTICATE XOAUTH2 MASKED", out)  # the trace (stderr) is there
        self.assertIn("Host1: success login", logged)
        issued = token_stats()["last_tokens"][USER]
        for text in (out, logged):
            self.assertNotIn(issued, text)
            self.assertNotIn(ENV.oauth_token(USER), text)
            self.assertNotIn("eyJhbGciOiJSUzI1NiI", text)  # a JWT header {"alg":"RS256"
            self.assertNotIn("BEGIN PRIVATE KEY", text)
            for line in pem_body_lines():
                self.assertNotIn(line, text)
            self.assertNotIn(base64.b64encode(f"user={USER}\x01".encode()).decode()[:12], text)


if __name__ == "__main__":
    unittest.main(verbosity=2)
