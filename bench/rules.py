"""The field rules, re-exported from dejavu.rules where they now live (the measurement tests use them too)."""

from dejavu.rules import (  # noqa: F401
    RULE,
    Rule,
    at_least,
    check_fields,
    each,
    field_problem,
    finite,
    fraction,
    int_within,
    one_of,
    ordered_pair,
    rule,
)
