// Generates src/event.generated.ts from the repository's one JSON Schema of the event.
// `npm run gen:types` writes it; the test suite checks that the committed file is current.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { compile } from "json-schema-to-typescript";

export const schemaPath = join(__dirname, "..", "..", "..", "schema", "event.schema.json");
export const generatedPath = join(__dirname, "..", "src", "event.generated.ts");

export async function generate(): Promise<string> {
  const schema = JSON.parse(readFileSync(schemaPath, "utf8"));
  return compile(schema, "SluiceEvent", {
    bannerComment:
      "/* Generated from schema/event.schema.json by `npm run gen:types`; do not edit. */",
    style: { singleQuote: false },
  });
}

if (require.main === module) {
  generate().then((text) => writeFileSync(generatedPath, text));
}
