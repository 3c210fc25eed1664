"""The application: request context, sessions and protected procedures (auth), the batchExport router, the app."""
