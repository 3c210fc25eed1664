"""The table names on the wire (schemas.TableName) and the table definitions (workers.tables) are one set."""

from typing import get_args

from schemas import TableName
from workers.tables import TABLES


def test_every_table_name_the_api_accepts_has_a_definition_and_every_definition_a_name():
    assert sorted(get_args(TableName)) == sorted(TABLES)


def test_each_definition_is_filed_under_its_own_name():
    assert all(table.name == name for name, table in TABLES.items())
