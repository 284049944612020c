// What the package ships: the hand-written types declare exactly what the modules
// export, the README shows the examples that tsc checks, the web demo's copies match
// src/, and `npm pack` would publish only the intended files.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { packageDir } from './support.js';
import { drift, vendored } from '../scripts/vendor.js';

/** Names a .d.ts declares at top level (export function/class/const/let), plus its `export *` sources. */
function declared(file) {
  const text = fs.readFileSync(path.join(packageDir, 'src', file), 'utf8');
  const names = new Set([...text.matchAll(/^export (?:declare )?(?:function|class|const|let) ([A-Za-z0-9_]+)/gm)].map((m) => m[1]));
  const starFrom = [...text.matchAll(/^export \* from '\.\/([a-z]+)\.js';/gm)].map((m) => m[1]);
  return { names, starFrom };
}

for (const entry of ['index', 'node']) {
  test(`src/${entry}.d.ts declares exactly what src/${entry}.js exports`, async () => {
    const mod = await import(`../src/${entry}.js`);
    const { names, starFrom } = declared(`${entry}.d.ts`);
    for (const from of starFrom) for (const n of declared(`${from}.d.ts`).names) names.add(n);
    assert.deepEqual([...names].sort(), Object.keys(mod).sort());
  });
}

test('the README shows the two examples exactly as tsc checks them, each 15 lines', () => {
  const readme = fs.readFileSync(path.join(packageDir, 'README.md'), 'utf8');
  for (const name of ['browser.js', 'express.js']) {
    const example = fs.readFileSync(path.join(packageDir, 'examples', name), 'utf8');
    assert.equal(example.trimEnd().split('\n').length, 15, name);
    assert.ok(readme.includes('```js\n' + example.trimEnd() + '\n```'), `README.md shows examples/${name} as it is`);
  }
});

test('the web demo holds current copies of the browser modules', () => {
  assert.deepEqual(drift(), [], 'run node clients/js/scripts/vendor.js');
  const copies = vendored();
  assert.ok(Object.values(copies).every((t) => !/from '\.\/(?!keygate-)/.test(t)), 'copies import only copies');
  assert.ok(Object.values(copies).every((t) => !/from '(?!\.\/)/.test(t)), 'no bare import: the page could not resolve it');
  assert.match(copies['keygate-recovery.js'], /from '\.\/keygate-bip39\.js'/, 'the dependency comes from the bundle');
  assert.match(copies['keygate-bip39.js'], /^export \{[^}]*\bentropyToMnemonic\b[^}]*\bwordlist\b[^}]*\};$/m);
  assert.ok(!('keygate-node.js' in copies), 'the Node module stays out of the page');
});

test('npm pack would publish only package.json, the README, src/*.js and src/*.d.ts', () => {
  const out = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: packageDir, encoding: 'utf8' });
  const [pack] = JSON.parse(out);
  assert.equal(pack.name, 'keygate-client');
  const files = pack.files.map((f) => f.path).sort();
  const src = fs.readdirSync(path.join(packageDir, 'src')).filter((n) => /\.(js|d\.ts)$/.test(n)).map((n) => `src/${n}`);
  assert.deepEqual(files, ['README.md', 'package.json', ...src].sort());
});
