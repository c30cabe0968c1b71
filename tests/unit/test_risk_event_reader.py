"""``OrderEvent.read``, the checked reader the risk worker uses instead of a model per
event: it gives exactly what the model gives, its own checks each decline bad input, and
whatever they decline goes through the model (accepted when merely lax, rejected with the
fields named when invalid)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kameng.contracts.events import (
    EVENT_TYPES,
    FUNDINGS,
    EventError,
    OrderEvent,
    _read_canonical,
)

GOOD = OrderEvent.for_order("order.paid", site="s1", order_id="O1", customer="c", ip="i",
                            category="game", product="p", region="CN-BJ", amount=1234,
                            ts=datetime(2026, 12, 1, 10, 0, 0, 123456, tzinfo=UTC),
                            funding="channel").to_fields()

text = st.text(max_size=12)
name = st.text(min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(event=st.sampled_from(EVENT_TYPES), event_id=name, site=name, order_id=name,
       customer=text, ip=text, category=text, product=text, region=text,
       amount=st.integers(min_value=0, max_value=2**63), currency=text,
       ts=st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 1, 1),
                       timezones=st.sampled_from([UTC, timezone(timedelta(hours=8)),
                                                  timezone(timedelta(hours=-5, minutes=-30))])),
       funding=st.sampled_from(FUNDINGS))
def test_agrees_with_the_model_on_every_valid_event_and_takes_the_fast_path(**kw):
    fields = OrderEvent(**kw).to_fields()
    assert _read_canonical(fields) is not None  # what to_fields writes needs no model
    got = OrderEvent.read(fields)
    assert got == OrderEvent.from_fields(fields).model_dump()
    assert got["ts"].tzinfo is not None
    assert got["ts"].utcoffset() == timedelta(0)


def test_an_entry_without_optional_fields_reads_their_defaults():
    fields = {k: GOOD[k] for k in ("v", "event", "event_id", "site", "order_id", "amount",
                                   "ts")}
    assert _read_canonical(fields) is not None
    assert OrderEvent.read(fields) == OrderEvent.from_fields(fields).model_dump()
    assert OrderEvent.read({**GOOD, "unknown": "x"}) == OrderEvent.read(GOOD)  # ignored


# Each check of the reader, with an input it declines that the model rejects too.
INVALID = [
    ("v", "2"), ("v", "x"), ("v", None),
    ("event", "order.exploded"), ("event", ""), ("event", None),
    ("event_id", ""), ("event_id", None),
    ("site", ""), ("site", None),
    ("order_id", ""), ("order_id", None),
    ("amount", "-1"), ("amount", "12.5"), ("amount", "abc"), ("amount", ""),
    ("amount", None), ("amount", "١٢"), ("amount", "²"),
    ("ts", "garbage"), ("ts", "2026-02-30T10:00:00Z"), ("ts", "2026-12-01T25:00:00Z"),
    ("funding", "cash"),
]


@pytest.mark.parametrize(("field", "bad"), INVALID)
def test_each_check_declines_and_the_model_rejects_naming_the_field(field, bad):
    fields = {k: v for k, v in GOOD.items() if k != field}
    if bad is not None:  # None: the field is missing
        fields[field] = bad
    assert _read_canonical(fields) is None
    with pytest.raises(EventError) as err:
        OrderEvent.read(fields)
    if field != "v":  # the version is checked before the model, by its own message
        assert field in str(err.value)
    else:
        assert "version" in str(err.value)


# Forms the reader's checks decline but the model accepts (lax parsing): read gives the
# model's value, so the two never disagree on what is valid.
LAX = [
    ("amount", " 5"), ("amount", "+5"), ("amount", "1_000"), ("amount", 5),
    ("v", " 1"),
    ("ts", "2026-12-01"), ("ts", "1700000000"), ("ts", "2026-12-01T10:00:00+0800"),
    ("ts", "2026-12-01 10:00:00"), ("ts", "2026-12-01T10:00:00.1234567Z"),
    ("customer", 7),
]


@pytest.mark.parametrize(("field", "lax"), LAX)
def test_lax_forms_take_the_model_path_and_agree_with_it(field, lax):
    fields = {**GOOD, field: lax}
    assert _read_canonical(fields) is None
    try:
        want = OrderEvent.from_fields(fields).model_dump()
    except EventError:
        with pytest.raises(EventError):
            OrderEvent.read(fields)
        return
    assert OrderEvent.read(fields) == want


def test_a_missing_ts_takes_the_models_default():
    fields = {k: v for k, v in GOOD.items() if k != "ts"}
    assert _read_canonical(fields) is None
    before = datetime.now(UTC)
    got = OrderEvent.read(fields)
    assert before <= got["ts"] <= datetime.now(UTC)


def test_bytes_entries_are_decoded_like_the_model_does():
    raw = {k.encode(): v.encode() for k, v in GOOD.items()}
    assert OrderEvent.read(raw) == OrderEvent.from_fields(GOOD).model_dump()


def test_a_naive_ts_is_utc_like_the_model():
    fields = {**GOOD, "ts": "2026-12-01T10:00:00"}
    assert _read_canonical(fields) is not None
    assert OrderEvent.read(fields)["ts"] == datetime(2026, 12, 1, 10, tzinfo=UTC)
    assert OrderEvent.read(fields) == OrderEvent.from_fields(fields).model_dump()


def test_the_model_error_names_fields_but_never_values():
    secret = "c0ffee-customer-hash"
    with pytest.raises(EventError) as err:
        OrderEvent.read({**GOOD, "customer": secret, "amount": "-5"})
    assert "amount" in str(err.value)
    assert secret not in str(err.value)
