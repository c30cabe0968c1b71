"""Risk rules, pinned at the unit level (issue 15): durations, rule compilation and its
error messages, the last valid version of a rule, shadow and per-rule modes, the site and
event selectors, the combined CEL program against rule-by-rule evaluation, and the
strongest action (block > freeze > review > allow, enforced hits only, ties to the first).
Expected values come from the CRD (kameng.api.riskpolicy) and the module's docstrings."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kameng.workers.risk import policy as P
from kameng.workers.risk.policy import (
    SAMPLE_EVENT,
    CompiledPolicy,
    CompiledRule,
    EscalationDef,
    FeatureDef,
    Hit,
    RuleError,
    Verdict,
    compile_policy,
    compile_rule,
    evaluate,
    parse_duration,
    strongest,
)

EXPECTING = ("Syntax error: mismatched input '<EOF>' expecting {'[', '{', '(', '.', '-', "
             "'!', 'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, "
             "IDENTIFIER}")


def _rule(name, expression, action="review", **kw):
    return {"name": name, "expression": expression, "action": action, **kw}


# --- durations ---------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "seconds"), [
    ("1h", 3600), ("10m", 600), ("45s", 45), ("1h30m", 5400), ("1h2m3s", 3723),
    ("2h5s", 7205), ("7m9s", 429), ("0h0m1s", 1), ("168h", 604_800),
])
def test_parse_duration_adds_hours_minutes_and_seconds(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", None, "1d", "h", "m", "1m1h", "1 h", "-1h", "1h "])
def test_parse_duration_refuses_what_is_not_a_duration(bad):
    with pytest.raises(ValueError, match=r"^not a duration: ") as exc:
        parse_duration(bad)
    assert str(exc.value) == f"not a duration: {bad!r}"


# --- errors and their one-line messages ---------------------------------------------------

def test_rule_error_names_the_rule():
    e = RuleError("topup-burst", "divide by zero")
    assert (e.rule, e.error, str(e)) == ("topup-burst", "divide by zero",
                                         "topup-burst: divide by zero")


def test_short_collapses_whitespace_cuts_at_300_and_names_an_empty_error():
    assert P._short("a  b\n\tc ") == "a b c"
    assert P._short("x" * 400) == "x" * 300
    assert P._short("y" * 300) == "y" * 300
    assert P._short(ValueError("")) == "ValueError"
    assert P._short(KeyError("k")) == "'k'"


def test_parse_error_gives_line_and_column_and_drops_the_source_excerpt():
    exc = RuntimeError("INVALID_ARGUMENT: ERROR: <input>:1:4: Syntax error: bad\n | 1 +\n"
                       " | ...^")
    assert P._parse_error(exc) == "column 4: Syntax error: bad"
    exc = RuntimeError("INVALID_ARGUMENT: ERROR: <input>:3:12:   undeclared  x\n | x")
    assert P._parse_error(exc) == "line 3, column 12: undeclared x"
    assert P._parse_error(RuntimeError("no position here\nsecond line")) == "no position here"
    assert P._parse_error(RuntimeError(""))  # never an empty message


# --- compiling one rule -------------------------------------------------------------------

def test_compile_rule_keeps_its_fields():
    r = compile_rule("big", "event.amount > 50", "freeze", "too big", True, [])
    assert (r.name, r.expression, r.action, r.reason, r.shadow) == \
        ("big", "event.amount > 50", "freeze", "too big", True)
    assert r.evaluate(P.activation(SAMPLE_EVENT, {})) is True
    assert r.evaluate(P.activation({**SAMPLE_EVENT, "amount": 50}, {})) is False


def test_compile_rule_reports_syntax_errors_with_their_position():
    with pytest.raises(RuleError) as exc:
        compile_rule("bad", "event.amount >", "block", "", False, [])
    assert (exc.value.rule, exc.value.error) == ("bad", f"column 15: {EXPECTING}")
    with pytest.raises(RuleError) as exc:
        compile_rule("bad2", "true &&\n  event.amount >", "block", "", False, [])
    assert (exc.value.rule, exc.value.error) == ("bad2", f"line 2, column 17: {EXPECTING}")


def test_compile_rule_refuses_a_typed_non_bool_and_a_dyn_that_is_not_a_bool():
    with pytest.raises(RuleError) as exc:
        compile_rule("sum", "1 + 2", "review", "", False, [])
    assert (exc.value.rule, exc.value.error) == ("sum", "the expression gives int, not a bool")
    # event is a map of dyn: the checker lets it through, the trial evaluation does not.
    with pytest.raises(RuleError) as exc:
        compile_rule("amt", "event.amount", "review", "", False, [])
    assert (exc.value.rule, exc.value.error) == ("amt", "the result is int, not a bool")
    with pytest.raises(RuleError) as exc:
        compile_rule("cur", "event.currency", "review", "", False, [])
    assert exc.value.error == "the result is string, not a bool"
    # A dyn that is a bool compiles.
    r = compile_rule("dyn", "event.amount == 100", "review", "", False, [])
    assert r.evaluate(P.activation(SAMPLE_EVENT, {})) is True


def test_compile_rule_trial_catches_unknown_fields_and_features():
    with pytest.raises(RuleError) as exc:
        compile_rule("f", "event.nope == 1", "review", "", False, [])
    assert exc.value.rule == "f"
    assert exc.value.error == 'NOT_FOUND: Key not found in map : "nope"'
    with pytest.raises(RuleError):
        compile_rule("g", "features.missing > 1", "review", "", False, ["present"])
    assert compile_rule("g", "features.present > 1", "review", "", False, ["present"])


def test_compile_rule_trial_runs_every_declared_feature_at_zero():
    # A rule that divides by a feature breaks on a feature at zero; the trial finds it.
    with pytest.raises(RuleError) as exc:
        compile_rule("div", "100 / features.n > 0", "review", "", False, ["n"])
    assert exc.value.error == "INVALID_ARGUMENT: divide by zero"
    assert compile_rule("zero", "features.n == 0 && features.m == 0", "review", "", False,
                        ["n", "m"])


@pytest.mark.parametrize("field", ["event", "eventId", "site", "orderId", "customer", "ip",
                                   "category", "product", "region", "amount", "currency",
                                   "ts", "licenseCategories", "licenseRegions"])
def test_every_documented_event_field_can_be_read(field):
    assert compile_rule("r", f"has(event.{field})", "review", "", False, [])


# --- evaluating one rule ------------------------------------------------------------------

class _Raising:
    def eval(self, _act):
        raise ValueError("native\n   failure")


def test_an_exception_from_the_runtime_becomes_this_rules_error():
    r = CompiledRule("r", "x", "block", "", False, _Raising())
    with pytest.raises(RuleError) as exc:
        r.evaluate(None)
    assert (exc.value.rule, exc.value.error) == ("r", "native failure")
    assert exc.value.__cause__ is None
    assert exc.value.__suppress_context__


def test_an_error_value_becomes_this_rules_error():
    r = compile_rule("d", "100 / event.amount > 1", "block", "", False, [])
    with pytest.raises(RuleError) as exc:
        r.evaluate(P.activation({**SAMPLE_EVENT, "amount": 0}, {}))
    assert (exc.value.rule, exc.value.error) == ("d", "INVALID_ARGUMENT: divide by zero")


# --- selectors ----------------------------------------------------------------------------

def test_feature_events_select_the_counted_event_types():
    every = FeatureDef("n", "customer", "count", 60, frozenset())
    assert every.applies("topup")
    assert every.applies("order.paid")
    some = FeatureDef("n", "customer", "count", 60, frozenset({"topup", "order.paid"}))
    assert some.applies("topup")
    assert some.applies("order.paid")
    assert not some.applies("order.created")


def test_policy_sites_select_the_subsites():
    p = compile_policy("p", {"rules": [_rule("a", "true")]})
    assert p.sites == frozenset()
    assert p.applies_to("shop-a")
    assert p.applies_to("")
    q = compile_policy("q", {"sites": ["shop-a", "shop-b"], "rules": [_rule("a", "true")]})
    assert q.sites == frozenset({"shop-a", "shop-b"})
    assert q.applies_to("shop-a")
    assert q.applies_to("shop-b")
    assert not q.applies_to("shop-c")


# --- compiling a policy -------------------------------------------------------------------

def test_compile_policy_records_features_escalation_and_counts():
    spec = {
        "mode": "enforce",
        "features": [
            {"name": "burst", "key": "customer", "window": "10m", "events": ["topup"]},
            {"name": "spend", "key": "ip", "aggregate": "sum", "window": "1h30m"},
        ],
        "rules": [_rule("a", "features.burst > 3", "block", reason="burst"),
                  _rule("broken", "event.amount >", "freeze")],
        "siteEscalation": {"raiseAt": 0.05, "liftAt": 0.02, "window": "2h", "minOrders": 7},
    }
    p = compile_policy("pol", spec, 9)
    assert (p.name, p.generation, p.mode, p.rule_count) == ("pol", 9, "enforce", 2)
    assert p.features == (
        FeatureDef("burst", "customer", "count", 600, frozenset({"topup"})),
        FeatureDef("spend", "ip", "sum", 5400, frozenset()),
    )
    assert [r.name for r in p.rules] == ["a"]
    assert (p.rules[0].action, p.rules[0].reason, p.rules[0].shadow) == ("block", "burst",
                                                                         False)
    assert [(e.rule, e.error) for e in p.errors] == [("broken", f"column 15: {EXPECTING}")]
    assert p.escalation == EscalationDef(0.05, 0.02, 7200, 7)
    assert len(p.combined) == 1


def test_compile_policy_defaults():
    p = compile_policy("p", {"rules": [_rule("a", "true")]})
    assert (p.generation, p.mode, p.features, p.errors, p.escalation) == \
        (0, "enforce", (), (), None)
    e = compile_policy("p", {"rules": [_rule("a", "true")],
                             "siteEscalation": {"raiseAt": 0.1, "liftAt": 0.0}}).escalation
    assert e == EscalationDef(0.1, 0.0, 86_400, 20)


def test_rule_mode_overrides_the_policy_mode_both_ways():
    rules = [_rule("inherit", "true"), _rule("shadowed", "true", mode="shadow"),
             _rule("enforced", "true", mode="enforce")]
    enf = compile_policy("p", {"mode": "enforce", "rules": rules})
    assert {r.name: r.shadow for r in enf.rules} == \
        {"inherit": False, "shadowed": True, "enforced": False}
    sh = compile_policy("p", {"mode": "shadow", "rules": rules})
    assert sh.mode == "shadow"
    assert {r.name: r.shadow for r in sh.rules} == \
        {"inherit": True, "shadowed": True, "enforced": False}


def test_a_broken_rule_keeps_its_last_valid_version_with_its_old_fields():
    v1 = compile_policy("p", {"rules": [
        _rule("keep", "event.amount > 50", "freeze", reason="old", mode="shadow"),
        _rule("other", "true", "review")]}, 1)
    v2 = compile_policy("p", {"rules": [
        _rule("keep", "event.amount >", "block", reason="new"),
        _rule("other", "event.amount >", "review"),
        _rule("fresh", "event.amount >", "block")]}, 2, previous=v1)
    assert [(e.rule, e.error) for e in v2.errors] == [
        ("keep", f"column 15: {EXPECTING}"), ("other", f"column 15: {EXPECTING}"),
        ("fresh", f"column 15: {EXPECTING}")]
    assert [(r.name, r.expression, r.action, r.reason, r.shadow) for r in v2.rules] == [
        ("keep", "event.amount > 50", "freeze", "old", True),
        ("other", "true", "review", "", False)]
    assert v2.rule_count == 3
    # The old version still runs, and still is shadow: it is recorded, never acted on.
    v = evaluate([v2], SAMPLE_EVENT, {})
    assert [(h.rule, h.action, h.shadow) for h in v.hits] == \
        [("keep", "freeze", True), ("other", "review", False)]
    assert (v.action, v.rule) == ("review", "p/other")
    # Without a previous version nothing is kept.
    alone = compile_policy("p", {"rules": [_rule("keep", "event.amount >")]})
    assert (alone.rules, len(alone.errors)) == ((), 1)


def test_the_last_valid_version_is_dropped_when_it_no_longer_fits_the_features():
    v1 = compile_policy("p", {"features": [{"name": "n", "key": "ip", "window": "1m"}],
                              "rules": [_rule("r", "features.n > 3"),
                                        _rule("s", "features.n > 4")]})
    assert [r.name for r in v1.rules] == ["r", "s"]
    v2 = compile_policy("p", {"rules": [_rule("r", "event.amount >"),
                                        _rule("s", "true")]}, previous=v1)
    assert [r.name for r in v2.rules] == ["s"]
    assert [e.rule for e in v2.errors] == ["r"]


# --- the combined program -----------------------------------------------------------------

def test_balanced_sum_is_a_balanced_tree():
    assert P._balanced(["a"]) == "a"
    assert P._balanced(["a", "b"]) == "(a + b)"
    assert P._balanced(["a", "b", "c"]) == "(a + (b + c))"
    assert P._balanced(["a", "b", "c", "d", "e"]) == "((a + b) + (c + (d + e)))"


def _compiled(n):
    return tuple(compile_rule(f"r{i}", f"event.amount > {i}", "review", "", False, [])
                 for i in range(n))


def test_combine_gives_the_bit_mask_of_the_hits():
    rules = _compiled(5)
    (prog,) = P.combine(rules)
    out = prog.eval(P.activation({**SAMPLE_EVENT, "amount": 3}, {}))
    assert out.type() == P._INT
    assert out.value() == 0b00111  # r0, r1, r2 hit; r3, r4 do not
    assert P.combine(()) == ()


def test_combine_puts_62_rules_in_one_program_and_63_in_two():
    assert len(P.combine(_compiled(62))) == 1
    rules = _compiled(63)
    progs = P.combine(rules)
    assert len(progs) == 2
    act = P.activation({**SAMPLE_EVENT, "amount": 100}, {})
    assert progs[0].eval(act).value() == (1 << 62) - 1
    assert progs[1].eval(act).value() == 1


def test_a_combination_that_does_not_compile_gives_no_program():
    good = compile_rule("good", "true", "review", "", False, [])
    odd = replace(good, name="odd", expression="true &&")
    assert P.combine((good, odd)) == ()
    assert P.combine((good,)) != ()


def test_masks():
    p = compile_policy("p", {"rules": [_rule("a", "event.amount > 10"),
                                       _rule("b", "event.amount > 1000"),
                                       _rule("c", "event.currency == 'CNY'")]})
    act = P.activation(SAMPLE_EVENT, {})
    assert P._masks(p, act) == [0b101]
    assert P._masks(replace(p, combined=()), act) is None
    # A program that errors, raises, or gives something other than an int: no mask.
    zero = P.activation({**SAMPLE_EVENT, "amount": 0}, {})
    div = compile_policy("p", {"rules": [_rule("a", "true"),
                                         _rule("d", "100 / event.amount > 1")]})
    assert P._masks(div, zero) is None
    assert P._masks(replace(p, combined=(_Raising(),)), act) is None
    assert P._masks(replace(p, combined=(P._ENV.compile("true"),)), act) is None
    two = compile_policy("p", {"rules": [_rule(f"r{i}", f"event.amount > {i}")
                                         for i in range(64)]})
    assert P._masks(two, P.activation({**SAMPLE_EVENT, "amount": 63}, {})) == \
        [(1 << 62) - 1, 1]
    # The first program erroring is enough to give up on the masks.
    assert P._masks(replace(two, combined=(_Raising(), *two.combined)), act) is None
    assert P._masks(replace(two, combined=(*two.combined, _Raising())), act) is None


def _per_rule(policy, event, feats):
    return evaluate([replace(policy, combined=())], event, feats)


def test_combined_and_rule_by_rule_agree_past_the_first_chunk():
    rules = [_rule(f"r{i}", f"event.amount % {i + 2} == 0",
                   ("review", "freeze", "block")[i % 3]) for i in range(64)]
    p = compile_policy("p", {"rules": rules})
    assert len(p.combined) == 2
    for amount in (1, 2, 63, 64, 65, 124, 126, 3 * 5 * 7 * 61, 2 * 3 * 5 * 7 * 11 * 13):
        ev = {**SAMPLE_EVENT, "amount": amount}
        got = evaluate([p], ev, {})
        assert got == _per_rule(p, ev, {})
        assert [h.rule for h in got.hits] == \
            [f"r{i}" for i in range(64) if amount % (i + 2) == 0]
    # 65 = 5 * 13 * 1: r3 (5, review), r11 (13, block), r63 (65, review, second program).
    v = evaluate([p], {**SAMPLE_EVENT, "amount": 65}, {})
    assert [(h.rule, h.action) for h in v.hits] == \
        [("r3", "review"), ("r11", "block"), ("r63", "review")]
    assert (v.action, v.rule) == ("block", "p/r11")


# --- evaluating policies ------------------------------------------------------------------

def test_evaluate_reads_each_policys_own_features_and_defaults_to_none():
    a = compile_policy("a", {"features": [{"name": "n", "key": "ip", "window": "1m"}],
                             "rules": [_rule("many", "features.n > 2", "freeze")]})
    b = compile_policy("b", {"rules": [_rule("big", "event.amount >= 100", "review")]})
    v = evaluate([a, b], SAMPLE_EVENT, {"a": {"n": 3}, "b": {"n": 0}})
    assert v == Verdict("freeze", "a/many", (Hit("a", "many", "freeze", "", False),
                                              Hit("b", "big", "review", "", False)))
    assert v.snoozed is False
    assert evaluate([a, b], SAMPLE_EVENT, {"a": {"n": 2}}) == \
        Verdict("review", "b/big", (Hit("b", "big", "review", "", False),))
    # No features given for "a": its rule errors (recorded, not acted on), "b" still runs.
    v = evaluate([a, b], SAMPLE_EVENT, {})
    assert [(h.policy, h.rule, bool(h.error)) for h in v.hits] == \
        [("a", "many", True), ("b", "big", False)]
    assert (v.action, v.rule) == ("review", "b/big")


def test_shadow_hits_are_recorded_and_never_act():
    p = compile_policy("p", {"mode": "shadow", "rules": [
        _rule("blk", "true", "block", reason="why"),
        _rule("rev", "true", "review", mode="enforce")]})
    for pol in (p, replace(p, combined=())):
        v = evaluate([pol], SAMPLE_EVENT, {})
        assert v == Verdict("review", "p/rev", (Hit("p", "blk", "block", "why", True),
                                                Hit("p", "rev", "review", "", False)))
    only = compile_policy("s", {"mode": "shadow", "rules": [_rule("blk", "true", "block")]})
    assert evaluate([only], SAMPLE_EVENT, {}) == \
        Verdict("allow", "", (Hit("s", "blk", "block", "", True),))


def test_a_runtime_error_is_recorded_with_the_rules_fields_and_others_still_decide():
    p = compile_policy("p", {"rules": [
        _rule("div", "100 / event.amount > 1", "block", reason="r1", mode="shadow"),
        _rule("zero", "event.amount == 0", "review", reason="r2")]})
    for pol in (p, replace(p, combined=())):
        v = evaluate([pol], {**SAMPLE_EVENT, "amount": 0}, {})
        assert v == Verdict("review", "p/zero", (
            Hit("p", "div", "block", "r1", True, "INVALID_ARGUMENT: divide by zero"),
            Hit("p", "zero", "review", "r2", False)))


def test_nothing_hits_is_allow():
    p = compile_policy("p", {"rules": [_rule("never", "false", "block")]})
    assert evaluate([p], SAMPLE_EVENT, {}) == Verdict("allow", "", ())
    assert evaluate([], SAMPLE_EVENT, {}) == Verdict("allow", "", ())


# --- the strongest action -----------------------------------------------------------------

def _h(rule, action, shadow=False, error="", policy="p"):
    return Hit(policy, rule, action, "", shadow, error)


@pytest.mark.parametrize(("actions", "expected"), [
    (["review", "freeze", "block"], ("block", "p/r2")),
    (["block", "freeze", "review"], ("block", "p/r0")),
    (["review", "block", "freeze"], ("block", "p/r1")),
    (["freeze", "review"], ("freeze", "p/r0")),
    (["review", "freeze"], ("freeze", "p/r1")),
    (["allow", "review"], ("review", "p/r1")),
    (["allow"], ("allow", "")),
    (["allow", "allow"], ("allow", "")),
    (["freeze", "freeze"], ("freeze", "p/r0")),
    (["review", "block", "block"], ("block", "p/r1")),
])
def test_strongest_is_block_then_freeze_then_review_and_ties_go_to_the_first(actions,
                                                                           expected):
    assert strongest([_h(f"r{i}", a) for i, a in enumerate(actions)]) == expected


def test_strongest_skips_shadow_and_failed_hits_each_alone():
    assert strongest([_h("s", "block", shadow=True)]) == ("allow", "")
    assert strongest([_h("e", "block", error="x")]) == ("allow", "")
    assert strongest([_h("s", "block", shadow=True), _h("r", "review")]) == ("review", "p/r")
    assert strongest([_h("e", "block", error="x"), _h("r", "review")]) == ("review", "p/r")
    assert strongest((_h("a", "freeze", policy="one"), _h("b", "block", policy="two"))) == \
        ("block", "two/b")


def test_compiled_policy_defaults():
    p = CompiledPolicy("p", 0, "enforce", frozenset(), (), (), (), 0)
    assert (p.escalation, p.combined) == (None, ())
    assert evaluate([p], SAMPLE_EVENT, {}) == Verdict("allow", "", ())


class _Counting:
    """A program that counts its evaluations (and passes them on)."""

    def __init__(self, program):
        self.program, self.calls = program, 0

    def eval(self, act):
        self.calls += 1
        return self.program.eval(act)


def test_the_combined_program_replaces_the_rules_one_by_one():
    # The point of combining is one evaluation per policy: when it succeeds, no rule runs
    # alone; only when it errors do the rules run one by one.
    p = compile_policy("p", {"rules": [_rule("a", "event.amount > 10", "block"),
                                       _rule("d", "100 / event.amount > 1", "review")]})
    rules = tuple(replace(r, program=_Counting(r.program)) for r in p.rules)
    (combined,) = p.combined
    counted = replace(p, rules=rules, combined=(_Counting(combined),))
    v = evaluate([counted], SAMPLE_EVENT, {})
    assert (v.action, [h.rule for h in v.hits]) == ("block", ["a"])
    assert counted.combined[0].calls == 1
    assert [r.program.calls for r in rules] == [0, 0]
    v = evaluate([counted], {**SAMPLE_EVENT, "amount": 0}, {})
    assert [(h.rule, bool(h.error)) for h in v.hits] == [("d", True)]
    assert counted.combined[0].calls == 2
    assert [r.program.calls for r in rules] == [1, 1]


# --- rules gated on an event type ---------------------------------------------------------

@pytest.mark.parametrize(("rest", "want"), [
    # A bracket first: `||` inside it is part of one conjunct.
    ("(event.amount > 1 || event.amount < 0)", True),
    ("'a||b' == event.product", True),
    # Nesting counts each level, so `||` inside the outer bracket stays inside.
    (" ((event.amount > 1) || event.amount < 0)", True),
    (" [[1], [2]][0][0] == 1 || true", False),
    # `X` is a plain character: neither a quote nor a bracket.
    (" features.X > 1", True),
    (" features.X > 1 && event.site == 'X'", True),
    # Each string literal ends at its own closing quote, not the last one.
    (" event.product == 'a' || event.product == 'b'", False),
    (' event.product == "a" || event.product == "b"', False),
    # A literal with a backslash is not analysed.
    (r" event.product == 'a\\'", False),
    (r' event.product == "a\"b"', False),
    (" event.product == 'a", False),
])
def test_conjunction_reads_brackets_and_literals(rest, want):
    assert P._conjunction(rest) is want


def test_a_comment_makes_a_rule_ungated():
    assert P.gate("event.event == 'a' && event.amount > 1") == "a"
    assert P.gate("event.event == 'a' && event.amount > 1 // note") is None
    assert P.gate("event.event == 'a' && features.X > 1") == "a"


def _typed_policy():
    rules = [
        _rule("paid-big", "event.event == 'order.paid' && event.amount > 50", "freeze"),
        _rule("any-cny", "event.currency == 'CNY'", "review"),
        _rule("created", "event.event == 'order.created' && event.amount > 0", "block"),
        _rule("paid-shadow", "event.event == 'order.paid' && true", "block", mode="shadow"),
    ]
    return compile_policy("p", {"rules": rules})


def _count(p):
    """``p`` with every program (rules, combined, typed) counting its evaluations."""
    rules = tuple(replace(r, program=_Counting(r.program)) for r in p.rules)
    combined = tuple(_Counting(c) for c in p.combined)
    typed = {t: (tuple(_Counting(c) for c in progs), idx)
             for t, (progs, idx) in p.typed.items()}
    return replace(p, rules=rules, combined=combined, typed=typed)


@pytest.mark.parametrize(("kind", "runs", "hits"), [
    ("order.paid", "order.paid", ["paid-big", "any-cny", "paid-shadow"]),
    ("order.created", "order.created", ["any-cny", "created"]),
    # A type no rule is gated on runs the ungated rules only ("").
    ("refund.paid", "", ["any-cny"]),
])
def test_an_event_runs_only_its_types_program(kind, runs, hits):
    p = _count(_typed_policy())
    assert sorted(p.typed) == ["", "order.created", "order.paid"]
    ev = {**SAMPLE_EVENT, "event": kind, "amount": 100}
    v = evaluate([p], ev, {})
    assert [h.rule for h in v.hits] == hits
    assert v == _per_rule(replace(_typed_policy(), typed={}), ev, {})
    # One evaluation of that type's program; neither the whole policy's program nor a
    # rule alone, nor another type's program.
    for t, (progs, _) in p.typed.items():
        assert [c.calls for c in progs] == [1 if t == runs else 0], t
    assert [c.calls for c in p.combined] == [0]
    assert [r.program.calls for r in p.rules] == [0, 0, 0, 0]


def test_a_type_with_no_rule_to_run_runs_nothing():
    p = _count(compile_policy("p", {"rules": [
        _rule("paid", "event.event == 'order.paid' && true", "block")]}))
    assert p.typed[""][1] == ()
    v = evaluate([p], {**SAMPLE_EVENT, "event": "order.created"}, {})
    assert v == Verdict("allow", "", ())
    assert [c.calls for c in p.combined] == [0]
    assert [r.program.calls for r in p.rules] == [0]
    assert evaluate([p], SAMPLE_EVENT, {}).action == "block"


def test_typed_programs_past_the_first_chunk_map_bits_back_to_rule_order():
    # 64 rules: gated ones interleaved with ungated ones, so the typed indexes differ from
    # the bit positions, and the order.created program has two chunks.
    rules = []
    for i in range(64):
        cond = f"event.amount % {i + 2} == 0"
        expr = f"event.event == 'order.created' && {cond}" if i % 7 == 3 else cond
        rules.append(_rule(f"r{i}", expr, ("review", "freeze", "block")[i % 3]))
    plain = compile_policy("p", {"rules": rules})
    p = _count(plain)
    progs, idx = p.typed[""]
    assert len(progs) == 1
    assert len(idx) == 64 - 9
    assert len(p.typed["order.created"][0]) == 2
    for kind in ("order.paid", "order.created", "other"):
        for amount in (1, 2, 60, 63, 65, 2 * 3 * 5 * 7 * 11 * 13):
            ev = {**SAMPLE_EVENT, "event": kind, "amount": amount}
            got = evaluate([p], ev, {})
            assert got == _per_rule(plain, ev, {})
            gated = kind == "order.created"
            assert [h.rule for h in got.hits] == \
                [f"r{i}" for i in range(64) if amount % (i + 2) == 0
                 and (gated or i % 7 != 3)]
    assert [c.calls for c in p.combined] == [0, 0]
    assert [r.program.calls for r in p.rules] == [0] * 64


def test_hits_are_built_once_per_compiled_policy():
    p = _typed_policy()
    ev = {**SAMPLE_EVENT, "amount": 100}
    first, second = evaluate([p], ev, {}), evaluate([p], ev, {})
    assert first == second
    assert all(a is b for a, b in zip(first.hits, second.hits, strict=True))
    assert P._hits_of(p) is P._hits_of(p)
    # A recompiled policy (a new object, equal fields) gets its own.
    again = _typed_policy()
    assert P._hits_of(again) == P._hits_of(p)
    assert P._hits_of(again) is not P._hits_of(p)


def test_a_policy_without_features_sees_an_empty_map():
    p = compile_policy("p", {"rules": [_rule("none", "size(features) == 0", "review")]})
    for pol in (p, replace(p, combined=())):
        assert evaluate([pol], SAMPLE_EVENT, {}) == \
            Verdict("review", "p/none", (Hit("p", "none", "review", "", False),))
