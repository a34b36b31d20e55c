// Validate an AsyncAPI document with the AsyncAPI project's own parser (@asyncapi/parser).
// Usage: node scripts/asyncapi_validate.mjs docs/asyncapi.yaml
// Exits 0 when the document parses without errors (prints the warnings), 1 with every
// diagnostic otherwise.
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";

const path = process.argv[2] ?? "docs/asyncapi.yaml";
const parser = new Parser();
const { document, diagnostics } = await parser.parse(readFileSync(path, "utf8"), { source: path });
const errors = diagnostics.filter((d) => d.severity === 0);
for (const d of diagnostics) {
  const level = ["error", "warning", "info", "hint"][d.severity] ?? "?";
  console.log(`${level} ${d.code} at ${d.path.join(".")}: ${d.message}`);
}
if (document === undefined || errors.length > 0) {
  console.error(`${path}: ${errors.length} error(s)`);
  process.exit(1);
}
console.log(`${path}: valid AsyncAPI ${document.version()} (${document.allMessages().length} messages)`);
