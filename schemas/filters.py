"""Langfuse's table filters on the wire: one model per filter type, each allowing only its operators."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

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

StringOperator = Literal["=", "contains", "does not contain", "starts with", "ends with", "is not empty"]
# Langfuse's full-text operator on the events table: every word of the value appears as a word of the text.
MatchOperator = Literal["matches"]
StringObjectOperator = Literal["=", "contains", "does not contain", "starts with", "ends with", "is set", "is not set"]
NumberOperator = Literal["=", ">", "<", ">=", "<="]
DatetimeOperator = Literal[">", "<", ">=", "<="]
OptionsOperator = Literal["any of", "none of"]
ArrayOptionsOperator = Literal["any of", "none of", "all of"]
BooleanOperator = Literal["=", "<>"]
NullOperator = Literal["is null", "is not null"]
TracePosition = Literal["root", "first", "last", "nthFromStart", "nthFromEnd"]
# Langfuse's contains / starts with / ends with "" on a JSON key was how its UI said "the key is set".
_LEGACY_PRESENCE_OPERATORS = ("contains", "starts with", "ends with")


class _Filter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    column: ColumnName


class _Unkeyed(_Filter):
    # Langfuse's filter builder keeps `"key": ""` in its state on filters that take no key, and its
    # server drops the field. An empty key carries nothing, so it is accepted (and not stored or
    # sent back); any other key is not.
    key: Literal[""] | None = Field(default=None, exclude=True)


class DatetimeFilter(_Unkeyed):
    type: Literal["datetime"]
    operator: DatetimeOperator
    value: UtcDatetime


class StringFilter(_Unkeyed):
    type: Literal["string"]
    operator: StringOperator | MatchOperator
    # `is not empty` tests only the column; Langfuse's client sends "" or leaves the value out.
    value: FilterText = ""


class StringObjectFilter(_Filter):
    """A string test on one key of a JSON object column (e.g. metadata.customer = "acme")."""

    type: Literal["stringObject"]
    key: FilterText
    operator: StringObjectOperator | MatchOperator
    value: FilterText = ""

    @model_validator(mode="after")
    def _legacy_presence(self) -> StringObjectFilter:
        if self.value == "" and self.operator in _LEGACY_PRESENCE_OPERATORS:
            self.operator = "is set"
        return self


class NumberFilter(_Unkeyed):
    type: Literal["number"]
    operator: NumberOperator
    value: float


class NumberObjectFilter(_Filter):
    type: Literal["numberObject"]
    key: FilterText
    operator: NumberOperator
    value: float


class BooleanObjectFilter(_Filter):
    """A boolean test on one named value of a keyed column (e.g. the score "is_correct" = true)."""

    type: Literal["booleanObject"]
    key: FilterText
    operator: BooleanOperator
    value: bool


class StringOptionsFilter(_Unkeyed):
    type: Literal["stringOptions"]
    operator: OptionsOperator
    value: OptionList


class CategoryOptionsFilter(_Filter):
    type: Literal["categoryOptions"]
    key: FilterText | None = None
    operator: OptionsOperator
    value: OptionList


class ArrayOptionsFilter(_Unkeyed):
    type: Literal["arrayOptions"]
    operator: ArrayOptionsOperator
    value: OptionList


class BooleanFilter(_Unkeyed):
    type: Literal["boolean"]
    operator: BooleanOperator
    value: bool


class NullFilter(_Unkeyed):
    type: Literal["null"]
    operator: NullOperator
    # Langfuse sends "" here; the value carries no meaning for a null test.
    value: Literal[""] | None = ""


class PositionInTraceFilter(_Filter):
    """Where an observation sits in its trace: the root, the first or last started, or the n-th from either end."""

    type: Literal["positionInTrace"]
    operator: Literal["="]
    key: TracePosition
    value: Annotated[int, Field(ge=1, le=1_000_000)] | None = None

    @model_validator(mode="after")
    def _position_needs_n(self) -> PositionInTraceFilter:
        if self.key in ("nthFromStart", "nthFromEnd") and self.value is None:
            raise ValueError(f'"{self.key}" needs the position as value: 1 or more')
        return self


Filter = Annotated[
    DatetimeFilter
    | StringFilter
    | StringObjectFilter
    | NumberFilter
    | NumberObjectFilter
    | StringOptionsFilter
    | CategoryOptionsFilter
    | ArrayOptionsFilter
    | BooleanObjectFilter
    | BooleanFilter
    | NullFilter
    | PositionInTraceFilter,
    Field(discriminator="type"),
]
