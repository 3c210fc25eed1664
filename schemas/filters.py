"""Langfuse's table filters on the wire: one model per filter type, each allowing only its operators."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

ColumnName = Annotated[str, Field(min_length=1, max_length=200)]
FilterText = Annotated[str, Field(max_length=100_000)]
# fail_fast: the first wrong option is reported, not each of up to a thousand (which cost the API a
# second of CPU per filter and a reply of megabytes).
OptionList = Annotated[list[FilterText], Field(max_length=1000, fail_fast=True)]


def _in_utc(value: datetime) -> datetime:
    """The instant in UTC (a value without an offset is taken as UTC, as the frontend sends it).

    Postgres takes offsets only up to ±15:59 and refuses the rest when the export runs, long after
    the caller was told the export was accepted; in UTC every instant a datetime can hold is one it takes.
    """
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range: in UTC it falls outside the years 1 to 9999") from None


UtcDatetime = Annotated[datetime, AfterValidator(_in_utc)]

StringOperator = Literal["=", "contains", "does not contain", "starts with", "ends with"]
NumberOperator = Literal["=", ">", "<", ">=", "<="]
DatetimeOperator = Literal[">", "<", ">=", "<="]
OptionsOperator = Literal["any of", "none of"]
ArrayOptionsOperator = Literal["any of", "none of", "all of"]
BooleanOperator = Literal["=", "<>"]
NullOperator = Literal["is null", "is not null"]


class _Filter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    column: ColumnName


class DatetimeFilter(_Filter):
    type: Literal["datetime"]
    operator: DatetimeOperator
    value: UtcDatetime


class StringFilter(_Filter):
    type: Literal["string"]
    operator: StringOperator
    value: FilterText


class StringObjectFilter(_Filter):
    """A string test on one key of a JSON object column (e.g. metadata.customer = "acme")."""

    type: Literal["stringObject"]
    key: FilterText
    operator: StringOperator
    value: FilterText


class NumberFilter(_Filter):
    type: Literal["number"]
    operator: NumberOperator
    value: float


class NumberObjectFilter(_Filter):
    type: Literal["numberObject"]
    key: FilterText
    operator: NumberOperator
    value: float


class StringOptionsFilter(_Filter):
    type: Literal["stringOptions"]
    operator: OptionsOperator
    value: OptionList


class CategoryOptionsFilter(_Filter):
    type: Literal["categoryOptions"]
    key: FilterText | None = None
    operator: OptionsOperator
    value: OptionList


class ArrayOptionsFilter(_Filter):
    type: Literal["arrayOptions"]
    operator: ArrayOptionsOperator
    value: OptionList


class BooleanFilter(_Filter):
    type: Literal["boolean"]
    operator: BooleanOperator
    value: bool


class NullFilter(_Filter):
    type: Literal["null"]
    operator: NullOperator
    # Langfuse sends "" here; the value carries no meaning for a null test.
    value: Literal[""] | None = ""


Filter = Annotated[
    DatetimeFilter
    | StringFilter
    | StringObjectFilter
    | NumberFilter
    | NumberObjectFilter
    | StringOptionsFilter
    | CategoryOptionsFilter
    | ArrayOptionsFilter
    | BooleanFilter
    | NullFilter,
    Field(discriminator="type"),
]
