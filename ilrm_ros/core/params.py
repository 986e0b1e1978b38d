"""Parameters as dataclass fields: any layer's configuration carries its own parameter metadata.

A configuration is a dataclass; a field made with :func:`param` (or :func:`param_list`) is a
*parameter*: it carries a description, a numeric range, choices, special values and whether
it may change at runtime. A plain field (no metadata) is an internal knob, never a
parameter. A tree of such dataclasses (a field whose value is a dataclass is a section)
flattens into dotted :class:`ParameterSpec`\\ s (``map.chunk_size_m`` ...) that a front end
(the ROS node, a parameter file, a README table) declares, validates and documents.

Nothing here knows about ROS.
"""
from __future__ import annotations

import array
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

__all__ = ["param", "param_list", "is_parameter", "ParameterSpec", "parameter_specs", "validate_value",
           "coerce_value", "set_dotted", "flatten_nested"]


def param(default: Any, description: str, lo: float | None = None, hi: float | None = None,
          choices: tuple[str, ...] | None = None, special: tuple = (), runtime: bool = False) -> Any:
    """A dataclass field that is a parameter: its description, range [lo, hi] and choices.

    ``special``: values outside [lo, hi] that mean something (e.g. 0 = "the model's own");
    a declared range is widened to include them and :func:`validate_value` allows them.
    ``runtime``: the parameter may change while the program runs (else read-only after start).
    """
    return field(default=default, metadata={"description": description, "range": (lo, hi), "choices": choices,
                                            "special": tuple(special), "runtime": runtime})


def param_list(default: list, description: str, lo: float | None = None, hi: float | None = None,
               runtime: bool = False) -> Any:
    """A list-of-floats parameter; ``lo``/``hi`` bound every element (all elements must be finite)."""
    return field(default_factory=lambda: list(default),
                 metadata={"description": description, "range": (lo, hi), "choices": None, "special": (),
                           "runtime": runtime})


def is_parameter(f: Any) -> bool:
    """Whether a dataclass field was made with :func:`param` / :func:`param_list`."""
    return "description" in f.metadata


@dataclass(frozen=True)
class ParameterSpec:
    """One parameter: dotted name, default, description, numeric range, choices, runtime."""

    name: str
    default: Any
    description: str
    range: tuple[float | None, float | None]
    choices: tuple[str, ...] | None
    special: tuple = ()
    """Values outside ``range`` with a documented meaning (e.g. 0 = the model's own)."""
    runtime: bool = False
    """May change while the program runs (otherwise fixed at start-up)."""

    def declared_range(self) -> tuple[float | None, float | None]:
        """The range to declare: ``range`` widened to include the special values."""
        lo, hi = self.range
        if self.special and lo is not None:
            lo = min(lo, *self.special)
        if self.special and hi is not None:
            hi = max(hi, *self.special)
        return lo, hi


def parameter_specs(cfg_type: type, prefix: str = "") -> list[ParameterSpec]:
    """Flatten a configuration tree into dotted parameter specs, in field order.

    Sections (fields holding a dataclass) are walked; internal fields are left out.
    """
    specs: list[ParameterSpec] = []
    inst = cfg_type()
    for f in fields(cfg_type):
        value = getattr(inst, f.name)
        name = f"{prefix}{f.name}"
        if is_dataclass(value):
            specs.extend(parameter_specs(type(value), name + "."))
        elif is_parameter(f):
            m = f.metadata
            specs.append(ParameterSpec(name, value, m["description"], m["range"], m["choices"], m["special"],
                                       m["runtime"]))
    return specs


def coerce_value(default: Any, value: Any) -> Any:
    """A validated value in the default's type (int -> float, any sequence -> list of floats)."""
    if isinstance(default, bool):
        return bool(value)
    if isinstance(default, float) and isinstance(value, int):
        return float(value)
    if isinstance(default, list):
        return [float(v) for v in list(value)]
    return value


def set_dotted(cfg: Any, name: str, value: Any) -> None:
    """Set the field a dotted name points to (``map.chunk_size_m``) in a configuration tree."""
    *sections, leaf = name.split(".")
    for section in sections:
        cfg = getattr(cfg, section)
    setattr(cfg, leaf, value)


def validate_value(spec: ParameterSpec, value: Any) -> None:
    """Raise ValueError with a clear message when ``value`` is outside the spec."""
    d = spec.default
    if isinstance(d, bool):
        ok = isinstance(value, bool)
    elif isinstance(d, (int, float)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and isinstance(d, int) and not isinstance(d, bool):
            ok = isinstance(value, int)
    elif isinstance(d, list):
        _validate_list(spec, value)
        return
    else:
        ok = isinstance(value, str)
    if not ok:
        raise ValueError(f"parameter '{spec.name}': expected {type(d).__name__} like {d!r}, got {value!r}")
    lo, hi = spec.range
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value not in spec.special:
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            extra = f" (or {', '.join(map(str, spec.special))})" if spec.special else ""
            raise ValueError(f"parameter '{spec.name}'={value} outside [{lo}, {hi}]{extra}")
    if spec.choices is not None and value not in spec.choices:
        raise ValueError(f"parameter '{spec.name}'={value!r} not one of {list(spec.choices)}")


def _validate_list(spec: ParameterSpec, value: Any) -> None:
    """A list parameter: any sequence of real numbers (e.g. ``array('d')``) of the default's
    length, every element finite and inside ``spec.range``."""
    n = len(spec.default)
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, array.array, Sequence)):
        raise ValueError(f"parameter '{spec.name}': expected a list of {n} numbers like {spec.default}, got {value!r}")
    items = list(value)
    if len(items) != n or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
        raise ValueError(f"parameter '{spec.name}': expected a list of {n} numbers like {spec.default}, got {items}")
    lo, hi = spec.range
    for v in items:
        if not math.isfinite(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
            raise ValueError(f"parameter '{spec.name}'={items}: every element must be finite"
                             + (f" and in [{lo}, {hi}]" if lo is not None or hi is not None else ""))


def flatten_nested(tree: dict, prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> dotted names: ``{"map": {"fusion": False}}`` -> ``{"map.fusion": False}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten_nested(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
