"""The node's parameter file and the README's parameter table, generated from the config tree.

``config/mapping.yaml`` and the table between the README's ``parameters`` markers are
written from :func:`ilrm_ros.mapping.config.parameter_specs`; tests compare both files
with what these functions produce. After changing a parameter, regenerate them::

    python -m ilrm_ros.mapping.parameter_docs          # rewrite both files
    python -m ilrm_ros.mapping.parameter_docs --check  # exit 1 when either is stale
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Sequence

from ilrm_ros.core.params import ParameterSpec
from ilrm_ros.mapping.config import parameter_specs

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
PARAMETER_FILE = ROOT / "config" / "mapping.yaml"
README = ROOT / "README.md"
TABLE_BEGIN = "<!-- parameters:begin (generated: python -m ilrm_ros.mapping.parameter_docs) -->"
TABLE_END = "<!-- parameters:end -->"

_HEADER = (
    "# Parameters of the ilrm_mapping node (ROS 2 parameter file).\n"
    "# Used by `ros2 launch ilrm_ros mapping.launch.py` and by `ilrm_mapping --params-file` on the pip route.\n"
    "# Generated from the configuration tree (MappingConfig, ilrm_ros/mapping/config.py) by\n"
    "# `python -m ilrm_ros.mapping.parameter_docs`; a test keeps both in sync.\n"
)


def parameter_file(specs: Sequence[ParameterSpec], node_name: str = "ilrm_mapping") -> str:
    """A ROS 2 parameter file holding every spec's default, its description as a comment."""
    lines = [f"{node_name}:", "  ros__parameters:"]
    open_sections: list[str] = []
    for spec in specs:
        *sections, leaf = spec.name.split(".")
        common = 0
        while common < min(len(sections), len(open_sections)) and sections[common] == open_sections[common]:
            common += 1
        for depth in range(common, len(sections)):
            lines.append(f"{'  ' * (depth + 2)}{sections[depth]}:")
        open_sections = sections
        indent = "  " * (len(sections) + 2)
        choices = f" [{'|'.join(spec.choices)}]" if spec.choices else ""
        lines.append(f"{indent}# {spec.description}{choices}")
        lines.append(f"{indent}{leaf}: {json.dumps(spec.default)}")
    return _HEADER + "\n".join(lines) + "\n"


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _allowed(spec: ParameterSpec) -> str:
    """The values a parameter accepts, for the table: choices, a range (per element for lists), specials."""
    if spec.choices:
        return ", ".join(f"`{c}`" for c in spec.choices)
    lo, hi = spec.range
    if lo is None and hi is None:
        return ""
    text = f"[{_number(lo)}, {_number(hi)}]"
    if isinstance(spec.default, list):
        text = f"each in {text}"
    if spec.special:
        text += " or " + ", ".join(_number(v) for v in spec.special)
    return text


def readme_table(specs: Sequence[ParameterSpec]) -> str:
    """A Markdown table of the parameters: name, default, accepted values, runtime, description."""
    rows = ["| parameter | default | values | runtime | description |", "|---|---|---|---|---|"]
    for spec in specs:
        default = f"`{json.dumps(spec.default)}`"
        description = spec.description.replace("|", "\\|")
        rows.append(f"| `{spec.name}` | {default} | {_allowed(spec)} | {'yes' if spec.runtime else ''} | "
                    f"{description} |")
    return "\n".join(rows) + "\n"


def with_readme_table(readme: str, table: str) -> str:
    """``readme`` with the text between the parameter markers replaced by ``table``."""
    begin, end = readme.index(TABLE_BEGIN) + len(TABLE_BEGIN), readme.index(TABLE_END)
    return readme[:begin] + "\n" + table + readme[end:]


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite config/mapping.yaml and the README table, or with ``--check`` report whether they are stale."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 when a file is out of date")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    specs = parameter_specs()
    wanted = {PARAMETER_FILE: parameter_file(specs), README: with_readme_table(README.read_text(), readme_table(specs))}
    stale = [path for path, text in wanted.items() if path.read_text() != text]
    for path in stale:
        if args.check:
            log.error("%s is out of date: run python -m ilrm_ros.mapping.parameter_docs", path)
        else:
            path.write_text(wanted[path])
            log.info("wrote %s", path)
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
