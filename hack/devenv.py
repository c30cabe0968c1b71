#!/usr/bin/env python3
"""Local dev environment: a real control plane, PostgreSQL and Redis on loopback.

Standard library only, so it runs before the project's virtualenv exists.

    hack/devenv up       start everything (idempotent), print `export` lines
    hack/devenv up --postgres N
                         also run PostgreSQL servers 2..N (to place sites across several),
                         exported as KAMENG_PG_ADMIN_DSN_2... (added to a running one)
    hack/devenv down     stop everything and delete its state
    hack/devenv status   say what runs
    hack/devenv env      print the `export` lines of a running environment
    hack/devenv run NAME -- CMD...
                         keep CMD running in the background as NAME (the operator, a
                         storefront...), logged to logs/NAME.log; `down` stops it too
    hack/devenv stop NAME...
                         stop what `run` started as NAME
    hack/devenv test-dir print the tests' environment directory
    hack/devenv s3 stop|start
                         stop or start again the S3 server alone (its data is kept):
                         how tests show that a failed export keeps the site's data
    hack/devenv restart-apiserver --down SECONDS
                         SIGKILL the API server, wait, start it again (same port, certs
                         and etcd): the chaos tests' API server outage

The environment lives in $KAMENG_DEVENV_DIR (default /tmp/kameng-devenv: the demo's and a
person's). Tests use their own, $KAMENG_TEST_DEVENV_DIR (default /tmp/kameng-devenv-test),
so that the demo's operator and the tests' operators never meet in one cluster.

Why not kind: this machine has no Docker engine. kwok gives fake nodes on which pods
become Running and Ready, so Deployments reach Available without a container runtime.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HACK = Path(__file__).resolve().parent
STATE = Path(os.environ.get("KAMENG_DEVENV_DIR", "/tmp/kameng-devenv"))
LOCK = STATE.parent / (STATE.name + ".lock")
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok",
              "postgres", "redis", "s3")
S3_BUCKET = "kameng-exports"
KWOK_NODES = ("kwok-node-0", "kwok-node-1")
SERVICE_CIDR = "10.96.0.0/16"


def test_dir() -> Path:
    """The tests' environment directory (hack/test, tests/conftest.py)."""
    return Path(os.environ.get("KAMENG_TEST_DEVENV_DIR", "/tmp/kameng-devenv-test"))


def log(msg: str) -> None:
    print(f"[devenv] {msg}", file=sys.stderr, flush=True)


def die(msg: str) -> None:
    log(f"ERROR: {msg}")
    sys.exit(1)


# ---------------------------------------------------------------- state and processes

def load_state() -> dict | None:
    try:
        return json.loads((STATE / "state.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def save_state(state: dict) -> None:
    tmp = STATE / "state.json.tmp"
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(STATE / "state.json")


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie answers kill(0) but is gone.
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            return False
    return True


def ours(pid: int | None, marker: str) -> bool:
    """Alive and still the process we started.

    After a reboot or a session end the recorded pids are stale and the kernel may
    have handed them to unrelated processes, which must never be signalled.
    """
    if not alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return marker in cmdline


def _marker(argv: list[str]) -> str:
    # The executable's path: what /proc/<pid>/cmdline of our process must contain.
    return next((a for a in argv if a.startswith("/")), argv[0])


def _kill_group(pid: int | None, marker: str, sig: int) -> None:
    if ours(pid, marker):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)


_HANDED_OUT: set[int] = set()


def _listener_ports() -> range:
    """Ports for the environment's and the tests' listeners: the 12,000 just below the
    kernel's ephemeral range. Every outgoing connection takes its local port from that
    range, so a port picked there (as binding port 0 does) can be taken by some client
    between the pick and the server's bind: "address already in use", seen in CI."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(max(1024, low - 12000), low)


def free_port() -> int:
    """A loopback port free now, outside the ephemeral range (well above PostgreSQL's and
    Redis's well-known ports), never the same twice in one process."""
    ports, pick = _listener_ports(), secrets.SystemRandom()
    for _ in range(500):
        port = pick.randrange(ports.start, ports.stop)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    with socket.socket() as s:  # a crowded range: the kernel's choice, as before
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(name: str, argv: list[str], state: dict, *, user: str | None = None,
          env: dict | None = None) -> None:
    logf = open(STATE / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    if user:
        argv = ["runuser", "-u", user, "--", *argv]
    proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, cwd=STATE, env=env)
    state["pids"][name] = proc.pid
    state.setdefault("markers", {})[name] = _marker(argv)
    save_state(state)


def wait_for(what: str, check, timeout: float, state: dict, component: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if component and not alive(state["pids"].get(component)):
            tail = (STATE / "logs" / f"{component}.log").read_text(errors="replace")[-3000:]
            die(f"{component} exited while starting; last log lines:\n{tail}")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.2)
    tail = (STATE / "logs" / f"{component}.log").read_text(errors="replace")[-3000:]
    die(f"timed out after {timeout:.0f}s waiting for {what}; last log lines:\n{tail}")


def run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, **kw)


# ---------------------------------------------------------------- prerequisites

def ensure_packages() -> dict[str, str]:
    """Find (installing when missing) the PostgreSQL and Redis servers and openssl."""
    def find() -> dict[str, str]:
        found: dict[str, str] = {}
        pg = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                    key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                    else 0)
        if pg:
            found["pg_bin"] = str(pg[-1].parent)
        elif shutil.which("postgres") and shutil.which("initdb"):
            found["pg_bin"] = str(Path(shutil.which("postgres")).resolve().parent)
        for tool in ("redis-server", "openssl"):
            if shutil.which(tool):
                found[tool] = shutil.which(tool)
        return found

    found = find()
    missing = [pkg for key, pkg in (("pg_bin", "postgresql"), ("redis-server", "redis-server"),
                                    ("openssl", "openssl")) if key not in found]
    if missing:
        if os.geteuid() != 0:
            die(f"missing {', '.join(missing)}; install them: sudo apt-get install -y "
                f"{' '.join(missing)}")
        log(f"installing {' '.join(missing)} from Debian packages")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run(["apt-get", "update", "-qq"], env=env, stdout=sys.stderr)
        run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env,
            stdout=sys.stderr)
        # The Debian package starts its own cluster/daemon; ours runs separately.
        for svc in ("postgresql", "redis-server"):
            subprocess.run(["service", svc, "stop"], capture_output=True, check=False)
        found = find()
    return found


def build_tools() -> Path:
    out = run([str(HACK / "build-tools")], stdout=subprocess.PIPE, text=True).stdout
    return Path(out.strip().splitlines()[-1])


def s3_bin() -> Path:
    out = run([str(HACK / "build-tools"), "--print-s3"], stdout=subprocess.PIPE, text=True).stdout
    return Path(out.strip()) / "versitygw"


# ---------------------------------------------------------------- PKI and kubeconfigs

def make_pki(pki: Path, openssl: str) -> None:
    pki.mkdir(parents=True, exist_ok=True)
    q = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
         "-keyout", str(pki / "ca.key"), "-out", str(pki / "ca.crt"),
         "-subj", "/CN=kameng-devenv-ca"], **q)
    ext = pki / "apiserver.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,"
                   "DNS:kubernetes.default,DNS:kubernetes.default.svc,"
                   "DNS:kubernetes.default.svc.cluster.local\n"
                   "extendedKeyUsage=serverAuth\n")
    run([openssl, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(pki / "apiserver.key"),
         "-out", str(pki / "apiserver.csr"), "-subj", "/CN=kube-apiserver"], **q)
    run([openssl, "x509", "-req", "-in", str(pki / "apiserver.csr"), "-CA", str(pki / "ca.crt"),
         "-CAkey", str(pki / "ca.key"), "-CAcreateserial", "-days", "3650",
         "-extfile", str(ext), "-out", str(pki / "apiserver.crt")], **q)
    run([openssl, "genrsa", "-out", str(pki / "sa.key"), "2048"], **q)
    run([openssl, "rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub")], **q)
    for f in pki.iterdir():
        f.chmod(0o600)


def write_kubeconfig(path: Path, server: str, ca: Path, token: str, user: str) -> None:
    # JSON is valid YAML; it saves a dependency on a YAML writer.
    cfg = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "kameng-dev", "cluster": {"server": server,
                                                        "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "kameng-dev", "context": {"cluster": "kameng-dev", "user": user}}],
        "current-context": "kameng-dev",
    }
    path.write_text(json.dumps(cfg, indent=2))
    path.chmod(0o600)


def api_get(state: dict, path: str, timeout: float = 3.0) -> tuple[int, bytes]:
    ctx = ssl.create_default_context(cafile=str(STATE / "pki" / "ca.crt"))
    req = urllib.request.Request(f"https://127.0.0.1:{state['ports']['apiserver']}{path}",
                                 headers={"Authorization": f"Bearer {state['tokens']['admin']}"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# ---------------------------------------------------------------- components

def start_etcd(state: dict, bin_dir: Path) -> None:
    p = state["ports"]
    peer = f"http://127.0.0.1:{p['etcd_peer']}"
    spawn("etcd", [
        str(bin_dir / "etcd"), "--name", "devenv", "--data-dir", str(STATE / "etcd"),
        "--listen-client-urls", f"http://127.0.0.1:{p['etcd']}",
        "--advertise-client-urls", f"http://127.0.0.1:{p['etcd']}",
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"devenv={peer}",
        "--listen-metrics-urls", f"http://127.0.0.1:{p['etcd_metrics']}",
        # A throwaway dev store: durability costs seconds on every write.
        "--unsafe-no-fsync", "--quota-backend-bytes", str(4 << 30), "--log-level", "warn",
    ], state)

    def healthy() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{p['etcd']}/health", timeout=1) as r:
            return b'"true"' in r.read()
    wait_for("etcd /health", healthy, 30, state, "etcd")


def start_apiserver(state: dict, bin_dir: Path) -> None:
    p, pki = state["ports"], STATE / "pki"
    tokens = STATE / "tokens.csv"
    tokens.write_text(
        f'{state["tokens"]["admin"]},kameng-admin,uid-admin,"system:masters"\n'
        f'{state["tokens"]["kcm"]},system:kube-controller-manager,uid-kcm\n'
        f'{state["tokens"]["scheduler"]},system:kube-scheduler,uid-scheduler\n'
        f'{state["tokens"]["kwok"]},kwok-controller,uid-kwok,"system:masters"\n')
    tokens.chmod(0o600)
    spawn("kube-apiserver", [
        str(bin_dir / "kube-apiserver"),
        f"--etcd-servers=http://127.0.0.1:{p['etcd']}",
        "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
        f"--secure-port={p['apiserver']}", f"--cert-dir={pki}",
        f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}", f"--token-auth-file={tokens}",
        "--authorization-mode=Node,RBAC",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--enable-admission-plugins=NodeRestriction", "--allow-privileged=true",
        "--profiling=false", "--v=1",
    ], state)
    wait_for("kube-apiserver /readyz", lambda: api_get(state, "/readyz")[0] == 200, 90, state,
             "kube-apiserver")


def restart_apiserver(down: float) -> None:
    """The chaos tests' API server outage: SIGKILL (no graceful shutdown, every watch
    cut), ``down`` seconds away, then the same server again (same port, certificates and
    etcd, so every client reconnects to what it knew)."""
    state = load_state()
    if not state or not healthy(state):
        die("not running; start it with: eval \"$(hack/devenv up)\"")
    _kill_group(state["pids"].get("kube-apiserver"),
                state.get("markers", {}).get("kube-apiserver", ""), signal.SIGKILL)
    time.sleep(down)
    start_apiserver(state, Path(state["bin_dir"]))
    log("kube-apiserver restarted")


def start_controller_manager(state: dict, bin_dir: Path) -> None:
    p, pki = state["ports"], STATE / "pki"
    kc = STATE / "kcm.kubeconfig"
    write_kubeconfig(kc, state["server"], pki / "ca.crt", state["tokens"]["kcm"], "kcm")
    spawn("kube-controller-manager", [
        str(bin_dir / "kube-controller-manager"),
        f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}",
        f"--authorization-kubeconfig={kc}",
        f"--service-account-private-key-file={pki / 'sa.key'}",
        f"--root-ca-file={pki / 'ca.crt'}",
        f"--cluster-signing-cert-file={pki / 'ca.crt'}",
        f"--cluster-signing-key-file={pki / 'ca.key'}",
        "--use-service-account-credentials=true", "--leader-elect=false",
        "--bind-address=127.0.0.1", f"--secure-port={p['kcm']}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--concurrent-gc-syncs=20", "--concurrent-namespace-syncs=10", "--v=1",
    ], state)


def start_scheduler(state: dict, bin_dir: Path) -> None:
    kc = STATE / "scheduler.kubeconfig"
    write_kubeconfig(kc, state["server"], STATE / "pki" / "ca.crt", state["tokens"]["scheduler"],
                     "scheduler")
    spawn("kube-scheduler", [
        str(bin_dir / "kube-scheduler"), f"--kubeconfig={kc}",
        f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
        "--leader-elect=false", "--bind-address=127.0.0.1",
        f"--secure-port={state['ports']['scheduler']}", "--v=1",
    ], state)


def start_kwok(state: dict, bin_dir: Path) -> None:
    kc = STATE / "kwok.kubeconfig"
    write_kubeconfig(kc, state["server"], STATE / "pki" / "ca.crt", state["tokens"]["kwok"],
                     "kwok")
    stages = sorted((bin_dir / "kwok-stages").glob("*.yaml"))
    if not stages:
        die(f"kwok stage files missing in {bin_dir / 'kwok-stages'}; rerun hack/build-tools")
    argv = [str(bin_dir / "kwok"), f"--kubeconfig={kc}", "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--cidr=10.244.0.0/16", "--node-ip=127.0.0.1", "--node-lease-duration-seconds=40",
            f"--server-address=127.0.0.1:{state['ports']['kwok']}"]
    # kwok 0.8 applies no default stages: without these, pods stay Pending forever.
    for s in stages:
        argv.append(f"--config={s}")
    spawn("kwok", argv, state)


def create_nodes(state: dict, bin_dir: Path) -> None:
    for name in KWOK_NODES:
        node = {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name,
                         "annotations": {"kwok.x-k8s.io/node": "fake",
                                         "node.alpha.kubernetes.io/ttl": "0"},
                         "labels": {"type": "kwok", "kubernetes.io/hostname": name,
                                    "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                                    "node-role.kubernetes.io/agent": "",
                                    "topology.kubernetes.io/zone": f"zone-{name[-1]}"}},
            # Fake capacity sized for the operator benchmark (1,000 sub-sites).
            "status": {"allocatable": {"cpu": "1000", "memory": "4Ti", "pods": "2000"},
                       "capacity": {"cpu": "1000", "memory": "4Ti", "pods": "2000"}},
        }
        run([str(bin_dir / "kubectl"), "--kubeconfig", state["kubeconfig"], "apply", "-f", "-"],
            input=json.dumps(node), text=True, stdout=subprocess.DEVNULL)


def start_postgres(state: dict, tools: dict[str, str], number: int = 1) -> None:
    """PostgreSQL server `number` (1: the environment's own; more: `up --postgres N`,
    kept as extras so that `down` and `stop` handle them like `run`'s processes)."""
    pg_bin = Path(tools["pg_bin"])
    name, key = ("pg", "postgres") if number == 1 else (f"pg{number}", f"postgres-{number}")
    if number > 1:
        state["ports"][key] = free_port()
    data, sock = STATE / name / "data", STATE / name / "sock"
    # PostgreSQL refuses to run as root; the Debian package's `postgres` user runs it.
    user = "postgres" if os.geteuid() == 0 else None
    (STATE / name).mkdir()
    sock.mkdir()
    pwfile = STATE / name / "pwfile"
    pwfile.write_text(state["pg_password"] + "\n")
    if user:
        shutil.chown(STATE / name, user, user)
        shutil.chown(sock, user, user)
        shutil.chown(pwfile, user, user)
    pwfile.chmod(0o600)
    initdb = [str(pg_bin / "initdb"), "-D", str(data), "-U", "kameng_admin",
              f"--pwfile={pwfile}", "--auth=scram-sha-256", "--encoding=UTF8",
              "--locale=C.UTF-8", "--no-sync"]
    if user:
        initdb = ["runuser", "-u", user, "--", *initdb]
    run(initdb, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    pwfile.unlink()
    spawn(key, [
        str(pg_bin / "postgres"), "-D", str(data), "-p", str(state["ports"][key]),
        "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={sock}",
        "-c", "max_connections=500", "-c", "shared_buffers=256MB",
        # Throwaway data: trade durability for speed.
        "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
        "-c", "log_min_messages=warning",
    ], state, user=user)

    def ready() -> bool:
        r = subprocess.run([str(pg_bin / "pg_isready"), "-h", "127.0.0.1", "-p",
                            str(state["ports"][key])], capture_output=True, check=False)
        return r.returncode == 0
    wait_for(f"PostgreSQL {number}", ready, 60, state, key)
    if number > 1:
        state.setdefault("extras", {})[key] = state["pids"].pop(key)
        save_state(state)


def extra_postgres(state: dict, count: int) -> None:
    """Servers 2..count, each started unless it already runs."""
    tools = None
    for number in range(2, count + 1):
        key = f"postgres-{number}"
        if ours(state.get("extras", {}).get(key), state.get("markers", {}).get(key, "")):
            continue
        tools = tools or ensure_packages()
        shutil.rmtree(STATE / f"pg{number}", ignore_errors=True)
        start_postgres(state, tools, number)


def start_redis(state: dict, tools: dict[str, str]) -> None:
    (STATE / "redis").mkdir()
    conf = STATE / "redis" / "redis.conf"
    # The password lives in a 0600 file, not on the command line where `ps` shows it.
    conf.write_text(f"port {state['ports']['redis']}\nbind 127.0.0.1\nprotected-mode yes\n"
                    f"save \"\"\nappendonly no\ndir {STATE / 'redis'}\n"
                    f"requirepass {state['redis_password']}\n")
    conf.chmod(0o600)
    spawn("redis", [tools["redis-server"], str(conf)], state)

    def ready() -> bool:
        with socket.create_connection(("127.0.0.1", state["ports"]["redis"]), timeout=1) as s:
            s.sendall(f"AUTH {state['redis_password']}\r\nPING\r\n".encode())
            buf = b""
            while buf.count(b"\r\n") < 2:
                chunk = s.recv(256)
                if not chunk:
                    break
                buf += chunk
            return b"+PONG" in buf
    wait_for("Redis", ready, 30, state, "redis")


def start_s3(state: dict) -> None:
    """versitygw over a plain directory: S3 on loopback with generated root keys.

    The keys go through the environment, not the command line (`ps` shows that), and
    the bucket is a directory, so it exists before the first client connects."""
    root = STATE / "s3"
    (root / S3_BUCKET).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "ROOT_ACCESS_KEY_ID": state["s3_access_key"],
           "ROOT_SECRET_ACCESS_KEY": state["s3_secret_key"]}
    spawn("s3", [state["s3_bin"], "--port", f"127.0.0.1:{state['ports']['s3']}",
                 "posix", str(root)], state, env=env)

    def ready() -> bool:
        # Any HTTP answer (403 to an unsigned request) means it serves S3.
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{state['ports']['s3']}/", timeout=1)
        except urllib.error.HTTPError:
            return True
        return True
    wait_for("S3 server (versitygw)", ready, 30, state, "s3")


def s3_command(action: str) -> None:
    state = load_state()
    if not state:
        die("not running; start it with: eval \"$(hack/devenv up)\"")
    marker = state.get("markers", {}).get("s3", "")
    if action == "stop":
        _kill_group(state["pids"].get("s3"), marker, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while ours(state["pids"].get("s3"), marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        _kill_group(state["pids"].get("s3"), marker, signal.SIGKILL)
    elif action == "start":
        if not ours(state["pids"].get("s3"), marker):
            start_s3(state)
    else:
        die("usage: hack/devenv s3 stop|start")


def install_crds(state: dict) -> None:
    """Apply the repo's CRDs so the cluster always serves what crds/ says.

    Re-applied on every `up`: a regenerated CRD reaches a running environment without
    a restart, and `kubectl apply -f crds/ -f manifests/samples/` works in one call.
    """
    crds = HACK.parent / "crds"
    if not any(crds.glob("*.yaml")):
        return
    kubectl = [str(Path(state["bin_dir"]) / "kubectl"), "--kubeconfig", state["kubeconfig"]]
    # Client-side apply, like a person's later `kubectl apply -f crds/`: mixing the two
    # makes kubectl warn about a missing last-applied annotation.
    run([*kubectl, "apply", "-f", str(crds)], stdout=subprocess.DEVNULL)
    run([*kubectl, "wait", "--for=condition=Established", "--timeout=60s", "crd",
         "-l", "app.kubernetes.io/part-of=kameng"], stdout=subprocess.DEVNULL)


# ---------------------------------------------------------------- commands

def exports(state: dict) -> str:
    p = state["ports"]
    lines = {
        "KUBECONFIG": state["kubeconfig"],
        "KAMENG_PG_ADMIN_DSN": f"postgresql://kameng_admin:{state['pg_password']}"
                               f"@127.0.0.1:{p['postgres']}/postgres",
        "KAMENG_REDIS_URL": f"redis://:{state['redis_password']}@127.0.0.1:{p['redis']}/0",
        "KAMENG_S3_ENDPOINT": f"http://127.0.0.1:{p['s3']}",
        "KAMENG_S3_BUCKET": S3_BUCKET,
        "KAMENG_S3_ACCESS_KEY_ID": state["s3_access_key"],
        "KAMENG_S3_SECRET_ACCESS_KEY": state["s3_secret_key"],
        "KAMENG_DEVENV_DIR": str(STATE),
        "KAMENG_BIN_DIR": state["bin_dir"],
    }
    for key in sorted(k for k in state.get("extras", {}) if k.startswith("postgres-")):
        lines[f"KAMENG_PG_ADMIN_DSN_{key.removeprefix('postgres-')}"] = (
            f"postgresql://kameng_admin:{state['pg_password']}@127.0.0.1:{p[key]}/postgres")
    out = [f"export {k}='{v}'" for k, v in lines.items()]
    out.append(f"export PATH='{state['bin_dir']}':\"$PATH\"")
    return "\n".join(out)


def healthy(state: dict) -> bool:
    markers = state.get("markers", {})
    if not all(ours(state["pids"].get(c), markers.get(c, "")) for c in COMPONENTS):
        return False
    try:
        return api_get(state, "/readyz")[0] == 200
    except OSError:
        return False


def stop_extras(state: dict, only: str | None = None) -> None:
    for name, pid in list(state.get("extras", {}).items()):
        if only and name != only:
            continue
        marker = state.get("markers", {}).get(name, "")
        if ours(pid, marker):
            _kill_group(pid, marker, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while ours(pid, marker) and time.monotonic() < deadline:
                time.sleep(0.1)
            _kill_group(pid, marker, signal.SIGKILL)
        state["extras"].pop(name, None)
    save_state(state)


def run_extra(name: str, argv: list[str]) -> None:
    state = load_state()
    if not state or not healthy(state):
        die("not running; start it with: eval \"$(hack/devenv up)\"")
    pid = state.get("extras", {}).get(name)
    if ours(pid, state.get("markers", {}).get(name, "")):
        log(f"{name} already runs (pid {pid}); logs in {STATE / 'logs' / (name + '.log')}")
        return
    env = {**os.environ, **dict(line[len("export "):].split("=", 1) for line in
                                exports(state).splitlines() if not line.startswith("export PATH"))}
    env = {k: v.strip("'") for k, v in env.items()}
    env["PATH"] = f"{state['bin_dir']}:{os.environ.get('PATH', '')}"
    logf = open(STATE / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, env=env)
    state.setdefault("extras", {})[name] = proc.pid
    state.setdefault("markers", {})[name] = _marker(argv)
    save_state(state)
    log(f"{name} started (pid {proc.pid}); logs in {STATE / 'logs' / (name + '.log')}")


def stop(state: dict | None) -> None:
    if state:
        stop_extras(state)
        # Reverse order: the control plane goes before its store.
        markers = state.get("markers", {})
        for name in reversed(COMPONENTS):
            _kill_group(state["pids"].get(name), markers.get(name, ""), signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(
                ours(state["pids"].get(c), markers.get(c, "")) for c in COMPONENTS):
            time.sleep(0.1)
        for name in COMPONENTS:
            _kill_group(state["pids"].get(name), markers.get(name, ""), signal.SIGKILL)
    if STATE.exists():
        shutil.rmtree(STATE, ignore_errors=True)


def up(postgres: int = 1) -> None:
    state = load_state()
    if state and healthy(state):
        install_crds(state)
        extra_postgres(state, postgres)
        print(exports(state))
        return
    if state:
        log("previous environment is incomplete; restarting it")
    stop(state)
    t0 = time.monotonic()
    bin_dir = build_tools()
    tools = ensure_packages()
    STATE.mkdir(parents=True, mode=0o755)
    # PostgreSQL runs as another user and must traverse the state directory.
    STATE.chmod(0o755)
    (STATE / "logs").mkdir()
    ports = {k: free_port() for k in ("etcd", "etcd_peer", "etcd_metrics", "apiserver", "kcm",
                                      "scheduler", "kwok", "postgres", "redis", "s3")}
    state = {
        "ports": ports, "pids": {}, "bin_dir": str(bin_dir),
        "server": f"https://127.0.0.1:{ports['apiserver']}",
        "kubeconfig": str(STATE / "admin.kubeconfig"),
        "tokens": {k: secrets.token_hex(24) for k in ("admin", "kcm", "scheduler", "kwok")},
        "pg_password": secrets.token_hex(24), "redis_password": secrets.token_hex(24),
        "s3_bin": str(s3_bin()), "s3_access_key": "kameng" + secrets.token_hex(6),
        "s3_secret_key": secrets.token_hex(24),
    }
    save_state(state)
    (STATE / "state.json").chmod(0o600)
    make_pki(STATE / "pki", tools["openssl"])
    write_kubeconfig(Path(state["kubeconfig"]), state["server"], STATE / "pki" / "ca.crt",
                     state["tokens"]["admin"], "kameng-admin")
    # The data services start while etcd warms up; they do not depend on each other.
    start_postgres(state, tools)
    start_redis(state, tools)
    start_s3(state)
    start_etcd(state, bin_dir)
    start_apiserver(state, bin_dir)
    start_controller_manager(state, bin_dir)
    start_scheduler(state, bin_dir)
    start_kwok(state, bin_dir)
    create_nodes(state, bin_dir)

    def nodes_ready() -> bool:
        _, body = api_get(state, "/api/v1/nodes")
        items = json.loads(body)["items"]
        ready = [n for n in items if any(c["type"] == "Ready" and c["status"] == "True"
                                         for c in n.get("status", {}).get("conditions", []))]
        return len(ready) >= len(KWOK_NODES)
    wait_for("kwok nodes Ready", nodes_ready, 60, state, "kwok")

    def default_sa() -> bool:
        # The controller-manager's ServiceAccount controller is what makes pods
        # admissible in a new namespace; wait for it rather than fail the first test.
        return api_get(state, "/api/v1/namespaces/default/serviceaccounts/default")[0] == 200
    wait_for("controller-manager (default ServiceAccount)", default_sa, 60, state,
             "kube-controller-manager")
    install_crds(state)
    extra_postgres(state, postgres)
    log(f"up in {time.monotonic() - t0:.1f}s: apiserver {state['server']}, PostgreSQL "
        f"127.0.0.1:{ports['postgres']}, Redis 127.0.0.1:{ports['redis']}, S3 "
        f"127.0.0.1:{ports['s3']}, logs in "
        f"{STATE / 'logs'}")
    print(exports(state))


def status() -> int:
    state = load_state()
    if not state:
        print("devenv: not running")
        return 1
    ok = True
    for name in COMPONENTS:
        pid = state["pids"].get(name)
        running = ours(pid, state.get("markers", {}).get(name, ""))
        ok &= running
        print(f"{name:26} {'running' if running else 'STOPPED':8} pid {pid}")
    for name, pid in state.get("extras", {}).items():
        up_ = ours(pid, state.get("markers", {}).get(name, ""))
        print(f"{name:26} {'running' if up_ else 'EXITED':8} pid {pid}")
    try:
        code, body = api_get(state, "/readyz")
        print(f"{'apiserver /readyz':26} {body.decode().strip() if code == 200 else code}")
        ok &= code == 200
    except OSError as e:
        print(f"{'apiserver /readyz':26} unreachable ({e.__class__.__name__})")
        ok = False
    print(f"{'state':26} {STATE}")
    return 0 if ok else 1


def main() -> int:
    cmd = sys.argv[1] if len(sys.argv) > 1 else "help"
    if cmd not in ("up", "down", "status", "env", "run", "stop", "test-dir", "s3",
                   "restart-apiserver"):
        print(__doc__, file=sys.stderr)
        return 2
    if cmd == "test-dir":
        print(test_dir())
        return 0
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "w") as lockf:
        # Tests, the demo and a person may all run `up` at once: one starts, the
        # others wait and then find it running.
        fcntl.flock(lockf, fcntl.LOCK_EX)
        if cmd == "up":
            args = sys.argv[2:]
            count = 1
            if args[:1] == ["--postgres"] and len(args) == 2 and args[1].isdigit():
                count = int(args[1])
            elif args:
                die("usage: hack/devenv up [--postgres N]")
            up(count)
        elif cmd == "down":
            stop(load_state())
            log("stopped")
        elif cmd == "run":
            args = sys.argv[2:]
            if len(args) < 3 or args[1] != "--":
                die("usage: hack/devenv run NAME -- CMD [ARGS...]")
            run_extra(args[0], args[2:])
        elif cmd == "stop":
            state = load_state()
            for name in sys.argv[2:] if state else ():
                stop_extras(state, name)
        elif cmd == "s3":
            s3_command(sys.argv[2] if len(sys.argv) > 2 else "")
        elif cmd == "restart-apiserver":
            args = sys.argv[2:]
            if args[:1] != ["--down"] or len(args) != 2:
                die("usage: hack/devenv restart-apiserver --down SECONDS")
            restart_apiserver(float(args[1]))
        elif cmd == "env":
            state = load_state()
            if not state or not healthy(state):
                die("not running; start it with: eval \"$(hack/devenv up)\"")
            print(exports(state))
        else:
            return status()
    return 0


if __name__ == "__main__":
    sys.exit(main())
