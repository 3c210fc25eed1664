// Validates an OpenRPC document (default: ./openrpc.json) with @open-rpc/schema-utils-js; exit 1 with the reasons if invalid.
import { readFile } from "node:fs/promises";
import { validateOpenRPCDocument } from "@open-rpc/schema-utils-js";

const path = process.argv[2] ?? new URL("../openrpc.json", import.meta.url);
const document = JSON.parse(await readFile(path, "utf8"));
const result = validateOpenRPCDocument(document);
if (result !== true) {
  console.error(result.message ?? JSON.stringify(result, null, 2));
  process.exit(1);
}
console.log("valid OpenRPC document");
