"""Compiling a RiskPolicy's rules with CEL, keeping the last valid version of each rule.

CEL is Google's own runtime (``cel-expr-python``, the C++ implementation Kubernetes'
sibling projects use; see docs/architecture.md "Risk" for why not the pure-Python one): a
rule is parsed and type-checked against ``event`` (map of string to dyn) and ``features``
(map of string to int). A rule "compiles" when that succeeds *and* a trial evaluation over
a canonical event with every declared feature yields a bool, which also catches unknown
event fields and features. A rule that does not compile is reported (rule name and error)
and, if an earlier version of the same rule compiled, that one keeps running.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cel_expr_python import cel

from kameng.api.riskpolicy import ACTION_RANK, RiskPolicySpec

_T = cel.Type
_BOOL, _ERROR, _INT = _T.BOOL, _T.ERROR, _T.INT
_ENV = cel.NewEnv(variables={"event": _T.Map(_T.STRING, _T.DYN),
                             "features": _T.Map(_T.STRING, _T.INT)})
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")

# Every field a rule may read on `event`; the trial evaluation uses these values.
SAMPLE_EVENT: dict[str, Any] = {
    "event": "order.paid", "eventId": "sample:order.paid", "site": "sample",
    "orderId": "sample", "customer": "c", "ip": "i", "category": "game-cards",
    "product": "p", "region": "CN-BJ", "amount": 100, "currency": "CNY", "ts": 0,
    "licenseCategories": ["game-cards"], "licenseRegions": ["CN-BJ"],
}


def parse_duration(text: str) -> int:
    """Seconds of '1h30m'-style durations (the CRD's DURATION_RE)."""
    m = _DURATION.match(text or "")
    if not m or not any(m.groups()):
        raise ValueError(f"not a duration: {text!r}")
    h, mi, s = (int(g or 0) for g in m.groups())
    return h * 3600 + mi * 60 + s


@dataclass(frozen=True)
class CompiledRule:
    name: str
    expression: str
    action: str
    reason: str
    shadow: bool
    program: Any = field(compare=False, repr=False)

    def evaluate(self, activation: Any) -> bool:
        """True when the rule hits. A runtime error (say, a missing feature) raises, and
        the caller records it against this rule only."""
        try:
            out = self.program.eval(activation)
        except Exception as exc:  # the runtime reports most errors as values, not these
            raise RuleError(self.name, _short(exc)) from None
        kind = out.type()
        if kind == _BOOL:
            return bool(out.value())
        if kind == _ERROR:
            raise RuleError(self.name, _short(out.value()))
        raise RuleError(self.name, f"the result is {kind.name().lower()}, not a bool")


class RuleError(Exception):
    def __init__(self, rule: str, error: str) -> None:
        super().__init__(f"{rule}: {error}")
        self.rule = rule
        self.error = error


@dataclass(frozen=True)
class FeatureDef:
    name: str
    key: str
    aggregate: str
    window_s: int
    events: frozenset[str]

    def applies(self, event_type: str) -> bool:
        return not self.events or event_type in self.events


@dataclass(frozen=True)
class EscalationDef:
    raise_at: float
    lift_at: float
    window_s: int
    min_orders: int


@dataclass(frozen=True)
class CompiledPolicy:
    name: str
    generation: int
    mode: str
    sites: frozenset[str]
    features: tuple[FeatureDef, ...]
    rules: tuple[CompiledRule, ...]
    errors: tuple[RuleError, ...]
    rule_count: int
    escalation: EscalationDef | None = None
    # The valid rules in ONE program per chunk of _CHUNK rules (see combine()); empty
    # when they could not be combined, and evaluate() then runs them one by one.
    combined: tuple[Any, ...] = field(default=(), compare=False, repr=False)
    # Per event type, the combined programs of only the rules that can hit it (see
    # gate()) and each bit's rule index; "" for the types no rule is gated on. Used only
    # with ``combined`` (without it, rules run one by one); empty when every rule runs.
    typed: Mapping[str, tuple[tuple[Any, ...], tuple[int, ...]]] = field(
        default_factory=dict, compare=False, repr=False)

    def applies_to(self, site: str) -> bool:
        return not self.sites or site in self.sites


# Rules per combined program: each is one bit of a CEL int (int64; 62 keeps clear of the
# sign bit). The CRD allows 64 rules a policy, so a policy has at most two programs.
_CHUNK = 62


def combine(rules: tuple[CompiledRule, ...]) -> tuple[Any, ...]:
    """All rules of a policy as one CEL program per chunk, giving the bit mask of the
    rules that hit: ``(r0 ? 1 : 0) + (r1 ? 2 : 0) + …``. One evaluation over one
    activation costs a third of evaluating the rules one by one (the runtime's fixed cost
    per call and per lookup of ``event`` dominates a rule as small as these). Any rule
    erroring, or giving a non-bool, makes the whole sum an error: the caller then runs
    the rules one by one, so a broken rule still only takes itself out."""
    out = []
    for i in range(0, len(rules), _CHUNK):
        chunk = rules[i:i + _CHUNK]
        expr = _balanced([f"(({r.expression}) ? {1 << j} : 0)" for j, r in enumerate(chunk)])
        try:
            out.append(_ENV.compile(expr))
        except Exception:  # every rule compiled alone; a combination that does not
            return ()      # (a checker corner) costs speed, never a decision
    return tuple(out)


# A rule of the form ``event.event == '<type>' && <rest>`` can only hit events of that
# type: for any other, CEL gives false whatever <rest> gives (``false && error`` is false),
# so skipping it is exact. Most rules are written so (every default one is), and the
# runtime's cost is per rule evaluated: an order.paid event runs 6 of the default
# policy's 11 rules, an order.created 1.
_GATE = re.compile(r"\s*event\s*\.\s*event\s*==\s*(?:'([A-Za-z0-9._-]+)'|\"([A-Za-z0-9._-]+)\")"
                   r"\s*&&")


def gate(expression: str) -> str | None:
    """The event type ``expression`` is gated on, or None when it may hit any type (or
    its form is not one this recognises: then it simply always runs)."""
    m = _GATE.match(expression)
    if m is None or "//" in expression or not _conjunction(expression[m.end():]):
        return None
    return m.group(1) or m.group(2)


def _conjunction(rest: str) -> bool:
    """True when ``rest`` has no ``||`` and no ``?`` outside brackets and string
    literals: ``A && rest`` is then A AND (all of rest), as CEL's precedence reads it
    (``?:`` binds loosest, then ``||``, then ``&&``). A string literal with a backslash
    or triple quotes, or unbalanced brackets: False (not analysed; the rule runs)."""
    depth, i, n = 0, 0, len(rest)
    while i < n:
        c = rest[i]
        if c in "'\"":
            if rest.startswith(c * 3, i):
                return False
            j = rest.find(c, i + 1)
            if j < 0 or "\\" in rest[i:j]:
                return False
            i = j + 1
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth < 0:
                return False
        elif depth == 0 and (c == "?" or rest.startswith("||", i)):
            return False
        i += 1
    return depth == 0


def by_type(rules: tuple[CompiledRule, ...]
            ) -> dict[str, tuple[tuple[Any, ...], tuple[int, ...]]]:
    """Per event type a rule is gated on (and "" for every other type): the combined
    programs of the rules that can hit it, with their indexes. Empty when no rule is
    gated (``combined`` serves) or a combination does not compile."""
    gates = [gate(r.expression) for r in rules]
    types = sorted({g for g in gates if g is not None})
    if not types:
        return {}
    out: dict[str, tuple[tuple[Any, ...], tuple[int, ...]]] = {}
    for t in [*types, ""]:
        idx = tuple(i for i, g in enumerate(gates) if g is None or g == t)
        progs = combine(tuple(rules[i] for i in idx)) if idx else ()
        if idx and not progs:
            return {}
        out[t] = (progs, idx)
    return out


def _balanced(terms: list[str]) -> str:
    """``a + b + c + …`` as a balanced tree: CEL's parser stops at a nesting depth of 32,
    which a left-leaning chain of 62 sums exceeds."""
    if len(terms) == 1:
        return terms[0]
    mid = len(terms) // 2
    return f"({_balanced(terms[:mid])} + {_balanced(terms[mid:])})"


def activation(event: Mapping[str, Any], features: Mapping[str, int]) -> Any:
    """One activation per event and policy, shared by all its rules (building it is the
    expensive part; evaluating a rule over it is cheap)."""
    # The runtime converts both maps on the way in: no copy of our own.
    return _ENV.Activation({"event": event, "features": features})


def compile_rule(name: str, expression: str, action: str, reason: str, shadow: bool,
                 feature_names: list[str]) -> CompiledRule:
    try:
        program = _ENV.compile(expression)
    except Exception as exc:  # RuntimeError carrying the parser's or checker's message
        raise RuleError(name, _parse_error(exc)) from None
    ret = program.return_type()
    if ret != _BOOL and ret != _T.DYN:
        raise RuleError(name, f"the expression gives {ret.name().lower()}, not a bool")
    rule = CompiledRule(name, expression, action, reason, shadow, program)
    # Trial evaluation: catches unknown fields/features and non-boolean results.
    rule.evaluate(activation(SAMPLE_EVENT, dict.fromkeys(feature_names, 0)))
    return rule


_POSITION = re.compile(r"<input>:(\d+):(\d+):\s*")


def _parse_error(exc: BaseException) -> str:
    """"INVALID_ARGUMENT: ERROR: <input>:1:15: Syntax error: …" (then the source with a
    caret) → "column 15: Syntax error: …": one line a status condition can show."""
    first = str(exc).split("\n", 1)[0]
    m = _POSITION.search(first)
    if m:
        line, col = m.groups()
        where = f"column {col}" if line == "1" else f"line {line}, column {col}"
        return _short(f"{where}: {first[m.end():]}")
    return _short(first)


def _short(exc: object) -> str:
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__


def compile_policy(name: str, spec: Mapping[str, Any], generation: int = 0,
                   previous: CompiledPolicy | None = None) -> CompiledPolicy:
    """Compile a RiskPolicy spec (wire form). ``previous`` supplies the last valid version
    of rules that no longer compile."""
    model = RiskPolicySpec.model_validate(dict(spec))
    features = tuple(FeatureDef(f.name, f.key, f.aggregate, parse_duration(f.window),
                                frozenset(f.events)) for f in model.features)
    names = [f.name for f in features]
    prev = {r.name: r for r in (previous.rules if previous else ())}
    rules: list[CompiledRule] = []
    errors: list[RuleError] = []
    for r in model.rules:
        shadow = (r.mode or model.mode) == "shadow"
        try:
            rules.append(compile_rule(r.name, r.expression, r.action, r.reason, shadow, names))
        except RuleError as exc:
            errors.append(exc)
            old = prev.get(r.name)
            if old is not None:
                # The old version must still work with the new features.
                with contextlib.suppress(RuleError):
                    rules.append(compile_rule(old.name, old.expression, old.action,
                                              old.reason, old.shadow, names))
    esc = None
    if model.site_escalation is not None:
        e = model.site_escalation
        esc = EscalationDef(e.raise_at, e.lift_at, parse_duration(e.window), e.min_orders)
    combined = combine(tuple(rules))
    return CompiledPolicy(name, generation, model.mode, frozenset(model.sites), features,
                          tuple(rules), tuple(errors), len(model.rules), esc, combined,
                          by_type(tuple(rules)) if combined else {})


@dataclass(frozen=True)
class Hit:
    policy: str
    rule: str
    action: str
    reason: str
    shadow: bool
    error: str = ""  # set when the rule failed at run time (counted, never acted on)


@dataclass(frozen=True)
class Verdict:
    action: str  # strongest enforced action; "allow" when nothing enforced hit
    rule: str  # the rule that set it ("" when allow)
    hits: tuple[Hit, ...]
    snoozed: bool = False  # a live snooze of the customer or IP turned it into allow


def strongest(hits: list[Hit] | tuple[Hit, ...]) -> tuple[str, str]:
    """block > freeze > review > allow, over enforced hits only; ties go to the first."""
    action, rule = "allow", ""
    for h in hits:
        if h.shadow or h.error:
            continue
        if ACTION_RANK[h.action] > ACTION_RANK[action]:
            action, rule = h.action, f"{h.policy}/{h.rule}"
    return action, rule


def _masks(p: CompiledPolicy, act: Any, programs: tuple[Any, ...] | None = None
           ) -> list[int] | None:
    """The combined programs' hit masks (``programs``, by default all rules'), or None
    when a program errored (then the rules run one by one, to find and record the broken
    one)."""
    if not p.combined:
        return None
    out = []
    for prog in p.combined if programs is None else programs:
        try:
            res = prog.eval(act)
        except Exception:
            return None
        if res.type() != _INT:
            return None
        out.append(int(res.value()))
    return out


# Per compiled policy, the Hit of each rule (immutable, so one object serves every event
# it hits): building a dataclass per hit cost more than finding the hit.
_HITS: dict[int, tuple[CompiledPolicy, tuple[Hit, ...]]] = {}


def _hits_of(p: CompiledPolicy) -> tuple[Hit, ...]:
    got = _HITS.get(id(p))
    if got is not None and got[0] is p:
        return got[1]
    if len(_HITS) > 256:  # policies are few; recompiled ones replace them
        _HITS.clear()
    hits = tuple(Hit(p.name, r.name, r.action, r.reason, r.shadow) for r in p.rules)
    _HITS[id(p)] = (p, hits)
    return hits


def evaluate(policies: list[CompiledPolicy], event: Mapping[str, Any],
             features: Mapping[str, Mapping[str, int]]) -> Verdict:
    """Every rule of every policy evaluated; ``features`` is per policy name."""
    hits: list[Hit] = []
    for p in policies:
        act = activation(event, features.get(p.name, {}))
        typed = p.typed.get(event["event"]) or p.typed.get("") if p.typed else None
        if typed is not None:
            progs, idx = typed
            masks = _masks(p, act, progs) if idx else []
        else:
            masks = _masks(p, act)
            idx = None
        if masks is not None:
            of = _hits_of(p)
            for c, m in enumerate(masks):
                # The set bits only, lowest first (rule order), not every rule.
                base = c * _CHUNK
                while m:
                    low = m & -m
                    i = base + low.bit_length() - 1
                    hits.append(of[idx[i] if idx is not None else i])
                    m ^= low
            continue
        for r in p.rules:
            try:
                if r.evaluate(act):
                    hits.append(Hit(p.name, r.name, r.action, r.reason, r.shadow))
            except RuleError as exc:
                # One broken rule must never decide (or decline) everything: it is
                # recorded and skipped, the other rules still run.
                hits.append(Hit(p.name, r.name, r.action, r.reason, r.shadow, exc.error))
    action, rule = strongest(hits)
    return Verdict(action, rule, tuple(hits))
