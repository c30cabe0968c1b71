"""Compiling a RiskPolicy's rules with CEL, keeping the last valid version of each rule.

A rule "compiles" when cel-python parses it *and* a trial evaluation over a canonical
event and every declared feature yields a bool: cel-python has no static type checker,
so an unknown field or feature, or an expression that is not a predicate, is caught here
instead of on the first real order. A rule that does not compile is reported (rule name
and error) and, if an earlier version of the same rule compiled, that one keeps running.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import celpy
from celpy import celtypes

from kameng.api.riskpolicy import ACTION_RANK, RiskPolicySpec

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

    def evaluate(self, activation: Mapping[str, Any]) -> bool:
        """True when the rule hits. A runtime error (say, a missing feature) raises, and
        the caller records it against this rule only."""
        try:
            out = self.program.evaluate(activation)
        except celpy.CELEvalError as exc:
            raise RuleError(self.name, _short(exc)) from None
        except Exception as exc:  # cel-python surfaces some errors as Python ones
            raise RuleError(self.name, _short(exc)) from None
        if isinstance(out, celpy.CELEvalError):
            raise RuleError(self.name, str(out.args[0] if out.args else out))
        if not isinstance(out, celtypes.BoolType | bool):
            raise RuleError(self.name, f"result is {type(out).__name__}, not a bool")
        return bool(out)


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

    def applies_to(self, site: str) -> bool:
        return not self.sites or site in self.sites


def to_cel(value: Any) -> Any:
    return celpy.json_to_cel(value)


def activation(event: Mapping[str, Any], features: Mapping[str, int]) -> dict[str, Any]:
    return {"event": to_cel(dict(event)), "features": to_cel(dict(features))}


_ENV = celpy.Environment()


def compile_rule(name: str, expression: str, action: str, reason: str, shadow: bool,
                 feature_names: list[str]) -> CompiledRule:
    try:
        ast = _ENV.compile(expression)
        program = _ENV.program(ast)
    except Exception as exc:  # CELParseError: its text is the line with a caret under
        # the offending column, which a one-line status cannot show: say the column.
        raise RuleError(name, _parse_error(exc)) from None
    rule = CompiledRule(name, expression, action, reason, shadow, program)
    # Trial evaluation: catches unknown fields/features and non-boolean results.
    rule.evaluate(activation(SAMPLE_EVENT, dict.fromkeys(feature_names, 0)))
    return rule


def _parse_error(exc: BaseException) -> str:
    lines = str(exc.args[0] if exc.args else exc).split("\n")
    if len(lines) >= 2 and "^" in lines[1]:
        col = lines[1].index("^") + 1
        return f"syntax error at column {col} of {lines[0].strip()[:200]!r}"
    return _short(exc)


def _short(exc: BaseException) -> str:
    raw: object = exc
    if isinstance(exc, celpy.CELEvalError) and exc.args and isinstance(exc.args[0], str):
        raw = exc.args[0]  # the message without the tuple of Python types around it
    text = " ".join(str(raw).split())
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
    return CompiledPolicy(name, generation, model.mode, frozenset(model.sites), features,
                          tuple(rules), tuple(errors), len(model.rules), esc)


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


def strongest(hits: list[Hit] | tuple[Hit, ...]) -> tuple[str, str]:
    """block > freeze > review > allow, over enforced hits only; ties go to the first."""
    action, rule = "allow", ""
    for h in hits:
        if h.shadow or h.error:
            continue
        if ACTION_RANK[h.action] > ACTION_RANK[action]:
            action, rule = h.action, f"{h.policy}/{h.rule}"
    return action, rule


def evaluate(policies: list[CompiledPolicy], event: Mapping[str, Any],
             features: Mapping[str, Mapping[str, int]]) -> Verdict:
    """Every rule of every policy evaluated; ``features`` is per policy name."""
    hits: list[Hit] = []
    for p in policies:
        act = activation(event, features.get(p.name, {}))
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
