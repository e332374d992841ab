// The autoclaim admin console: a client of the admin API and nothing else. Every number on the
// page comes from a /v1 endpoint called with the token the administrator pasted; the server
// decides what the token may do, the page only says what it answered.
//
// Plain DOM code, no framework: a handful of views, each redrawn whole from one API answer.
// Text goes in with textContent only (never innerHTML), so nothing the API returns is run as code.
'use strict';

(() => {
  const STORE = sessionStorage; // the token lives as long as the tab, never on disk
  const REFRESH_MS = 5000;
  const $ = (id) => document.getElementById(id);

  const state = {
    token: STORE.getItem('autoclaim.token'),
    tenant: STORE.getItem('autoclaim.tenant'),
    catalog: null, // [{key, displayName, autoclaimApp, skuPartNumber, plans:[{name,id,grants}]}]
    policies: [],
    editing: null,
    step: 0,
    timer: null,
  };

  // ------------------------------------------------------------------ small helpers

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') node.className = v;
      else if (k === 'text') node.textContent = v;
      else node.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children) node.append(c);
    return node;
  }

  function current(node, value) {
    if (value) node.setAttribute('aria-current', value);
    else node.removeAttribute('aria-current');
  }

  function when(iso) {
    if (!iso) return '';
    const d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
  }

  /** The payload of a JWT, read only to learn its tenant (`tid`); the server checks the token. */
  function tokenTenant(token) {
    const part = token.split('.')[1];
    if (!part) return null;
    try {
      const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
      const json = decodeURIComponent(escape(atob(b64 + '==='.slice((b64.length + 3) % 4))));
      const claims = JSON.parse(json);
      return typeof claims.tid === 'string' ? claims.tid : null;
    } catch (_) {
      return null;
    }
  }

  class ApiError extends Error {
    constructor(status, problem) {
      super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
      this.status = status;
      this.problem = problem || {};
    }
  }

  async function api(method, path, body, accept) {
    const headers = { authorization: `Bearer ${state.token}` };
    if (body !== undefined) headers['content-type'] = method === 'PATCH' ? 'application/merge-patch+json' : 'application/json';
    if (accept) headers.accept = accept;
    let response;
    try {
      response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store' });
    } catch (e) {
      throw new ApiError(0, { detail: `the server could not be reached (${e.message})` });
    }
    if (response.status === 204) return null;
    const type = response.headers.get('content-type') || '';
    if (!response.ok) {
      let problem = null;
      if (type.includes('json')) problem = await response.json().catch(() => null);
      throw new ApiError(response.status, problem);
    }
    if (accept === 'text/csv') return response;
    return response.json();
  }

  const tenantPath = (rest) => `/v1/tenants/${encodeURIComponent(state.tenant)}${rest}`;

  /** A refusal as a sentence a person can act on. */
  function explain(e) {
    if (e.status === 401) return `The token was refused (401 Unauthorized): ${e.message}. Paste a new token.`;
    if (e.status === 403) {
      const tid = state.token && tokenTenant(state.token);
      const whose = tid && tid !== state.tenant ? ` This token is for tenant ${tid}, not ${state.tenant}.` : '';
      return `Access denied (403 Forbidden): ${e.message}.${whose}`;
    }
    if (e.status === 503) return `The service is not ready (503): ${e.message}. Try again in a few seconds.`;
    if (e.status === 0) return `No answer: ${e.message}.`;
    return `Error ${e.status}: ${e.message}`;
  }

  function show(id, text, kind) {
    const box = $(id);
    box.textContent = text || '';
    box.hidden = !text;
    box.className = `message ${kind || 'error'}`;
  }

  /** A 401 or 403 ends the session: back to sign-in with the reason; anything else is shown. */
  function failed(e, where) {
    if (e.status === 401 || e.status === 403) {
      signOut(explain(e));
      return;
    }
    show(where || 'message', explain(e));
  }

  // ------------------------------------------------------------------ sign-in

  function signOut(reason) {
    STORE.removeItem('autoclaim.token');
    STORE.removeItem('autoclaim.tenant');
    state.token = null;
    state.catalog = null;
    stopRefresh();
    $('app').hidden = true;
    $('who').hidden = true;
    $('sign-in').hidden = false;
    $('token').value = '';
    show('message', reason || '');
    (reason ? $('message') : $('token')).focus?.();
  }

  async function signIn(token, tenant) {
    state.token = token;
    state.tenant = tenant || tokenTenant(token) || '';
    try {
      // The catalog needs no tenant: a token that is not a JWT at all is refused here by the
      // server (401), like any other bad token, rather than guessed at by the page.
      state.catalog = (await api('GET', '/v1/catalog')).products;
      if (!state.tenant) throw new ApiError(401, { detail: 'the token names no tenant (tid)' });
      await api('GET', tenantPath('/settings'));
    } catch (e) {
      const reason = explain(e); // before the token is forgotten: a 403 names the token's tenant
      state.token = null;
      signOut(reason);
      return false;
    }
    STORE.setItem('autoclaim.token', token);
    STORE.setItem('autoclaim.tenant', state.tenant);
    show('message', '');
    $('sign-in').hidden = true;
    $('app').hidden = false;
    $('who').hidden = false;
    $('who-tenant').textContent = state.tenant;
    route();
    return true;
  }

  $('sign-in-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const token = $('token').value.trim().replace(/^Bearer\s+/i, '');
    $('token-error').textContent = token ? '' : 'Paste a token first.';
    if (token) signIn(token, $('tenant').value.trim());
  });
  $('sign-out').addEventListener('click', () => signOut('Signed out.'));

  // ------------------------------------------------------------------ routing

  const VIEWS = ['policies', 'add', 'report'];

  function route() {
    if (!state.token) return;
    const view = VIEWS.includes(location.hash.slice(1)) ? location.hash.slice(1) : 'policies';
    for (const v of VIEWS) $(`view-${v}`).hidden = v !== view;
    current($('tab-policies'), view !== 'report' && 'page');
    current($('tab-report'), view === 'report' && 'page');
    if (view === 'policies') loadPolicies();
    if (view === 'add') startAdd();
    if (view === 'report') loadReport();
    scheduleRefresh(view);
  }

  window.addEventListener('hashchange', () => {
    if (VIEWS.includes(location.hash.slice(1))) route();
  });

  function stopRefresh() {
    clearInterval(state.timer);
    state.timer = null;
  }

  /** Live numbers: the list and the report are read again every few seconds while shown. */
  function scheduleRefresh(view) {
    stopRefresh();
    if (view === 'add' || !$('auto-refresh').checked) return;
    state.timer = setInterval(() => {
      if (document.hidden || state.editing) return;
      if (view === 'policies') loadPolicies(true);
      else loadReport(true);
    }, REFRESH_MS);
  }
  $('auto-refresh').addEventListener('change', () => scheduleRefresh(location.hash.slice(1) || 'policies'));
  $('refresh').addEventListener('click', () => loadPolicies());

  // ------------------------------------------------------------------ policies tab

  function statusText(status, until) {
    return status === 'PROPAGATING' ? `PROPAGATING until ${when(until)}` : status;
  }

  function productName(key) {
    const p = (state.catalog || []).find((c) => c.key === key);
    return p ? p.displayName : key;
  }

  function planName(product, id) {
    const p = (state.catalog || []).find((c) => c.key === product);
    const plan = p && p.plans.find((x) => x.id === id);
    return plan ? plan.name : id;
  }

  async function loadPolicies(quiet) {
    try {
      const [settings, list] = await Promise.all([api('GET', tenantPath('/settings')), api('GET', tenantPath('/policies'))]);
      drawSettings(settings);
      drawPolicies(list);
      $('refreshed-at').textContent = `Updated ${new Date().toLocaleTimeString()}`;
      if (!quiet) show('message', '');
    } catch (e) {
      failed(e);
    }
  }

  function drawSettings(view) {
    const s = view.settings;
    const on = !!s.autoclaimEnabled;
    const scope = s.scope === 'MANAGED_ENVIRONMENTS_ONLY' ? 'managed environments only' : 'all environments';
    const summary = $('setting-summary');
    summary.replaceChildren(
      el('span', { class: `status status-${view.status.toLowerCase()}`, id: 'setting-status', text: statusText(view.status, view.propagatingUntil) }),
      ` Autoclaim ${on ? 'on' : 'off'} for ${scope}`,
      view.status === 'PROPAGATING' ? ` (in force now: ${view.inForce.autoclaimEnabled ? 'on' : 'off'})` : '',
      '.'
    );
    if (document.activeElement?.closest('#setting-form') == null) {
      $('setting-enabled').checked = on;
      $('setting-scope').value = s.scope || 'ALL_ENVIRONMENTS';
    }
  }

  $('setting-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    $('setting-error').textContent = '';
    try {
      const view = await api('PUT', tenantPath('/settings'), { autoclaimEnabled: $('setting-enabled').checked, scope: $('setting-scope').value });
      drawSettings(view);
      loadPolicies(true);
    } catch (e) {
      if (e.status === 401 || e.status === 403) return failed(e);
      $('setting-error').textContent = fieldErrors(e).map((f) => `${f.field}: ${f.problem}`).join('; ') || explain(e);
    }
  });

  function drawPolicies(list) {
    state.policies = list.policies;
    const notice = $('feature-notice');
    notice.textContent = list.notice || '';
    notice.hidden = !list.notice;
    const rows = list.policies.map((v) => {
      const p = v.policy;
      const id = p.policyId;
      const backups = (p.backupProducts || []).map(productName).join(', ') || 'None';
      const excluded = (p.excludedApps || []).flatMap((e) => e.planIds.map((pl) => `${planName(e.product, pl)} (${productName(e.product)})`)).join(', ') || 'None';
      const seats = v.products.map((s) => `${s.displayName}: ${s.availableLicenses}`).join('\n');
      let status = p.deleted ? `DELETED — ${statusText(v.status, v.propagatingUntil)}` : statusText(v.status, v.propagatingUntil);
      const state_ = el('div', {}, el('span', { class: `status status-${v.status.toLowerCase()}`, 'data-status': v.status, text: status }));
      if (!v.assigningLicenses && !p.deleted) {
        state_.append(el('span', { class: 'muted small', text: notAssigning(v) }));
      }
      const actions = el('div', { class: 'row-actions' });
      if (!p.deleted) {
        actions.append(
          button('Edit', `Edit ${p.name}`, () => openEdit(v)),
          button(p.enabled ? 'Turn off' : 'Turn on', `${p.enabled ? 'Turn off' : 'Turn on'} ${p.name}`, () => patch(id, { enabled: !p.enabled })),
          button('Delete', `Delete ${p.name}`, () => remove(v), 'danger')
        );
      }
      return el(
        'tr',
        { 'data-policy-id': id },
        el('th', { scope: 'row', 'data-label': 'Name' }, el('div', { text: p.name })),
        cell('Autoclaim app', v.autoclaimApp),
        cell('Product', v.assignedProduct),
        cell('Backups', backups),
        cell('Excluded apps', excluded),
        el('td', { 'data-label': 'Available licences', class: 'seats', 'data-available': String(v.availableLicenses), title: seats },
          el('div', {}, String(v.availableLicenses),
            v.products.length > 1 ? el('span', { class: 'muted small', text: v.products.slice(1).map((s) => `backup ${s.displayName}: ${s.availableLicenses}`).join('; ') }) : '')),
        el('td', { 'data-label': 'Status' }, state_),
        el('td', { 'data-label': 'Actions' }, actions)
      );
    });
    $('policy-rows').replaceChildren(...rows);
    $('policies').hidden = rows.length === 0;
    $('no-policies').hidden = rows.length !== 0;
  }

  /** Why a policy assigns nothing now: its own state, or the tenant's setting (the API's notice). */
  function notAssigning(v) {
    if (v.status === 'OFF') return 'Policy off';
    if (v.status === 'PROPAGATING') return 'Not assigning until then';
    return `Not assigning: ${v.notice || 'autoclaim is off for the tenant'}`;
  }

  /** A cell as label and one value, so that the phone layout (label beside value) holds. */
  function cell(label, text) {
    return el('td', { 'data-label': label }, el('div', { text }));
  }

  function button(text, label, onClick, kind) {
    const b = el('button', { type: 'button', class: kind || '', 'aria-label': label, text });
    b.addEventListener('click', onClick);
    return b;
  }

  async function patch(id, body) {
    try {
      await api('PATCH', tenantPath(`/policies/${encodeURIComponent(id)}`), body);
      await loadPolicies();
      return null;
    } catch (e) {
      if (e.status === 401 || e.status === 403) failed(e);
      else show('message', explain(e));
      return e;
    }
  }

  async function remove(v) {
    if (!confirm(`Delete the policy "${v.policy.name}"? New claims stop once the deletion is in force; licences already claimed stay.`)) return;
    try {
      await api('DELETE', tenantPath(`/policies/${encodeURIComponent(v.policy.policyId)}`));
      show('message', `Policy "${v.policy.name}" deleted.`, 'info');
      await loadPolicies(true);
    } catch (e) {
      failed(e);
    }
  }

  function openEdit(v) {
    state.editing = v.policy.policyId;
    $('edit').hidden = false;
    $('edit-title').textContent = `Edit policy ${v.policy.name}`;
    $('edit-name').value = v.policy.name;
    $('edit-enabled').checked = !!v.policy.enabled;
    $('edit-name-error').textContent = '';
    $('edit-error').textContent = '';
    $('edit-name').focus();
  }

  function closeEdit() {
    state.editing = null;
    $('edit').hidden = true;
  }

  $('edit-cancel').addEventListener('click', closeEdit);
  $('edit-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const id = state.editing;
    try {
      await api('PATCH', tenantPath(`/policies/${encodeURIComponent(id)}`), { name: $('edit-name').value, enabled: $('edit-enabled').checked });
      closeEdit();
      loadPolicies();
    } catch (e) {
      if (e.status === 401 || e.status === 403) return failed(e);
      const errors = fieldErrors(e);
      $('edit-name-error').textContent = errors.filter((f) => f.field === 'name').map((f) => f.problem).join('; ');
      $('edit-error').textContent = errors.filter((f) => f.field !== 'name').map((f) => `${f.field}: ${f.problem}`).join('; ') || (errors.length ? '' : explain(e));
    }
  });

  /** The API's 422 `errors`; a 409 name clash is a problem with the name too. */
  function fieldErrors(e) {
    if (Array.isArray(e.problem.errors)) return e.problem.errors;
    if (e.status === 409 && /name-taken$/.test(e.problem.type || '')) return [{ field: 'name', problem: e.problem.detail }];
    return [];
  }

  // ------------------------------------------------------------------ add a policy

  const STEPS = 4;

  function startAdd() {
    state.step = 0;
    $('add-form').reset();
    $('add-enabled').checked = true;
    const products = state.catalog || [];
    $('add-product').replaceChildren(...products.map((p) => el('option', { value: p.key, text: `${p.autoclaimApp} — ${p.displayName}` })));
    drawBackups();
    clearErrors();
    show('add-message', '');
    drawStep();
  }

  /** Up to four backups, in order, each another product of the catalog. */
  function drawBackups() {
    const products = state.catalog || [];
    const count = Math.min(4, Math.max(0, products.length - 1));
    const box = $('add-backups');
    const kept = [...box.querySelectorAll('select')].map((s) => s.value);
    box.replaceChildren();
    for (let i = 0; i < count; i++) {
      const id = `add-backup-${i + 1}`;
      const select = el('select', { id, 'aria-describedby': 'add-backups-error' }, el('option', { value: '', text: 'No backup' }), ...products.map((p) => el('option', { value: p.key, text: p.displayName })));
      select.value = kept[i] || '';
      select.addEventListener('change', drawApps);
      box.append(el('div', { class: 'backup' }, el('label', { for: id, text: `Backup ${i + 1}` }), select));
    }
  }

  function chain() {
    const primary = $('add-product').value;
    const backups = [...$('add-backups').querySelectorAll('select')].map((s) => s.value).filter((v) => v);
    return { primary, backups, all: [primary, ...backups.filter((b, i) => b !== primary && backups.indexOf(b) === i)] };
  }

  $('add-product').addEventListener('change', drawApps);

  /** The apps (service plans) of each product of the chain; a plan that grants what the product is
   *  for cannot be cleared (the API refuses it, so the page does not offer it). */
  function drawApps() {
    const box = $('add-apps');
    const kept = new Map([...box.querySelectorAll('input[type=checkbox]')].map((c) => [c.id, c.checked]));
    box.replaceChildren();
    for (const key of chain().all) {
      const product = (state.catalog || []).find((p) => p.key === key);
      if (!product) continue;
      const set = el('fieldset', { class: 'apps' }, el('legend', { text: product.displayName }));
      for (const plan of product.plans) {
        const id = `app-${key}-${plan.id}`;
        const needed = plan.grants.length > 0;
        const input = el('input', { type: 'checkbox', id, 'data-product': key, 'data-plan': plan.id, disabled: needed });
        input.checked = needed || (kept.has(id) ? kept.get(id) : true);
        set.append(el('div', { class: 'check' }, input, el('label', { for: id, text: needed ? `${plan.name} (required: grants ${plan.grants.join(', ')})` : plan.name })));
      }
      box.append(set);
    }
  }

  function excludedApps() {
    const byProduct = new Map();
    for (const c of $('add-apps').querySelectorAll('input[type=checkbox]')) {
      if (c.checked) continue;
      const list = byProduct.get(c.dataset.product) || [];
      list.push(c.dataset.plan);
      byProduct.set(c.dataset.product, list);
    }
    return [...byProduct].map(([product, planIds]) => ({ product, planIds }));
  }

  function request() {
    const c = chain();
    return { name: $('add-name').value, product: c.primary, backupProducts: c.backups, excludedApps: excludedApps(), enabled: $('add-enabled').checked };
  }

  function drawStep() {
    for (const set of $('add-form').querySelectorAll(':scope > fieldset')) set.hidden = Number(set.dataset.step) !== state.step;
    for (const li of $('steps').children) {
      const n = Number(li.dataset.step);
      current(li, n === state.step && 'step');
      li.classList.toggle('done', n < state.step);
    }
    if (state.step === 2) drawApps();
    if (state.step === 3) drawReview();
    $('add-back').disabled = state.step === 0;
    $('add-next').hidden = state.step === STEPS - 1;
    $('add-create').hidden = state.step !== STEPS - 1;
    const first = $('add-form').querySelector(`fieldset[data-step="${state.step}"] :is(input:not([disabled]), select)`);
    first?.focus();
  }

  function drawReview() {
    const r = request();
    const rows = [
      ['Name', r.name.trim() || '(none)'],
      ['Autoclaim app', ((state.catalog || []).find((p) => p.key === r.product) || {}).autoclaimApp || r.product],
      ['Product', productName(r.product)],
      ['Backups, in order', r.backupProducts.map(productName).join(', ') || 'None'],
      ['Excluded apps', r.excludedApps.flatMap((e) => e.planIds.map((p) => `${planName(e.product, p)} (${productName(e.product)})`)).join(', ') || 'None'],
    ];
    $('review').replaceChildren(...rows.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { text: v })]));
  }

  $('add-next').addEventListener('click', () => {
    show('add-message', '');
    state.step = Math.min(STEPS - 1, state.step + 1);
    drawStep();
  });
  $('add-back').addEventListener('click', () => {
    state.step = Math.max(0, state.step - 1);
    drawStep();
  });
  $('add-name').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter') {
      ev.preventDefault();
      $('add-next').click();
    }
  });

  function clearErrors() {
    for (const p of $('add-form').querySelectorAll('.field-error')) p.textContent = '';
  }

  /** Each error goes next to the field it names; the wizard goes back to the first step with one. */
  function placeErrors(errors) {
    const slots = [
      ['name', 'add-name-error', 0],
      ['backupProducts', 'add-backups-error', 1],
      ['product', 'add-product-error', 1],
      ['excludedApps', 'add-apps-error', 2],
    ];
    let first = STEPS - 1;
    for (const f of errors) {
      const slot = slots.find(([prefix]) => f.field === prefix || f.field.startsWith(`${prefix}.`));
      const [, id, step] = slot || [null, 'add-error', STEPS - 1];
      const p = $(id);
      p.textContent = p.textContent ? `${p.textContent}; ${f.problem}` : f.problem;
      first = Math.min(first, step);
    }
    return first;
  }

  $('add-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (state.step !== STEPS - 1) return;
    clearErrors();
    show('add-message', '');
    try {
      const created = await api('POST', tenantPath('/policies'), request());
      show('message', `Policy "${created.policy.name}" created: ${statusText(created.status, created.propagatingUntil)}.${created.notice ? ' ' + created.notice : ''}`, 'info');
      location.hash = '#policies';
    } catch (e) {
      if (e.status === 401 || e.status === 403) return failed(e);
      const errors = fieldErrors(e);
      if (!errors.length) return show('add-message', explain(e));
      show('add-message', 'The policy was not created: fix the fields marked below.');
      state.step = placeErrors(errors);
      drawStep();
    }
  });

  // ------------------------------------------------------------------ report

  const TRIGGERS = {
    CLOUD_FLOW_TRIGGERED: 'Cloud flow triggered',
    CLOUD_FLOW_SAVED: 'Cloud flow saved',
    CLOUD_FLOW_TURNED_ON: 'Cloud flow turned on',
    LICENSE_REQUESTED: 'Licence requested',
    GO_PREMIUM_SELECTED: 'Go Premium selected',
    PREMIUM_TRIAL_RPA_USED: 'Premium trial RPA used',
  };

  async function loadReport(quiet) {
    const days = $('report-days').value;
    try {
      const report = await api('GET', tenantPath(`/report?days=${days}`));
      drawReport(report);
      if (!quiet) show('message', '');
    } catch (e) {
      failed(e);
    }
  }

  function drawReport(r) {
    $('report-summary').replaceChildren(
      el('strong', { id: 'report-total', 'data-total': String(r.total), text: `${r.total} licence${r.total === 1 ? '' : 's'}` }),
      ` assigned by autoclaim policies in the past ${r.days} day${r.days === 1 ? '' : 's'} (${when(r.from)} to ${when(r.to)}).`
    );
    const sections = r.policies.map((p) => {
      const table = el('table', { class: 'report' },
        el('caption', { text: `Licences assigned by ${p.policyName}` }),
        el('thead', {}, el('tr', {}, ...['User', 'Product', 'Assigned at', 'Trigger'].map((h) => el('th', { scope: 'col', text: h })))),
        el('tbody', {}, ...p.rows.map((row) => el('tr', {},
          cell('User', row.userId),
          cell('Product', row.productName || row.product),
          cell('Assigned at', when(row.assignedAt)),
          cell('Trigger', TRIGGERS[row.trigger] || row.trigger)))));
      return el('section', { class: 'panel report-policy', 'data-policy-id': p.policyId, 'data-count': String(p.count) },
        el('h2', { text: `${p.policyName}: ${p.count}` }),
        p.rows.length ? table : el('p', { class: 'muted', text: 'No licences assigned in this period.' }));
    });
    $('report-policies').replaceChildren(...sections);
  }

  $('report-days').addEventListener('change', () => loadReport());

  /** The CSV comes from the API (format=csv) with the token; the page only hands it to the browser. */
  $('report-csv').addEventListener('click', async () => {
    const days = $('report-days').value;
    try {
      const response = await api('GET', tenantPath(`/report?days=${days}&format=csv`), undefined, 'text/csv');
      const blob = await response.blob();
      const url = URL.createObjectURL(blob);
      const a = el('a', { href: url, download: `autoclaim-report-${state.tenant}-${days}d.csv` });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (e) {
      failed(e);
    }
  });

  // ------------------------------------------------------------------ start

  if (state.token) {
    signIn(state.token, state.tenant);
  } else {
    signOut('');
  }
})();
