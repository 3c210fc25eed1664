"""The suite's own servers answer: a broken fixture should fail here first, with a clear reason."""


def test_postgres_is_migrated(conn):
    tables = {
        r["table_name"]
        for r in conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema='public'")
    }
    assert {"batch_exports", "audit_logs", "traces", "observations", "auth_sessions"} <= tables


def test_redis_answers(redis_client):
    assert redis_client.ping() is True
