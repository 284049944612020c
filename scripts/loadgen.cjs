#!/usr/bin/env node
// An independent load generator for the WebSocket sign-in (BENCHMARKS.md): Node.js
// with the `ws` package and node:crypto, none of keygate's code. It drives one or
// more servers in turn with the same load and prints, for each, sign-ins per
// second, latency and the server's CPU per sign-in (from /proc/<pid>/stat).
//
//   NODE_PATH=<a node_modules holding ws> node scripts/loadgen.cjs \
//     --clients 64 --seconds 10 keygate=ws://127.0.0.1:8080/ws/userauth=<pid> \
//     koa=ws://127.0.0.1:8090/ws/userauth=<pid>
//
// Each client has its own Ed25519 key, opens a socket per sign-in (token frame,
// challenge, signed challenge, token), closes it, and goes again. Loopback only.
'use strict';
const crypto = require('node:crypto');
const fs = require('node:fs');
const WebSocket = require('ws');

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i < 0 ? dflt : Number(args.splice(i, 2)[1]);
};
const CLIENTS = opt('clients', 64);
const SECONDS = opt('seconds', 10);
const WARMUP = opt('warmup', 2);
const targets = args.map((a) => {
  const [name, url, pid] = a.split('=');
  const u = new URL(url);
  if (!['127.0.0.1', 'localhost', '[::1]'].includes(u.hostname)) {
    throw new Error(`loopback only: ${url}`);
  }
  return { name, url, pid: Number(pid), origin: `http://${u.host}` };
});

// The identity: multibase base32 (lowercase, no padding, prefix "b") of the
// libp2p protobuf public key (08 01 12 20 ‖ key).
const B32 = 'abcdefghijklmnopqrstuvwxyz234567';
function base32(bytes) {
  let out = '', bits = 0, value = 0;
  for (const b of bytes) {
    value = (value << 8) | b; bits += 8;
    while (bits >= 5) { out += B32[(value >>> (bits - 5)) & 31]; bits -= 5; }
  }
  if (bits > 0) out += B32[(value << (5 - bits)) & 31];
  return out;
}
function newUser() {
  const { publicKey, privateKey } = crypto.generateKeyPairSync('ed25519');
  const raw = publicKey.export({ format: 'der', type: 'spki' }).subarray(-32);
  const id = 'b' + base32(Buffer.concat([Buffer.from([8, 1, 0x12, 0x20]), raw]));
  return { privateKey, frame: JSON.stringify({ type: 'token', pubkey: id }) };
}

function cpuSeconds(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // utime + stime, in clock ticks
}

function signIn(t, user) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(t.url, { origin: t.origin, perMessageDeflate: false });
    const timer = setTimeout(() => { ws.terminate(); reject(new Error('timeout')); }, 10000);
    const fail = (e) => { clearTimeout(timer); ws.terminate(); reject(e); };
    ws.on('error', fail);
    ws.on('open', () => ws.send(user.frame));
    ws.on('message', (data) => {
      const m = JSON.parse(data);
      if (m.type === 'challenge') {
        const sig = crypto.sign(null, Buffer.from(m.value), user.privateKey).toString('base64url');
        ws.send(JSON.stringify({ type: 'challenge', sig }));
      } else if (m.type === 'token' && m.value) {
        clearTimeout(timer);
        ws.close(1000);
        resolve();
      } else {
        fail(new Error(m.code || 'unexpected frame'));
      }
    });
  });
}

async function run(t) {
  const users = Array.from({ length: CLIENTS }, newUser);
  let phase = 'warmup', ok = 0, errors = 0;
  const latencies = [];
  const loops = users.map(async (user) => {
    while (phase !== 'done') {
      const start = process.hrtime.bigint();
      try {
        await signIn(t, user);
        if (phase === 'measure') {
          ok++;
          latencies.push(Number(process.hrtime.bigint() - start) / 1e6);
        }
      } catch {
        if (phase === 'measure') errors++;
        await new Promise((r) => setTimeout(r, 2));
      }
    }
  });
  await new Promise((r) => setTimeout(r, WARMUP * 1000));
  const cpu0 = cpuSeconds(t.pid), own0 = process.cpuUsage(), t0 = Date.now();
  phase = 'measure';
  await new Promise((r) => setTimeout(r, SECONDS * 1000));
  phase = 'done';
  const secs = (Date.now() - t0) / 1000, cpu = cpuSeconds(t.pid) - cpu0;
  const own = process.cpuUsage(own0);
  await Promise.all(loops);
  latencies.sort((a, b) => a - b);
  const q = (p) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] || 0;
  return {
    target: t.name, clients: CLIENTS, seconds: secs, ok, errors,
    sign_ins_per_s: Math.round(ok / secs),
    server_cpu_us: Math.round((cpu / ok) * 1e6),
    loadgen_cpu_us: Math.round(((own.user + own.system) / ok)),
    p50_ms: +q(0.5).toFixed(2), p99_ms: +q(0.99).toFixed(2),
  };
}

(async () => {
  const results = [];
  for (const t of targets) {
    const r = await run(t);
    results.push(r);
    console.log(JSON.stringify(r));
  }
  if (results.length >= 2) {
    const [a, b] = results;
    console.log(`${a.target} / ${b.target}: ${(a.sign_ins_per_s / b.sign_ins_per_s).toFixed(2)}× the sign-ins/s; ` +
      `${b.target} spends ${(b.server_cpu_us / a.server_cpu_us).toFixed(2)}× ${a.target}'s server CPU per sign-in`);
  }
})().catch((e) => { console.error(e.message); process.exit(1); });
