"""hack/kind-up cannot run here (no Docker engine), so its inputs are checked: it parses,
every file it applies exists, every chart value it sets is one the chart has, and every
Secret and key it creates is the one the chart and the kind manifests read."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "hack" / "kind-up"
TEXT = SCRIPT.read_text()
CHART = ROOT / "charts" / "kameng"
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
TEMPLATES = "\n".join(p.read_text() for p in (CHART / "templates").glob("*.yaml"))
BACKING = [d for d in yaml.safe_load_all(
    (ROOT / "manifests" / "kind" / "backing-services.yaml").read_text()) if d]


def test_script_parses_and_is_executable():
    assert SCRIPT.stat().st_mode & 0o111
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_every_file_it_applies_exists():
    paths = set(re.findall(r"(?:manifests|crds|charts|build/image)/[\w./-]*", TEXT))
    assert "manifests/kind/backing-services.yaml" in paths
    for path in paths - {"build/image/kameng-"}:
        assert (ROOT / path).exists(), path


def test_every_value_it_sets_is_a_chart_value():
    sets = re.findall(r"--set ([\w.]+)=", TEXT)
    assert {"hq.enabled", "image.tag", "exit.existingClaim"} <= set(sets)
    for dotted in sets:
        node = VALUES
        for part in dotted.split("."):
            assert isinstance(node, dict), dotted
            assert part in node, dotted
            node = node[part]


def test_the_secrets_it_creates_are_the_ones_read():
    commands = TEXT.replace("\\\n", " ").splitlines()  # continuation lines joined
    keys = {m.group(1): set(re.findall(r"--from-literal=(\w+)=", line))
            for line in commands
            if (m := re.search(r"(?:apply_secret|create secret generic) ([a-z][\w-]+)", line))}
    assert keys[VALUES["backingServices"]["existingSecret"]] == {"pgAdminDsn", "redisUrl"}
    assert VALUES["settlement"]["existingSecret"] == VALUES["exit"]["hqDatabaseSecret"]
    assert keys[VALUES["settlement"]["existingSecret"]] == {"hqDatabaseUrl"}
    hq_keys = keys[VALUES["hq"]["existingSecret"]]
    assert hq_keys == {"sessionSecret", "dataKeys", "adminPassword"}
    for key in hq_keys | {"pgAdminDsn", "redisUrl", "hqDatabaseUrl"}:
        assert f"key: {key}" in TEMPLATES, key
    # The backing services read their passwords from the Secret the script generates.
    refs = {(e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
            for d in BACKING if d["kind"] == "Deployment"
            for c in d["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])
            if "valueFrom" in e}
    assert refs == {("kameng-kind-passwords", k) for k in keys["kameng-kind-passwords"]}


def test_the_urls_it_writes_name_the_kind_services():
    services = {d["metadata"]["name"]: d["spec"]["ports"][0]["port"]
                for d in BACKING if d["kind"] == "Service"}
    assert f"kameng-postgres.$ns.svc:{services['kameng-postgres']}" in TEXT
    assert f"kameng-redis.$ns.svc:{services['kameng-redis']}" in TEXT
    assert {d["metadata"]["namespace"] for d in BACKING} == {"kameng-system"}
    assert "ns=kameng-system" in TEXT
    claims = {d["metadata"]["name"] for d in BACKING if d["kind"] == "PersistentVolumeClaim"}
    assert "exit.existingClaim=kameng-exports" in TEXT
    assert "kameng-exports" in claims


def test_redis_keeps_the_order_streams():
    redis = next(d for d in BACKING if d["kind"] == "Deployment"
                 and d["metadata"]["name"] == "kameng-redis")
    args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--appendfsync") + 1] == "always"


def test_the_samples_it_waits_for_are_the_samples_it_applies():
    applied = re.findall(r"-f (manifests/samples/\S+)", TEXT)
    names = {d["metadata"]["name"] for p in applied
             for d in yaml.safe_load_all((ROOT / p).read_text()) if d["kind"] == "SubSite"}
    waited = set(re.findall(r"subsite/(\w+)", TEXT))
    assert names == waited == {"demo", "moon"}
    # The chart installs the standard RolePolicy the samples refer to.
    assert VALUES["standardRolePolicy"] is True
