#!/usr/bin/env node
// Copies the package's browser modules into web-demo/ as top-level files, because
// keygate serves only the top-level files of its web root (no node_modules, no
// subfolders). src/X.js becomes web-demo/keygate-X.js (src/index.js becomes
// web-demo/keygate-client.js), with its relative imports renamed to match and a
// header saying where it came from. The copies are checked in; `--check` (run by the
// package's tests) fails when they differ from what this script would write.
//   node clients/js/scripts/vendor.js [--check]

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const packageDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const srcDir = path.join(packageDir, 'src');
export const demoDir = path.resolve(packageDir, '..', '..', 'web-demo');
/** The browser modules; node.js is for backends and stays out of the page. */
export const MODULES = ['index', 'errors', 'identity', 'dpop', 'protocol', 'account', 'keystore', 'tokens'];
const vendoredName = (m) => (m === 'index' ? 'keygate-client.js' : `keygate-${m}.js`);

/** { 'keygate-….js': contents } as the web demo should hold them. */
export function vendored() {
  const out = {};
  for (const m of MODULES) {
    const text = fs.readFileSync(path.join(srcDir, `${m}.js`), 'utf8').replace(
      /from '\.\/([a-z]+)\.js'/g,
      (whole, name) => {
        if (!MODULES.includes(name)) throw new Error(`src/${m}.js imports ${name}.js, which is not vendored`);
        return `from './${vendoredName(name)}'`;
      },
    );
    out[vendoredName(m)] = `// Generated from clients/js/src/${m}.js (package keygate-client) by\n` +
      '// clients/js/scripts/vendor.js: edit the package and run that script, not this file.\n\n' + text;
  }
  return out;
}

/** Names of the vendored files that are missing or differ, and stray keygate-*.js files. */
export function drift() {
  const want = vendored();
  const stale = Object.entries(want)
    .filter(([name, text]) => !fs.existsSync(path.join(demoDir, name)) || fs.readFileSync(path.join(demoDir, name), 'utf8') !== text)
    .map(([name]) => name);
  const stray = fs.readdirSync(demoDir).filter((n) => /^keygate-.*\.js$/.test(n) && !(n in want));
  return [...stale, ...stray];
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  if (process.argv.includes('--check')) {
    const bad = drift();
    if (bad.length) {
      console.error(`web-demo/ copies differ from clients/js/src: ${bad.join(', ')}; run node clients/js/scripts/vendor.js`);
      process.exit(1);
    }
  } else {
    for (const [name, text] of Object.entries(vendored())) fs.writeFileSync(path.join(demoDir, name), text);
    for (const n of fs.readdirSync(demoDir)) if (/^keygate-.*\.js$/.test(n) && !(n in vendored())) fs.rmSync(path.join(demoDir, n));
  }
}
