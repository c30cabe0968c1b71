"""The risk worker's hand-packed Redis commands are byte for byte what redis-py sends."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio.connection import Connection

from kameng.workers.risk.resp import Script, pack


def _redis_py(*args) -> bytes:
    return b"".join(Connection().pack_command(*args))


CASES = [
    ["EVALSHA", "abc", "0"],
    ["SET", "", ""],  # empty arguments
    ["HSET", "kameng:risk:v:default/customer:顾客", "f#1", "值"],  # UTF-8: bytes counted
    ["XADD", "s", "*", "k", "x" * 1023, "k2", "y" * 1024, "k3", "z" * 70_000],  # long
    ["INCRBY", "k", 0, -1, 2**63 - 1, -(2**63)],  # ints as their digits
    ["SET", b"raw\r\nbytes", b"\x00\xff"],  # bytes as they are, CR LF included
    ["ECHO", "mixed", 5, b"b", "s"],
]


@pytest.mark.parametrize("args", CASES)
def test_pack_equals_redis_py(args):
    assert pack(args) == _redis_py(*args)


@given(st.lists(st.one_of(st.text(), st.binary(), st.integers()), max_size=40))
def test_pack_equals_redis_py_on_any_arguments(args):
    # After a command name: redis-py also splits a first argument such as "SCRIPT LOAD"
    # in two, which pack (whose callers name one-word commands) does not do.
    assert pack(["HSET", *args]) == _redis_py("HSET", *args)


def test_a_script_call_is_evalsha_with_its_keys_counted():
    s = Script("return 1")
    assert s.sha == "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"  # SHA-1, as Redis names it
    assert s.command(["k1", "k2"], ["a", 3]) == _redis_py("EVALSHA", s.sha, 2, "k1", "k2",
                                                          "a", 3)


@pytest.mark.parametrize("bad", [1.5, None, object()])
def test_anything_but_str_bytes_int_is_refused(bad):
    with pytest.raises(TypeError):
        pack(["SET", "k", bad])
