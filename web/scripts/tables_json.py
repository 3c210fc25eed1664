"""Writes web/public/tables.json: what the exports page may offer for each table, derived, never copied.

The columns (exported, filterable, sortable, default order) come from `workers.tables`, the operators
and the value each filter type takes from the pydantic models in `schemas.filters`, so the page offers
only columns and filters that `batchExport.create` accepts. Run by `make web`; tests/web fails while
the committed file differs from what this prints.

    python web/scripts/tables_json.py            # rewrites web/public/tables.json
    python web/scripts/tables_json.py --stdout   # prints it instead
"""

from __future__ import annotations

import argparse
import json
import types
import typing
from datetime import datetime
from pathlib import Path

from schemas.filters import Filter
from workers.filters import ACCEPTED_FILTER_TYPES
from workers.tables import TABLES, ExportTable

OUT = Path(__file__).resolve().parents[1] / "public" / "tables.json"


def _value_kind(annotation: typing.Any) -> str:
    """The input a filter's `value` needs: text, number, datetime, boolean, list, or none."""
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
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
    # An optional value (positionInTrace's n): the input of what it holds when it is given.
    present = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(present) == 1:
        return _value_kind(present[0])
    # NullFilter's `Literal[""] | None`: the value carries no meaning.
    return "none"


def _key_choices(annotation: typing.Any) -> list[str] | None:
    """The keys a filter allows when they are a fixed list (positionInTrace: root, first, …)."""
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    return None


def filter_types() -> dict[str, dict]:
    """Each filter type's operators, its value's kind, and whether it names a JSON key."""
    described = {}
    for model in typing.get_args(typing.get_args(Filter)[0]):
        fields = model.model_fields
        (type_name,) = typing.get_args(fields["type"].annotation)
        operators = typing.get_args(fields["operator"].annotation)
        if all(typing.get_origin(o) is typing.Literal for o in operators):  # `StringOperator | MatchOperator`
            operators = tuple(v for o in operators for v in typing.get_args(o))
        # `_Unkeyed` filters take only Langfuse's stray `"key": ""`: they take no key.
        key = "key" in fields and fields["key"].annotation != (typing.Literal[""] | None)
        described[type_name] = {
            "operators": list(operators),
            "value": _value_kind(fields["value"].annotation),
            # False where the value may be left out (a position that needs no n, `is not empty`).
            "valueRequired": fields["value"].is_required(),
            "key": key,
            "keyRequired": key and fields["key"].is_required(),
            "keyChoices": _key_choices(fields["key"].annotation) if key else None,
        }
    return described


def describe_table(table: ExportTable) -> dict:
    return {
        "name": table.name,
        # The file's columns in file order, as `columns` names them (by key); `type` is the column's
        # type in a Parquet file.
        "columns": [{"id": c.key, "name": c.display or c.key, "type": c.parquet_type} for c in table.exported_columns],
        # Rows that also carry one column per score name of the project, which only `columns: null` brings.
        "scoreColumns": table.score_alias is not None,
        # Rows with an ingestion time, which a scheduled export's windows split by (not sessions: aggregates).
        "schedulable": table.ingested_at is not None,
        # A column's own filter type, the types Langfuse pairs with it (workers.filters), and `null`
        # (is null / is not null), which every filterable column takes.
        "filterColumns": [
            {
                "id": c.key,
                "name": c.display or c.key,
                "filterTypes": list(dict.fromkeys([c.filter, *ACCEPTED_FILTER_TYPES[c.filter], "null"])),
            }
            for c in table.filterable_columns
            if c.filter is not None
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
