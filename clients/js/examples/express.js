import express from 'express';
import { HubClient, TokenVerifier, bearerToken } from 'keygate-client/node';

const { HUB_URL = 'http://127.0.0.1:8080', USER_API_KEY = '', USER_API_SECRET = '' } = process.env;
const hub = new HubClient({ url: HUB_URL, keyId: USER_API_KEY, secret: USER_API_SECRET });
const verifier = new TokenVerifier({ hubUrl: HUB_URL, audience: USER_API_KEY });
await verifier.followRevocations(); // revoked sessions are refused within a second
const app = express().use(express.json());
app.post('/login/challenge', async (req, res) => { res.json(await hub.challenge(req.body.identity, { audience: 'https://app.example' })); });
app.post('/login/token', async (req, res) => { res.json(await hub.token({ ...req.body, clientId: 'web', offline: true })); });
app.get('/hello', async (req, res) => {
  const claims = await verifier.verify(bearerToken(req.get('authorization')) ?? '').catch(() => null);
  res.status(claims ? 200 : 401).json(claims ? { message: `Hello, ${claims.sub}!` } : { error: 'invalid_token' });
});
app.listen(3000);
