"""The application: request context, sessions, protected procedures, the batchExport router, the app."""
