/**
 * Regenerates models/onnx/schema.ts from models/onnx/onnx.proto:
 *   node --import tsx models/onnx/schema-gen.ts
 *
 * The schema travels as a string constant so bundled vendor code needs no file
 * access; test/onnx-codec.test.ts fails when the constant and the file differ.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

/** The text of schema.ts for a given onnx.proto text. */
export function renderSchemaModule(protoText: string): string {
  const body = protoText.replace(/\\/g, '\\\\').replace(/`/g, '\\`').replace(/\$\{/g, '\\${');
  return [
    '// Generated from models/onnx/onnx.proto by models/onnx/schema-gen.ts. Do not edit by hand.',
    '',
    '/** The ONNX schema (proto2 text) the codec parses with protobufjs. */',
    `export const ONNX_PROTO_TEXT: string = \`${body}\`;`,
    '',
  ].join('\n');
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const dir = new URL('.', import.meta.url);
  const text = readFileSync(new URL('onnx.proto', dir), 'utf8');
  writeFileSync(new URL('schema.ts', dir), renderSchemaModule(text));
}
