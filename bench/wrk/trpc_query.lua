-- A tRPC query as @trpc/client's httpLink sends it: GET /<path>?input=<URI-encoded JSON>, bearer token.
wrk.method = "GET"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
