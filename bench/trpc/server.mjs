// The peer users would pick instead: a tRPC v11 standalone server (one Node process) with the same
// trivial procedure as the Python stack's bench.ping: a bearer-token check, a project-role check
// with a scope, zod input and output validation, and a handler that does nothing.
// Sessions and roles live in memory here (the Python stack reads them from Postgres), which only
// flatters tRPC.
//
//   BENCH_PORT=… BENCH_TOKEN=… BENCH_PROJECT_ID=… node server.mjs
//   curl -H "Authorization: Bearer $BENCH_TOKEN" "http://127.0.0.1:$BENCH_PORT/bench.ping?input=%7B%22projectId%22%3A%22…%22%7D"
import { initTRPC, TRPCError } from "@trpc/server";
import { createHTTPServer } from "@trpc/server/adapters/standalone";
import { z } from "zod";

const port = Number(process.env.BENCH_PORT ?? 3000);
const sessions = new Map([[process.env.BENCH_TOKEN, { id: "bench-user" }]]);
const roles = new Map([[`bench-user:${process.env.BENCH_PROJECT_ID}`, "MEMBER"]]);
const scopes = { OWNER: ["batchExports:read"], ADMIN: ["batchExports:read"], MEMBER: ["batchExports:read"] };

const t = initTRPC.context().meta().create();

const createContext = ({ req }) => {
  const [scheme, token] = (req.headers.authorization ?? "").split(" ");
  return { token: scheme?.toLowerCase() === "bearer" && token ? token : null };
};

const protectedProcedure = t.procedure.use(({ ctx, next }) => {
  const user = ctx.token ? sessions.get(ctx.token) : undefined;
  if (!user) throw new TRPCError({ code: "UNAUTHORIZED" });
  return next({ ctx: { ...ctx, user } });
});

const protectedProjectProcedure = protectedProcedure
  .input(z.object({ projectId: z.string() }))
  .use(({ ctx, input, meta, next }) => {
    const role = roles.get(`${ctx.user.id}:${input.projectId}`);
    if (!role || !scopes[role]?.includes(meta?.scope)) throw new TRPCError({ code: "FORBIDDEN" });
    return next({ ctx: { ...ctx, projectId: input.projectId, role } });
  });

const appRouter = t.router({
  bench: t.router({
    ping: protectedProjectProcedure
      .meta({ scope: "batchExports:read" })
      .output(z.object({ pong: z.boolean(), projectId: z.string() }))
      .query(({ ctx }) => ({ pong: true, projectId: ctx.projectId })),
  }),
});

createHTTPServer({ router: appRouter, createContext }).listen(port, "127.0.0.1");
console.log(`tRPC listening on 127.0.0.1:${port}`);
