"""Heads as data: what each head is (spec.py), the composite label and the joint maths over heads (composite.py),
and reading each head's labels from a table (labels.py).

    from multitask.heads import HeadSpec, composite_encode, label_array
    code = composite_encode({"mask": 0, "gender": 1, "age": 2}, heads)   # mask*6 + gender*3 + age = 5
"""
from .composite import (
    composite_class_names,
    composite_decode,
    composite_encode,
    composite_radices,
    composite_size,
    expand_derived,
    expand_heads,
    expand_targets,
    joint_probabilities,
    marginal_probabilities,
    member_joint,
    output_keys,
)
from .labels import class_index, label_array, resolve_heads, years_array, years_source
from .spec import (
    DEFAULT_YEARS_LOSS,
    LOSS_NAMES,
    UNLABELLED,
    YEAR_LOSS_NAMES,
    YEARS,
    YEARS_COLUMN_SUFFIX,
    HeadSpec,
    expected_years,
    years_key,
)

__all__ = ["DEFAULT_YEARS_LOSS", "LOSS_NAMES", "UNLABELLED", "YEARS", "YEARS_COLUMN_SUFFIX", "YEAR_LOSS_NAMES",
           "HeadSpec", "class_index", "composite_class_names", "composite_decode", "composite_encode",
           "composite_radices", "composite_size", "expand_derived", "expand_heads", "expand_targets",
           "expected_years", "joint_probabilities", "label_array", "marginal_probabilities", "member_joint",
           "output_keys", "resolve_heads", "years_array", "years_key", "years_source"]
