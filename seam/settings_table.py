"""The README's settings table, generated from the three settings classes so it cannot drift.

    python -m seam.settings_table            print the table
    python -m seam.settings_table --write    rewrite it in README.md between its markers
"""

from __future__ import annotations

import sys
from pathlib import Path

START, END = "<!-- settings:start -->", "<!-- settings:end -->"


def table() -> str:
    from classifier_service.settings import ClassifierSettings
    from encoder_service.settings import EncoderSettings
    from gateway.settings import GatewaySettings

    rows = ["| variable | default | what it does |", "|---|---|---|"]
    for cls in (EncoderSettings, ClassifierSettings, GatewaySettings):
        prefix = cls.model_config["env_prefix"]
        for name, field in cls.model_fields.items():
            default = "unset" if field.default is None else field.default
            description = (field.description or "Port to listen on." if name == "port" else field.description or "")
            rows.append(f"| `{prefix}{name.upper()}` | `{default}` | {description.replace('|', '/')} |")
    return "\n".join(rows)


def write(readme: Path) -> None:
    text = readme.read_text()
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    readme.write_text(f"{head}{START}\n{table()}\n{END}{tail}")


if __name__ == "__main__":
    if "--write" in sys.argv:
        write(Path(__file__).resolve().parent.parent / "README.md")
    else:
        print(table())
