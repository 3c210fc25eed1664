-- The API caches "who is this token, and what is their role in this project" for a few seconds.
-- Any change that could shrink what a cached answer allows (a revoked or deleted session, a
-- changed or removed membership, a deleted user or project) notifies the API processes, which
-- drop their caches at once. Statement-level triggers: one notification per statement, and
-- Postgres folds identical notifications of one transaction into one.
CREATE FUNCTION notify_access_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('access_changed', TG_TABLE_NAME);
    RETURN NULL;
END
$$;

CREATE TRIGGER auth_sessions_access_changed AFTER UPDATE OR DELETE OR TRUNCATE ON auth_sessions
    FOR EACH STATEMENT EXECUTE FUNCTION notify_access_changed();
CREATE TRIGGER users_access_changed AFTER UPDATE OR DELETE OR TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION notify_access_changed();
CREATE TRIGGER projects_access_changed AFTER UPDATE OR DELETE OR TRUNCATE ON projects
    FOR EACH STATEMENT EXECUTE FUNCTION notify_access_changed();
CREATE TRIGGER organization_memberships_access_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON organization_memberships
    FOR EACH STATEMENT EXECUTE FUNCTION notify_access_changed();
CREATE TRIGGER project_memberships_access_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON project_memberships
    FOR EACH STATEMENT EXECUTE FUNCTION notify_access_changed();
