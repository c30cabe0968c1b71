"""hack/mutation_score.py: the verdict of `make mutation` and how docs/mutation.md names
the equivalent survivors."""

from __future__ import annotations

from hack.mutation_score import documented, module_of, parse


def test_module_of_functions_and_methods():
    assert module_of("kameng.contracts.money.x_to_fen__mutmut_3") == "kameng.contracts.money"
    assert module_of("kameng_storefront.web.license_guard.xǁLicenseGuardǁmode__mutmut_11") == \
        "kameng_storefront.web.license_guard"


def test_parse_results():
    text = ("    a.b.x_f__mutmut_1: killed\n    a.b.x_f__mutmut_2: survived\n"
            "    a.b.x_g__mutmut_1: no tests\nnoise\n")
    assert parse(text) == {"a.b.x_f__mutmut_1": "killed", "a.b.x_f__mutmut_2": "survived",
                           "a.b.x_g__mutmut_1": "no tests"}


def test_documented_keys_and_shorthands():
    doc = ("- `a.b.x_f__mutmut_18`, `_20`, `x_g__mutmut_3`, `_4`: reason `None`\n"
           "- `c.xǁKǁm__mutmut_1`: other\n- `_9` alone names nothing\n")
    assert documented(doc) == {"a.b.x_f__mutmut_18", "a.b.x_f__mutmut_20",
                               "a.b.x_g__mutmut_3", "a.b.x_g__mutmut_4", "c.xǁKǁm__mutmut_1"}
