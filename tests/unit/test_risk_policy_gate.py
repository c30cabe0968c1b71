"""Rules gated on an event type (``event.event == '<type>' && ...``) run only for that
type: exact, because CEL's ``false && x`` is false whatever x gives. The recogniser says
"gated" only for forms it has read completely; the typed programs give exactly the hits
of rule-by-rule evaluation, for every event type."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from kameng.contracts.events import EVENT_TYPES
from kameng.workers.risk.policy import SAMPLE_EVENT, compile_policy, evaluate, gate

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = yaml.safe_load((ROOT / "manifests/samples/riskpolicy-default.yaml").read_text())


@pytest.mark.parametrize(("expression", "want"), [
    ("event.event == 'topup' && features['n'] > 5", "topup"),
    ('event.event == "order.paid" && event.amount > 1', "order.paid"),
    ("  event . event=='topup'&&true", "topup"),
    ("event.event == 'a' && (b || c)", "a"),  # || inside brackets
    ("event.event == 'a' && x == '||' && y == 'a ? b : c'", "a"),  # inside strings
    ("event.event == 'a' && [1, 2].exists(v, v > 1 || v < 0)", "a"),
    ("event.event == 'a' && b && c", "a"),
    # Not gated: the conjunction is not the whole expression, or not read completely.
    ("event.event == 'a' && b || c", None),  # (A && b) || c
    ("event.event == 'a' && b ? true : false", None),  # (A && b) ? ...
    ("event.event == 'a'", None),
    ("event.event != 'a' && b", None),
    ("event.event == 'a' + 'b' && c", None),
    ("event.event == 'a' || event.event == 'b' && c", None),
    ("event.event == 'a' && b // it's || c\n", None),  # a comment: not analysed
    ("event.event == 'a' && x == '''q''' ", None),  # triple quotes
    ("event.event == 'a' && x == 'it\\'s' || y", None),  # an escape
    ("event.event == 'a' && (b", None),  # unbalanced
    ("event.event == 'a' && b)", None),
    ("true && event.event == 'a' && b", None),
    ("event.event in ['a'] && b", None),
])
def test_gate(expression, want):
    assert gate(expression) == want


def test_every_default_rule_is_gated_and_each_type_runs_only_its_own():
    p = compile_policy("default", DEFAULT["spec"])
    assert all(gate(r.expression) for r in p.rules)
    runs = {t: [p.rules[i].name for i in idx] for t, (_, idx) in p.typed.items()}
    assert runs["order.created"] == ["region-outside-license"]
    assert runs["topup"] == ["topup-burst", "topup-flood"]
    assert len(runs["order.paid"]) == 6
    assert runs[""] == []  # order.delivered, refunds, disputes: no rule can hit them


TRICKY = {"mode": "enforce", "rules": [
    {"name": "g1", "expression": "event.event == 'order.paid' && event.amount > 50",
     "action": "review"},
    {"name": "g2", "expression": "event.event == 'topup' && event.amount > 10 || "
                                 "event.amount > 90", "action": "freeze"},
    {"name": "any", "expression": "event.amount % 3 == 0", "action": "review"},
    {"name": "g3", "expression": "event.event == 'topup' && (event.amount > 70 || "
                                 "event.currency == 'USD')", "action": "block"},
    {"name": "err", "expression": "event.event == 'order.paid' && 100 / event.amount > 1",
     "action": "block"},
    {"name": "tern", "expression": "event.event == 'order.created' && event.amount > 5 ? "
                                   "true : event.amount == 0", "action": "review"}]}


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from([*EVENT_TYPES, "unknown.type"]),
       amount=st.integers(min_value=0, max_value=120),
       currency=st.sampled_from(["CNY", "USD"]),
       feats=st.integers(min_value=0, max_value=40),
       which=st.sampled_from(["default", "tricky"]))
def test_typed_programs_give_the_hits_of_rule_by_rule(kind, amount, currency, feats, which):
    spec = DEFAULT["spec"] if which == "default" else TRICKY
    p = compile_policy(which, spec)
    assert p.typed, "some rule is gated"
    ev = {**SAMPLE_EVENT, "event": kind, "amount": amount, "currency": currency,
          "category": "x" if amount % 2 else "game-cards"}
    fs = {which: {f.name: feats for f in p.features}}
    one_by_one = evaluate([replace(p, combined=(), typed={})], ev, fs)
    assert evaluate([p], ev, fs) == one_by_one
