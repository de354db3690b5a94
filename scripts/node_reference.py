"""Generate the README's node reference from the node classes.

    python scripts/node_reference.py          # rewrite the block in README.md
    python scripts/node_reference.py --check  # exit 1 if README.md is out of date

The block sits between ``<!-- node-reference:start -->`` and ``<!-- node-reference:end -->``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

START, END = "<!-- node-reference:start -->", "<!-- node-reference:end -->"


def render() -> str:
    from nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    lines = []
    for node_id, cls in NODE_CLASS_MAPPINGS.items():
        lines.append(f"### {NODE_DISPLAY_NAME_MAPPINGS.get(node_id, node_id)} (`{node_id}`)\n")
        lines.append(f"*{cls.CATEGORY}* — {cls.DESCRIPTION}\n")
        lines.append("| input | type | default | what it does |")
        lines.append("|---|---|---|---|")
        spec = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for name, val in spec.get(section, {}).items():
                opts = val[1] if len(val) > 1 else {}
                typ = "list" if isinstance(val[0], list) else val[0]
                default = opts.get("default", "")
                opt = " (optional)" if section == "optional" else ""
                lines.append(f"| `{name}`{opt} | {typ} | {default} | {opts.get('tooltip', '')} |")
        names = getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)
        tips = getattr(cls, "OUTPUT_TOOLTIPS", [""] * len(names))
        outs = ", ".join(f"`{n}` ({t}): {tip}" for n, t, tip in zip(names, cls.RETURN_TYPES, tips))
        lines.append(f"\n**Outputs:** {outs}\n")
    return "\n".join(lines)


def updated_readme(text: str) -> str:
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{render()}\n{END}{tail}"


def main() -> int:
    readme = ROOT / "README.md"
    text = readme.read_text()
    new = updated_readme(text)
    if "--check" in sys.argv:
        if new != text:
            print("README.md node reference is out of date: run python scripts/node_reference.py")
            return 1
        return 0
    readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
