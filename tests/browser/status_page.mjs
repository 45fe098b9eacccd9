// The admin status page in a real browser (headless Chromium driven by playwright-core).
//
// Usage: node tests/browser/status_page.mjs <path to the portcullis binary>
// Env:   PORTCULLIS_STATUS_SCREENSHOT=<png path>  also save a screenshot (docs/status-page.png)
//        CHROMIUM=<path>                           the browser (default /usr/bin/chromium)
//
// Starts the binary in standalone mode on a temporary manifest directory with two real HTTP
// backends, opens http://<admin>/ and checks, waiting on the DOM with deadlines (no fixed
// sleeps): no console errors and no Content-Security-Policy violations; both hosts listed with
// their endpoints up; the filter box hides what does not match; once one backend stops, its
// endpoint turns down within a few seconds while the other stays up. Exits non-zero on failure.

import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const binary = process.argv[2];
if (!binary) {
  console.error('usage: node status_page.mjs <portcullis binary>');
  process.exit(2);
}
const SHOP = 'shop.example.test';
const API = 'api.example.test';
const SECURE = 'secure.example.test';
const DEADLINE_MS = 15000;

/// A tiny backend answering 200 to anything (the health probes are HEAD /).
function backend(name) {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'x-backend': name });
    res.end(req.method === 'HEAD' ? undefined : `hello from ${name}\n`);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

function service(name, port) {
  return `apiVersion: v1
kind: Service
metadata: {name: ${name}, namespace: default}
spec:
  ports: [{name: web, port: 80, targetPort: web}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ${name}-0
  namespace: default
  labels: {kubernetes.io/service-name: ${name}}
addressType: IPv4
ports: [{name: web, port: ${port}, protocol: TCP}]
endpoints:
- addresses: ["127.0.0.1"]
  conditions: {ready: true}
`;
}

/// A kubernetes.io/tls Secret with a fresh self-signed certificate for `host` (openssl CLI).
function tlsSecret(dir, name, host) {
  const key = path.join(dir, `${name}.key.pem`);
  const crt = path.join(dir, `${name}.crt.pem`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256',
    '-nodes', '-keyout', key, '-out', crt, '-days', '90', '-subj', `/CN=${host}`,
    '-addext', `subjectAltName=DNS:${host}`], { stdio: 'ignore' });
  const indent = (file) => fs.readFileSync(file, 'utf8').trim().split('\n').map((l) => `    ${l}`).join('\n');
  const yaml = `apiVersion: v1
kind: Secret
metadata: {name: ${name}, namespace: default}
type: kubernetes.io/tls
stringData:
  tls.crt: |
${indent(crt)}
  tls.key: |
${indent(key)}
`;
  fs.rmSync(key);
  fs.rmSync(crt);
  return yaml;
}

function ingress(name, host, svc, secret) {
  return `apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: ${name}
  namespace: default
  annotations:
    portcullis.io/health-check-interval: "200ms"
spec:
  ingressClassName: portcullis
${secret ? `  tls: [{hosts: [${host}], secretName: ${secret}}]\n` : ''}  rules:
  - host: ${host}
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: ${svc}, port: {number: 80}}}}
`;
}

const CLASS = `apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: portcullis}
spec: {controller: portcullis.io/ingress-controller}
`;

/// Starts the binary; resolves with its addresses once it logs `listening`.
function start(dir) {
  const child = spawn(binary, [
    'standalone', '--manifests', dir,
    '--http-addr', '127.0.0.1:0', '--https-addr', '127.0.0.1:0', '--admin-addr', '127.0.0.1:0',
    '--shutdown-grace', '1s', '--log-level', 'info',
  ], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, RUST_LOG: '' } });
  const log = [];
  const addresses = new Promise((resolve, reject) => {
    let buffered = '';
    child.stderr.on('data', (chunk) => {
      buffered += chunk.toString();
      let nl;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        log.push(line);
        const m = line.match(/listening http=(\S+) https=(\S+) admin=(\S+)/);
        if (m) resolve({ http: m[1], https: m[2], admin: m[3] });
      }
    });
    child.on('exit', (code) => reject(new Error(`the binary exited (${code}) before listening:\n${log.join('\n')}`)));
    setTimeout(() => reject(new Error(`no listening line within ${DEADLINE_MS} ms:\n${log.join('\n')}`)), DEADLINE_MS).unref();
  });
  return { child, log, addresses };
}

/// Polls `condition` until it is true or the deadline passes.
async function waitUntil(what, condition, timeoutMs = DEADLINE_MS) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await condition().catch(() => false)) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/// GET / through the proxy with `Host: host`; resolves with the status.
function request(proxy, host, urlPath) {
  const [hostname, port] = [proxy.slice(0, proxy.lastIndexOf(':')), proxy.slice(proxy.lastIndexOf(':') + 1)];
  return new Promise((resolve, reject) => {
    const req = http.request({ hostname, port, path: urlPath, headers: { host }, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', reject);
    req.end();
  });
}

async function main() {
  const shop = await backend('shop');
  const api = await backend('api');
  const shopEndpoint = `127.0.0.1:${shop.address().port}`;
  const apiEndpoint = `127.0.0.1:${api.address().port}`;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'portcullis-status-'));
  fs.writeFileSync(path.join(dir, 'class.yaml'), CLASS);
  fs.writeFileSync(path.join(dir, 'shop.yaml'), service('shop', shop.address().port) + '---\n' + ingress('shop', SHOP, 'shop'));
  fs.writeFileSync(path.join(dir, 'api.yaml'), service('api', api.address().port) + '---\n' + ingress('api', API, 'api'));
  const secrets = fs.mkdtempSync(path.join(os.tmpdir(), 'portcullis-status-keys-'));
  const secret = tlsSecret(secrets, 'secure-tls', SECURE);
  fs.rmSync(secrets, { recursive: true, force: true });
  fs.writeFileSync(path.join(dir, 'secure.yaml'), secret + '---\n' + ingress('secure', SECURE, 'api', 'secure-tls'));

  const proxy = start(dir);
  let browser;
  try {
    const addrs = await proxy.addresses;
    const admin = `http://${addrs.admin}`;
    await waitUntil('/readyz', async () => (await fetch(`${admin}/readyz`)).status === 200);
    // Some traffic, so the counters show something.
    for (let i = 0; i < 5; i++) {
      if ((await request(addrs.http, SHOP, `/item/${i}`)) !== 200) throw new Error('proxying to shop failed');
    }
    await request(addrs.http, API, '/v1/things');

    browser = await chromium.launch({
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', '--no-first-run'],
    });
    const page = await browser.newPage({ viewport: { width: 1200, height: 720 } });
    const problems = [];
    page.on('console', (msg) => { if (msg.type() === 'error') problems.push(`console ${msg.type()}: ${msg.text()}`); });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
    // Runs before the page's own script and outside its CSP: records every violation.
    await page.addInitScript(() => {
      window.__cspViolations = [];
      document.addEventListener('securitypolicyviolation', (e) => {
        window.__cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI}`);
      });
    });

    const response = await page.goto(`${admin}/`);
    const csp = response.headers()['content-security-policy'] || '';
    if (!csp.includes("default-src 'none'") || !csp.includes("script-src 'self'")) {
      throw new Error(`page served without the strict CSP: ${csp}`);
    }

    const endpointIn = (host, endpoint, state) =>
      `[data-host="${host}"] [data-endpoint="${endpoint}"][data-state="${state}"]`;
    await page.waitForSelector(`[data-host="${SHOP}"]`, { timeout: DEADLINE_MS });
    await page.waitForSelector(`[data-host="${API}"]`, { timeout: DEADLINE_MS });
    await page.waitForSelector(endpointIn(SHOP, shopEndpoint, 'up'), { timeout: DEADLINE_MS });
    await page.waitForSelector(endpointIn(API, apiEndpoint, 'up'), { timeout: DEADLINE_MS });
    // The TLS host shows its certificate with the days left.
    await page.waitForSelector(`[data-host="${SECURE}"] .cert`, { timeout: DEADLINE_MS });
    const cert = await page.textContent(`[data-host="${SECURE}"] .cert`);
    if (!cert.includes(`CN=${SECURE}`) || !/\b(89|90) days left/.test(cert) || !cert.includes('Secret default/secure-tls')) {
      throw new Error(`certificate shown as: ${cert}`);
    }
    // Per-endpoint counters: the shop's one endpoint answered the five requests above.
    const shopCounters = await page.textContent(`[data-host="${SHOP}"] [data-endpoint-counters="${shopEndpoint}"]`);
    if (!shopCounters.includes('2xx 5') || !shopCounters.includes('errors 0')) {
      throw new Error(`shop endpoint counters shown as: ${shopCounters}`);
    }
    const readyText = await page.textContent('#ready');
    if (readyText !== 'ready') throw new Error(`ready badge reads ${readyText}`);

    // The filter hides hosts that do not match, and shows them again when cleared.
    await page.fill('#filter', 'api.example');
    await page.waitForSelector(`[data-host="${SHOP}"]`, { state: 'detached', timeout: DEADLINE_MS });
    await page.waitForSelector(`[data-host="${API}"]`, { timeout: DEADLINE_MS });
    await page.fill('#filter', '');
    await page.waitForSelector(`[data-host="${SHOP}"]`, { timeout: DEADLINE_MS });

    // The shop backend stops: its endpoint turns down within a few seconds (fall 3 x 200 ms,
    // plus one poll); the api endpoint stays up.
    const stoppedAt = Date.now();
    shop.closeAllConnections();
    await new Promise((r) => shop.close(r));
    await page.waitForSelector(endpointIn(SHOP, shopEndpoint, 'down'), { timeout: 8000 });
    const tookMs = Date.now() - stoppedAt;
    await page.waitForSelector(endpointIn(API, apiEndpoint, 'up'), { timeout: 1000 });

    if (process.env.PORTCULLIS_STATUS_SCREENSHOT) {
      await page.screenshot({ path: process.env.PORTCULLIS_STATUS_SCREENSHOT, fullPage: true });
    }

    const violations = await page.evaluate(() => window.__cspViolations);
    problems.push(...violations.map((v) => `CSP violation: ${v}`));
    if (problems.length) throw new Error(`the page reported problems:\n${problems.join('\n')}`);
    console.log(`status page ok: hosts listed, endpoint shown down ${tookMs} ms after its backend stopped`);
  } catch (e) {
    console.error(e.stack || String(e));
    console.error(`--- portcullis log ---\n${proxy.log.join('\n')}`);
    process.exitCode = 1;
  } finally {
    if (browser) await browser.close();
    proxy.child.kill('SIGTERM');
    api.closeAllConnections();
    api.close();
    if (shop.listening) { shop.closeAllConnections(); shop.close(); }
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

await main();
