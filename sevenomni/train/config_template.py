"""``sevenomni train --print-config``: every key of a run config with its default and description,
as commented YAML generated from the config records (:class:`~sevenomni.train.config.RunConfig`).

A key without a default, or whose default cannot train (``batch_size``, a stage's length), shows
the example its field declares (``Field(examples=[...])``); a list of records (databases, stages)
shows one example item.
"""

from __future__ import annotations

import textwrap
import typing

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from sevenomni.train.config import RunConfig
from sevenomni.train.config_keys import record_class

HEADER = """\
# sevenomni run config: every key, with its default and what it does (sevenomni train --print-config).
# Values marked "example" have no usable default: replace them. Keys left at their default may be deleted.
"""
WIDTH = 110


def config_template() -> str:
    """The whole run config as commented YAML that :func:`~sevenomni.train.config.load_config` reads."""
    return HEADER + "\n".join(record_lines(RunConfig, indent=0)) + "\n"


def record_lines(record: type[BaseModel], indent: int) -> list[str]:
    """The commented keys of one config record, at ``indent`` spaces."""
    lines = []
    for name, field in record.model_fields.items():
        lines += comment_lines(field, indent)
        nested = record_class(field.annotation)
        pad = " " * indent
        if nested is not None and typing.get_origin(field.annotation) is list:
            lines += [f"{pad}{name}:", f"{pad}  -"] + record_lines(nested, indent + 4)
        elif nested is not None and (field.is_required() or field.get_default(call_default_factory=True) is not None):
            lines += [f"{pad}{name}:"] + record_lines(nested, indent + 2)
        else:
            lines.append(f"{pad}{name}: {yaml_value(shown_value(field))}")
    return lines


def shown_value(field: FieldInfo) -> typing.Any:
    """A field's example where it declares one, else its default."""
    if field.examples:
        return field.examples[0]
    return field.get_default(call_default_factory=True)


def comment_lines(field: FieldInfo, indent: int) -> list[str]:
    """The field's description, and its default where the value shown is an example."""
    text = field.description
    if field.examples:
        default = "none, required" if field.is_required() else yaml_value(field.get_default(call_default_factory=True))
        text += f" [example; default: {default}]"
    return textwrap.wrap(text, WIDTH - indent, initial_indent=" " * indent + "# ", subsequent_indent=" " * indent + "# ")


def yaml_value(value: typing.Any) -> str:
    """``value`` as one line of YAML (flow style)."""
    return yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10**6).removesuffix("...\n").strip()
