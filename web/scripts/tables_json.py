"""Writes web/public/tables.json: what the exports page may offer for each table, derived, never copied.

The columns (filterable, sortable, default order) come from `workers.tables`, the operators and the
value each filter type takes from the pydantic models in `schemas.filters`, so the page offers only
filters that `batchExport.create` accepts. Run by `make web`; tests/web fails while the committed
file differs from what this prints.

    python web/scripts/tables_json.py            # rewrites web/public/tables.json
    python web/scripts/tables_json.py --stdout   # prints it instead
"""

from __future__ import annotations

import argparse
import json
import typing
from datetime import datetime
from pathlib import Path

from schemas.filters import Filter
from workers.tables import TABLES, ExportTable

OUT = Path(__file__).resolve().parents[1] / "public" / "tables.json"


def _value_kind(annotation: typing.Any) -> str:
    """The input a filter's `value` needs: text, number, datetime, boolean, list, or none."""
    if annotation is datetime:
        return "datetime"
    if annotation is bool:
        return "boolean"
    if annotation in (int, float):
        return "number"
    if annotation is str:
        return "text"
    if typing.get_origin(annotation) is list:
        return "list"
    # NullFilter's `Literal[""] | None`: the value carries no meaning.
    return "none"


def filter_types() -> dict[str, dict]:
    """Each filter type's operators, its value's kind, and whether it names a JSON key."""
    described = {}
    for model in typing.get_args(typing.get_args(Filter)[0]):
        fields = model.model_fields
        (type_name,) = typing.get_args(fields["type"].annotation)
        described[type_name] = {
            "operators": list(typing.get_args(fields["operator"].annotation)),
            "value": _value_kind(fields["value"].annotation),
            "key": "key" in fields and fields["key"].is_required(),
        }
    return described


def describe_table(table: ExportTable) -> dict:
    return {
        "name": table.name,
        # A column's own filter type, and `null` (is null / is not null), which every filterable column takes.
        "filterColumns": [
            {"id": c.key, "name": c.display or c.key, "filterTypes": [c.filter, "null"]}
            for c in table.filterable_columns
        ],
        "sortColumns": table.sortable_names(),
        "defaultOrder": {"column": table.default_order[0], "order": table.default_order[1]},
    }


def render() -> str:
    document = {
        "generatedFrom": "workers/tables.py and schemas/filters.py by web/scripts/tables_json.py; do not edit",
        "filterTypes": filter_types(),
        "tables": [describe_table(t) for t in TABLES.values()],
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stdout", action="store_true", help="print the document instead of writing it")
    args = parser.parse_args()
    if args.stdout:
        print(render(), end="")
    else:
        OUT.write_text(render(), encoding="utf-8")
        print(OUT)


if __name__ == "__main__":
    main()
