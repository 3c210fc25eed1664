// Reads one JSON Schema on stdin and writes its TypeScript on stdout, with json-schema-to-typescript.
// Run by rpc/typescript.py, which owns the schema and the options; this file only bridges to Node.
import { compile } from "json-schema-to-typescript";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const { schema, name, options } = JSON.parse(Buffer.concat(chunks).toString("utf8"));
process.stdout.write(await compile(schema, name, options));
