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


def _per_rule(policy, event, feats):
    """The reference: the same policy with its rules evaluated one by one."""
    from dataclasses import replace

    return evaluate([replace(policy, combined=())], event, feats)


def test_combined_program_gives_the_hits_of_rule_by_rule_evaluation():
    p = compile_policy("default", DEFAULT["spec"])
    assert p.combined, "the default policy's rules run as one program"
    names = [f.name for f in p.features]
    cases = [
        ({**SAMPLE_EVENT, "event": "topup"}, {n: 25 for n in names}),
        ({**SAMPLE_EVENT, "event": "order.paid", "category": "x"}, {n: 40 for n in names}),
        ({**SAMPLE_EVENT, "event": "withdrawal.requested", "amount": 9_000_000},
         dict.fromkeys(names, 0)),
        (SAMPLE_EVENT, dict.fromkeys(names, 1)),
    ]
    for ev, feats in cases:
        got = evaluate([p], ev, {"default": feats})
        assert got == _per_rule(p, ev, {"default": feats})
    assert {h.rule for h in evaluate([p], cases[0][0], {"default": cases[0][1]}).hits} \
        == {"topup-burst", "topup-flood"}


def test_a_rule_failing_at_run_time_falls_back_to_rule_by_rule_and_takes_only_itself_out():
    p = compile_policy("p", {"rules": [
        {"name": "big", "expression": "event.amount < 10", "action": "review"},
        # Compiles (the sample's amount is 100) but divides by zero on a zero amount.
        {"name": "div", "expression": "100 / event.amount > 1", "action": "block"},
        {"name": "paid", "expression": "event.event == 'order.paid'", "action": "freeze"}]})
    assert p.combined
    v = evaluate([p], {**SAMPLE_EVENT, "amount": 0}, {"p": {}})
    assert [(h.rule, bool(h.error)) for h in v.hits] == \
        [("big", False), ("div", True), ("paid", False)]
    assert (v.action, v.rule) == ("freeze", "p/paid")


def test_more_rules_than_one_mask_holds_use_a_second_program():
    rules = [{"name": f"r{i}", "expression": f"event.amount > {i}", "action": "review"}
             for i in range(64)]
    p = compile_policy("p", {"rules": rules})
    assert len(p.combined) == 2
    v = evaluate([p], {**SAMPLE_EVENT, "amount": 63}, {"p": {}})
    assert [h.rule for h in v.hits] == [f"r{i}" for i in range(63)]
    assert v == _per_rule(p, {**SAMPLE_EVENT, "amount": 63}, {"p": {}})
