// Shared by the package's tests and web-demo/test (node built-ins only): a real
// `keygate serve` (KEYGATE_BIN, default <repo>/target/debug/keygate) on 127.0.0.1:0
// with its own SQLite file, API keys made with `keygate keys create` on that
// database, and a TOTP code generator.

import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createHmac } from 'node:crypto';

export const packageDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const repoDir = path.resolve(packageDir, '..', '..');
export const KEYGATE_BIN = process.env.KEYGATE_BIN || path.join(repoDir, 'target', 'debug', 'keygate');

/** Resolves as `promise` does, or rejects after `ms`. */
export function within(ms, promise, what) {
  let timer;
  const late = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms); });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/** Polls `check` every 50 ms until it returns truthy, for at most `ms`. */
export async function eventually(ms, check, what) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** `keygate serve` flags that turn the per-address and per-identity rate limits off. */
export const NO_RATE_LIMITS = ['--rate-per-ip', '0', '--rate-per-identity', '0'];

/**
 * Starts `keygate serve` in a fresh temporary directory; resolves with { origin, dir,
 * db, stop() (the server), dispose() (the server and the directory), createKey() },
 * and `gateway` (its origin) when `args` has --gateway-config. `webRoot` is served at
 * /; `args` are more flags.
 */
export async function startKeygate({ webRoot, args = [] } = {}) {
  assert.ok(fs.existsSync(KEYGATE_BIN), `no keygate binary at ${KEYGATE_BIN}: build it (cargo build) or set KEYGATE_BIN`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'keygate-js-'));
  const db = `sqlite://${dir}/kg.db`;
  const env = { ...process.env, RUST_LOG: 'info', NO_COLOR: '1' };
  const child = spawn(KEYGATE_BIN, ['serve', '--listen', '127.0.0.1:0', '--database', db,
    ...(webRoot ? ['--web-root', webRoot] : []), ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const log = fs.createWriteStream(path.join(dir, 'keygate.log'));
  let seen = '';
  const withGateway = args.includes('--gateway-config');
  const [origin, gateway] = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`keygate did not say "listening on" within 30 s:\n${seen.slice(-2000)}`)), 30_000);
    const scan = (chunk) => {
      log.write(chunk);
      if (seen.length < 100_000) seen += chunk.toString();
      // eslint-disable-next-line no-control-regex
      const plain = seen.replace(/\x1b\[[0-9;]*m/g, '');
      // "keygate hub and provider listening on …" (the gateway says so on its own line, first).
      const m = /keygate (?!gateway )[a-z ]*listening on (http:\/\/\S+)/.exec(plain);
      const g = /keygate gateway listening on (http:\/\/\S+)/.exec(plain);
      if (m && (g || !withGateway)) {
        clearTimeout(timer);
        resolve([new URL(m[1]).origin, g ? new URL(g[1]).origin : undefined]);
      }
    };
    child.stdout.on('data', scan);
    child.stderr.on('data', scan);
    child.on('error', (err) => { clearTimeout(timer); reject(err); });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`keygate exited (${code ?? signal}) before listening:\n${seen.slice(-2000)}`));
    });
  });
  const stop = () => (child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((resolve) => {
    const force = setTimeout(() => { child.kill('SIGKILL'); resolve(); }, 5_000);
    child.once('exit', () => { clearTimeout(force); resolve(); });
    child.kill('SIGTERM');
  }));
  const dispose = () => stop().then(() => fs.rmSync(dir, { recursive: true, force: true }));
  /** `keygate keys create --name NAME …` on this server's database: { keyId, secret }. */
  const createKey = (name, extra = []) => {
    const out = execFileSync(KEYGATE_BIN, ['keys', 'create', '--name', name, '--database', db, ...extra], { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    const keyId = /^USER_API_KEY=(\S+)$/m.exec(out)?.[1];
    const secret = /^USER_API_SECRET=(\S+)$/m.exec(out)?.[1];
    assert.ok(keyId && secret, `keys create printed no key:\n${out}`);
    return { keyId, secret };
  };
  return { origin, gateway, dir, db, stop, dispose, createKey };
}

/** RFC 6238 TOTP (SHA-1, 6 digits, 30 s) of a base32 secret at `now` (ms). */
export function totp(base32, now = Date.now()) {
  const bits = [...base32].map((c) => 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567'.indexOf(c).toString(2).padStart(5, '0')).join('');
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(now / 30_000)));
  const mac = createHmac('sha1', key).update(counter).digest();
  const off = mac[mac.length - 1] & 0xf;
  return String((mac.readUInt32BE(off) & 0x7fffffff) % 1_000_000).padStart(6, '0');
}
