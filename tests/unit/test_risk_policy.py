"""Pure logic of the risk engine: rule compilation (last valid version kept), strongest
action, durations, RiskPolicy status, and the chart's copy of the default policy."""

from __future__ import annotations

from pathlib import Path

import yaml

from kameng.workers.risk.policy import (
    SAMPLE_EVENT,
    Hit,
    compile_policy,
    evaluate,
    parse_duration,
    strongest,
)
from kameng.workers.risk.source import status_of

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = yaml.safe_load((ROOT / "manifests/samples/riskpolicy-default.yaml").read_text())


def test_chart_ships_the_sample_default_policy():
    assert (ROOT / "charts/kameng/files/riskpolicy-default.yaml").read_text() == \
        (ROOT / "manifests/samples/riskpolicy-default.yaml").read_text()


def test_default_policy_compiles_and_normal_event_hits_nothing():
    p = compile_policy("default", DEFAULT["spec"])
    assert p.errors == ()
    assert len(p.rules) == len(DEFAULT["spec"]["rules"])
    v = evaluate([p], SAMPLE_EVENT, {"default": {f.name: 1 for f in p.features}})
    assert (v.action, v.hits) == ("allow", ())


def test_strongest_action_ignores_shadow_and_failed_rules():
    hits = [Hit("p", "a", "review", "", False), Hit("p", "b", "block", "", True),
            Hit("p", "c", "block", "", False, error="boom"), Hit("p", "d", "freeze", "", False)]
    assert strongest(hits) == ("freeze", "p/d")
    assert strongest([]) == ("allow", "")


def test_durations():
    assert parse_duration("1h30m") == 5400
    assert parse_duration("168h") == 604800
    for bad in ("", "1d", "h"):
        try:
            parse_duration(bad)
        except ValueError:
            continue
        raise AssertionError(bad)


def test_status_names_the_broken_rule_and_keeps_transition_time():
    spec = {"rules": [{"name": "ok", "expression": "true", "action": "review"},
                      {"name": "bad", "expression": "event.amount >", "action": "block"}]}
    v1 = compile_policy("p", spec, 3)
    st = status_of(v1, None)
    c = st["conditions"][0]
    assert (c["status"], c["reason"]) == ("False", "RuleDoesNotCompile")
    assert "rule 'bad' does not compile: column 15" in c["message"]
    assert (st["ruleCount"], st["activeRules"], st["observedGeneration"]) == (2, 1, 3)
    again = status_of(v1, {**st, "conditions": [{**c, "lastTransitionTime": "T0"}]})
    assert again["conditions"][0]["lastTransitionTime"] == "T0"
    fixed = compile_policy("p", {"rules": spec["rules"][:1]}, 4, previous=v1)
    assert status_of(fixed, st)["conditions"][0]["status"] == "True"
