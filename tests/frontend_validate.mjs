// Validate workflow files with ComfyUI's own frontend validator (validateComfyWorkflow, the zod schema the
// frontend applies to every workflow it loads), run in Node on jsdom.
//   node tests/frontend_validate.mjs <prepared frontend folder> <workflow.json>...
// Prints one JSON line per file: {"file", "ok", "errors"}.
import { createRequire } from 'module';
import fs from 'fs';
import path from 'path';
import { pathToFileURL } from 'url';

const [root, ...files] = process.argv.slice(2);
const require = createRequire(path.join(root, 'package.json'));
const { JSDOM } = require('jsdom');
const dom = new JSDOM('<!doctype html><html><head></head><body></body></html>',
  { url: 'http://127.0.0.1:8188/', pretendToBeVisual: true });
const w = dom.window;
for (const k of Object.getOwnPropertyNames(w)) {
  if (!(k in globalThis)) { try { globalThis[k] = w[k]; } catch { /* read-only */ } }
}
globalThis.window = globalThis;
globalThis.self = globalThis;
globalThis.document = w.document;
for (const k of ['addEventListener', 'removeEventListener', 'dispatchEvent']) globalThis[k] = w[k].bind(w);
globalThis.Worker = class { addEventListener() {} removeEventListener() {} postMessage() {} start() {} terminate() {} };
globalThis.matchMedia = () => ({ matches: false, addEventListener() {}, removeEventListener() {}, addListener() {}, removeListener() {} });

// The module that exports validateComfyWorkflow (its chunk name carries a content hash).
const assets = path.join(root, 'frontend', 'comfyui_frontend_package', 'static', 'assets');
const chunk = fs.readdirSync(assets).filter((f) => f.endsWith('.js'))
  .find((f) => /validateComfyWorkflow as (\w+)/.test(fs.readFileSync(path.join(assets, f), 'utf8')));
const alias = fs.readFileSync(path.join(assets, chunk), 'utf8').match(/validateComfyWorkflow as (\w+)/)[1];
const validate = (await import(pathToFileURL(path.join(assets, chunk)).href))[alias];
for (const file of files) {
  const errors = [];
  const out = await validate(JSON.parse(fs.readFileSync(file, 'utf8')), (e) => errors.push(String(e)));
  console.log(JSON.stringify({ file, ok: out != null, errors }));
}
process.exit(0);
