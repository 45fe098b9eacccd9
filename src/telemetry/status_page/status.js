// The status page's script: polls /api/v1/status and renders it with DOM calls only (values
// are always written as text, never parsed as markup). Served under a CSP that allows this
// file and same-origin fetches, nothing else.
'use strict';

(function () {
  const API = '/api/v1/status';
  const INTERVAL_MS = 1000;
  let last = null;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'class') node.className = value;
      else if (key.startsWith('data-')) node.setAttribute(key, String(value));
      else if (key === 'title') node.title = String(value);
      else node.setAttribute(key, String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function byId(id) { return document.getElementById(id); }

  function ago(unixMs, now) {
    const s = Math.max(0, Math.round((now - unixMs) / 1000));
    if (s < 60) return s + 's ago';
    if (s < 3600) return Math.floor(s / 60) + 'm ago';
    return Math.floor(s / 3600) + 'h ago';
  }

  function bytes(n) {
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (i === 0 ? n : n.toFixed(1)) + ' ' + units[i];
  }

  function certificate(cert, mode) {
    if (mode === 'passthrough') return el('span', { class: 'cert' }, 'TLS passed through');
    if (!cert) return el('span', { class: 'cert' }, 'default certificate');
    const days = cert.days_to_expiry;
    const cls = days === null || days === undefined ? 'cert' : days < 0 ? 'cert bad' : days < 14 ? 'cert warn' : 'cert';
    const expiry = days === null || days === undefined ? cert.not_after : days + ' days left';
    return el('span', {
      class: cls,
      title: 'SANs: ' + cert.dns_names.join(', ') + '\nissuer: ' + (cert.issuer || '?') + '\nnot after: ' + cert.not_after,
    }, cert.subject + ' · ' + expiry + ' · ' + cert.source);
  }

  function endpoint(ep, now) {
    let title = ep.address + ': ' + ep.state + (ep.probed ? '' : ' (not actively checked)') + ', ' + ep.in_flight + ' in flight';
    const p = ep.last_probe;
    if (p) {
      title += '\nlast probe ' + ago(p.at_unix_ms, now) + ', ' + p.latency_ms.toFixed(1) + ' ms, ' + (p.ok ? 'ok' : 'failed: ' + (p.error || '?'));
    }
    const latency = p && p.ok ? ' ' + p.latency_ms.toFixed(1) + 'ms' : '';
    return el('span', { class: 'ep-cell' },
      el('span', { class: 'ep', 'data-endpoint': ep.address, 'data-state': ep.state, title },
        ep.address + ' ' + ep.state + latency),
      endpointCounters(ep));
  }

  // Responses by class (the non-zero ones), errors, bytes to / from the endpoint, active.
  // Fields added to v1 later may be missing from an older proxy: shown as nothing.
  function endpointCounters(ep) {
    if (!ep.requests) return null;
    const parts = Object.entries(ep.requests).filter(([, v]) => v > 0).map(([k, v]) => k + ' ' + v);
    if (parts.length === 0) parts.push('no requests');
    parts.push('errors ' + (ep.errors || 0));
    parts.push('↑ ' + bytes(ep.bytes_to_endpoint || 0) + ' ↓ ' + bytes(ep.bytes_from_endpoint || 0));
    parts.push('active ' + (ep.active || 0));
    return el('span', {
      class: 'ep-counters' + (ep.errors ? ' bad' : ''),
      'data-endpoint-counters': ep.address,
      title: 'responses by class · errors (connect, TLS, timeout, reset) · bytes sent to ↑ and received from ↓ the endpoint · requests and connections open now',
    }, parts.join(' · '));
  }

  function endpoints(upstream, now) {
    if (!upstream) return el('span', { class: 'none' }, '—');
    if (upstream.endpoints.length === 0) return el('span', { class: 'none' }, 'no endpoints');
    return upstream.endpoints.map((ep) => endpoint(ep, now));
  }

  function counters(c) {
    const parts = [];
    const classes = Object.entries(c.requests || {});
    if (classes.length) parts.push('requests ' + classes.map(([k, v]) => k + ': ' + v).join(', '));
    parts.push('errors ' + (c.errors || 0));
    if (c.tcp_connections) parts.push('tcp connections ' + c.tcp_connections);
    if (c.bytes_from_client || c.bytes_to_client) {
      parts.push('in ' + bytes(c.bytes_from_client || 0) + ' / out ' + bytes(c.bytes_to_client || 0));
    }
    if (c.active_connections !== undefined) parts.push('connections open ' + c.active_connections);
    const handshakes = Object.entries(c.tls_handshakes || {});
    if (handshakes.length) parts.push('TLS handshakes ' + handshakes.map(([k, v]) => k + ' ' + v).join(', '));
    return el('div', { class: 'counters' }, parts.join(' · '));
  }

  function upstreams(host) {
    const all = host.routes.flatMap((r) => [r.upstream, r.canary]);
    all.push(host.default_backend, host.passthrough);
    return all.filter(Boolean);
  }

  function hasProblem(host) {
    return upstreams(host).some((u) => u.endpoints.length === 0 || u.endpoints.some((e) => e.state !== 'up'));
  }

  function routeRow(path, ingress, upstream, now) {
    return el('tr', {},
      el('td', {}, path),
      el('td', {}, ingress || ''),
      el('td', {}, upstream ? upstream.service : ''),
      el('td', {}, endpoints(upstream, now)));
  }

  function hostSection(host, now) {
    const rows = [];
    for (const r of host.routes) {
      rows.push(routeRow(r.path + ' (' + r.path_type + ')', r.ingress, r.upstream, now));
      if (r.canary) rows.push(routeRow(r.path + ' canary', r.ingress, r.canary, now));
    }
    if (host.default_backend) rows.push(routeRow('default backend', host.owner, host.default_backend, now));
    if (host.passthrough) rows.push(routeRow('pass-through', host.owner, host.passthrough, now));
    return el('div', { class: 'host', 'data-host': host.host },
      el('div', { class: 'host-head' },
        el('span', { class: 'host-name' }, host.host),
        el('span', { class: 'badge' }, host.tls_mode),
        certificate(host.certificate, host.tls_mode),
        host.ssl_redirect ? el('span', { class: 'meta' }, 'redirects to HTTPS') : null),
      counters(host.counters),
      el('table', {},
        el('thead', {}, el('tr', {}, el('th', {}, 'path'), el('th', {}, 'ingress'), el('th', {}, 'service'), el('th', {}, 'endpoints'))),
        el('tbody', {}, rows)));
  }

  function matches(text, query) {
    return !query || text.toLowerCase().includes(query);
  }

  function render(doc) {
    const now = Date.now();
    const query = byId('filter').value.trim().toLowerCase();
    const problemsOnly = byId('problems').checked;

    const ready = byId('ready');
    ready.textContent = doc.ready ? 'ready' : 'not ready';
    ready.className = 'badge ' + (doc.ready ? 'ok' : 'bad');
    byId('rebuild').textContent = doc.rebuild
      ? 'generation ' + doc.rebuild.generation + ', built ' + ago(doc.rebuild.at_unix_ms, now) + ' in ' + doc.rebuild.build_ms.toFixed(1) + ' ms'
      : 'no table yet';
    byId('updated').textContent = 'updated ' + new Date(doc.generated_at_unix_ms).toLocaleTimeString();

    const sections = [];
    for (const host of doc.hosts) {
      if (problemsOnly && !hasProblem(host)) continue;
      const section = hostSection(host, now);
      if (query && !matches(host.host, query)) {
        // Keep only the rows that match; drop the host when none does.
        const rows = Array.from(section.querySelectorAll('tbody tr'));
        for (const row of rows) if (!matches(row.textContent, query)) row.remove();
        if (section.querySelectorAll('tbody tr').length === 0 && !matches(section.textContent, query)) continue;
      }
      sections.push(section);
    }
    byId('hosts').replaceChildren(...(sections.length ? sections : [el('p', { class: 'none' }, doc.hosts.length ? 'no host matches the filter' : 'no hosts')]));
    byId('host-count').textContent = sections.length + ' of ' + doc.hosts.length;

    const diagnostics = doc.diagnostics.filter((d) =>
      matches([d.severity, d.reason, d.object, d.field, d.message].join(' '), query));
    byId('diagnostics').tBodies[0].replaceChildren(...diagnostics.map((d) => el('tr', {},
      el('td', { class: 'sev-' + d.severity }, d.severity),
      el('td', {}, d.reason), el('td', {}, d.object), el('td', {}, d.field), el('td', {}, d.message))));
    byId('diagnostic-count').textContent = diagnostics.length + ' of ' + doc.diagnostics.length;

    const p = doc.process;
    const items = [
      ['TLS handshakes', Object.entries(p.tls_handshakes).map(([k, v]) => k + ' ' + v).join(', ') || '0'],
      ['ClientHellos rejected', Object.entries(p.client_hello_rejected).map(([k, v]) => k + ' ' + v).join(', ') || '0'],
      ['open connections', Object.entries(p.active_connections || {}).map(([k, v]) => k + ' ' + v).join(', ') || '0'],
      ['connections limited', p.connections_limited],
    ];
    if (doc.default_certificate) items.push(['default certificate', certificate(doc.default_certificate, 'terminate')]);
    byId('process').replaceChildren(...items.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
  }

  async function poll() {
    try {
      const response = await fetch(API, { cache: 'no-store' });
      if (!response.ok) throw new Error(API + ' answered ' + response.status);
      last = await response.json();
      byId('error').hidden = true;
      render(last);
    } catch (e) {
      const error = byId('error');
      error.textContent = 'Cannot reach the admin endpoint: ' + e.message + ' (retrying)';
      error.hidden = false;
      const ready = byId('ready');
      ready.textContent = 'unreachable';
      ready.className = 'badge bad';
    } finally {
      setTimeout(poll, INTERVAL_MS);
    }
  }

  function rerender() { if (last) render(last); }

  document.addEventListener('DOMContentLoaded', () => {
    byId('filter').addEventListener('input', rerender);
    byId('problems').addEventListener('change', rerender);
    poll();
  });
})();
