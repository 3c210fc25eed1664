"""Inputs shared by the procedure tests."""

TRACES_QUERY = {"tableName": "traces", "filter": None, "orderBy": {"column": "timestamp", "order": "DESC"}}


def create_params(project_id: str, **overrides) -> dict:
    params = {"projectId": project_id, "name": "my export", "format": "CSV", "query": TRACES_QUERY}
    params.update(overrides)
    return params
