// The admin console in a real browser: Debian's Chromium driven by playwright-core.
// Run by tests/console.rs against a running `autoclaim run`:
//   node console.test.mjs <url> <token> <other-tenant-token> <tenant> <screenshot dir>
// The Rust side publishes the directory and inventory before, and activity once the policy this
// script creates is ACTIVE (it polls the API for that). Exits 0 when every check passed.
import { chromium } from 'playwright-core';
import { readFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const [url, token, otherToken, tenant, shots] = process.argv.slice(2);
if (!shots) {
  console.error('usage: node console.test.mjs <url> <token> <other-tenant-token> <tenant> <screenshot dir>');
  process.exit(2);
}
mkdirSync(shots, { recursive: true });
const WAIT = 60_000;
const step = (what) => console.log(`[console] ${what}`);
function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
});
const problems = [];
let page;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true, locale: 'en-GB', timezoneId: 'UTC' });
  page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  // A CSP violation or a script error is a failure, whatever the page then shows.
  page.on('console', (m) => {
    if (m.type() === 'error' && !/status of (401|403|422)/.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('dialog', (d) => d.accept());

  const shot = async (name) => {
    for (const [label, size] of [['desktop', { width: 1280, height: 900 }], ['phone', { width: 390, height: 844 }]]) {
      await page.setViewportSize(size);
      await page.screenshot({ path: join(shots, `${name}-${label}.png`), fullPage: true });
    }
    await page.setViewportSize({ width: 1280, height: 900 });
  };

  // ---------------------------------------------------------------- headers and sign-in
  step('open the console');
  const response = await page.goto(url);
  const headers = response.headers();
  check(response.status() === 200, `GET / is ${response.status()}`);
  check(/default-src 'self'/.test(headers['content-security-policy'] || ''), 'CSP');
  check(headers['x-content-type-options'] === 'nosniff', 'nosniff');
  await page.getByLabel('Bearer token').waitFor();
  await shot('1-sign-in');

  step('a garbage token is refused with 401');
  await page.getByLabel('Bearer token').fill('not-a-token');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').filter({ hasText: '401' }).waitFor();
  await shot('2-refused-401');

  step("another tenant's token is refused with 403");
  await page.getByLabel('Bearer token').fill(otherToken);
  await page.getByLabel(/^Tenant/).fill(tenant);
  await page.getByRole('button', { name: 'Sign in' }).click();
  const refused = page.getByRole('alert').filter({ hasText: '403' });
  await refused.waitFor();
  check(/not .*tenant/i.test(await refused.textContent()), `403 says why: ${await refused.textContent()}`);
  await shot('3-refused-403');

  step('sign in (the tenant from the token)');
  await page.getByLabel(/^Tenant/).fill('');
  await page.getByLabel('Bearer token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Auto-claim policy' }).waitFor();
  check((await page.locator('#who-tenant').textContent()) === tenant, 'tenant from tid');
  const stored = await page.evaluate(() => [sessionStorage.getItem('autoclaim.token'), localStorage.length]);
  check(stored[0] === token && stored[1] === 0, 'token in sessionStorage only');

  // ---------------------------------------------------------------- the setting
  step('turn the feature on: PROPAGATING, then ACTIVE');
  await page.getByLabel('Autoclaim on').check();
  await page.getByRole('button', { name: 'Save setting' }).click();
  await page.locator('#setting-status', { hasText: 'PROPAGATING until' }).waitFor();
  await page.locator('#setting-status', { hasText: /^ACTIVE$/ }).waitFor();

  // ---------------------------------------------------------------- add a policy
  step('add a policy: a blank name is refused next to the field');
  await page.getByRole('link', { name: 'Add a policy' }).click();
  await page.getByRole('heading', { name: 'Add a policy' }).waitFor();
  await shot('4-add-name');
  for (let i = 0; i < 3; i++) await page.getByRole('button', { name: 'Next' }).click();
  await page.getByRole('button', { name: 'Create policy' }).click();
  await page.locator('#add-name-error', { hasText: /required/ }).waitFor();
  check(await page.locator('#add-name').isVisible(), 'back at the name step');

  step('add a policy with a backup and an excluded app');
  await page.locator('#add-name').fill('Flows for everyone');
  await page.getByRole('button', { name: 'Next' }).click();
  await page.getByLabel('Autoclaim app and product').selectOption('power_automate_per_user');
  await page.getByLabel('Backup 1').selectOption('power_automate_premium');
  await shot('5-add-product');
  await page.getByRole('button', { name: 'Next' }).click();
  // Exclude Exchange Foundation from the backup (premium) licence.
  await page.locator('#app-power_automate_premium-113feb6c-3fe4-4440-bddc-54d774bf0318').uncheck();
  check(await page.locator('#app-power_automate_per_user-c5002c70-f725-4367-b409-f0eff4fee6c0').isDisabled(), 'the granting plan cannot be cleared');
  await shot('6-add-apps');
  await page.getByRole('button', { name: 'Next' }).click();
  const review = await page.locator('#review').textContent();
  check(review.includes('Power Automate Premium') && review.includes('EXCHANGE_S_FOUNDATION'), `review: ${review}`);
  await shot('7-add-review');
  await page.getByRole('button', { name: 'Create policy' }).click();

  step('the policy is PROPAGATING, then ACTIVE');
  const row = page.locator('tr', { hasText: 'Flows for everyone' });
  await row.locator('[data-status=PROPAGATING]', { hasText: 'PROPAGATING until' }).waitFor();
  const rowText = await row.textContent();
  check(rowText.includes('Power Automate per User Plan') && rowText.includes('Power Automate Premium') && rowText.includes('EXCHANGE_S_FOUNDATION'), `row: ${rowText}`);
  // Nothing is published before the policy assigns (the test waits for that): all 10 are free.
  const seats = row.locator('td.seats');
  check((await seats.getAttribute('data-available')) === '10', `10 licences before: ${await seats.getAttribute('data-available')}`);
  await shot('8-policies-propagating');
  await row.locator('[data-status=ACTIVE]').waitFor();

  step('events flow (published by the test): available licences fall');
  await page.locator('tr', { hasText: 'Flows for everyone' }).locator('td.seats[data-available="7"]').waitFor({ timeout: 120_000 });
  await shot('9-policies-live');

  // ---------------------------------------------------------------- the report
  step('the report: rows for 1 and 30 days; 90 by default');
  await page.getByRole('link', { name: 'Report', exact: true }).click();
  check((await page.getByLabel('Period').inputValue()) === '90', '90 days by default');
  for (const days of ['1', '30']) {
    await page.getByLabel('Period').selectOption(days);
    await page.locator('#report-total[data-total="3"]').waitFor();
    const section = page.locator('.report-policy', { hasText: 'Flows for everyone' });
    check((await section.getAttribute('data-count')) === '3', `count for ${days} days`);
    check((await section.locator('tbody tr').count()) === 3, `rows for ${days} days`);
  }
  await shot('10-report');

  step('download the CSV');
  const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Download CSV' }).click()]);
  const csv = readFileSync(await download.path(), 'utf8').trim().split(/\r?\n/);
  check(csv[0] === 'policyId,policyName,userId,product,assignedAt,trigger,triggerEventId,triggeredAt,assignmentId', `CSV header: ${csv[0]}`);
  check(csv.length === 4 && csv.slice(1).every((l) => l.includes(',Flows for everyone,')), `CSV rows: ${csv.join(' | ')}`);
  check(download.suggestedFilename().endsWith('-30d.csv'), download.suggestedFilename());

  // ---------------------------------------------------------------- edit, turn off, delete
  step('edit, turn off and delete a policy');
  await page.getByRole('link', { name: 'Auto-claim policy' }).click();
  await page.getByRole('button', { name: 'Edit Flows for everyone' }).click();
  await page.locator('#edit-name').fill('Flows for all');
  await shot('11-edit');
  await page.getByRole('button', { name: 'Save', exact: true }).click();
  const renamed = page.locator('tr', { hasText: 'Flows for all' });
  await renamed.locator('[data-status=PROPAGATING]').waitFor();
  await renamed.locator('[data-status=ACTIVE]').waitFor();
  await page.getByRole('button', { name: 'Turn off Flows for all' }).click();
  await renamed.locator('[data-status=OFF]').waitFor();
  await page.getByRole('button', { name: 'Turn on Flows for all' }).waitFor();

  // A second policy to delete (the first one's report stays for the screenshots).
  await page.getByRole('link', { name: 'Add a policy' }).click();
  await page.locator('#add-name').fill('Short lived');
  for (let i = 0; i < 3; i++) await page.getByRole('button', { name: 'Next' }).click();
  await page.getByLabel('Turn the policy on').uncheck();
  await page.getByRole('button', { name: 'Create policy' }).click();
  await page.locator('tr', { hasText: 'Short lived' }).waitFor();
  await page.getByRole('button', { name: 'Delete Short lived' }).click();
  await page.locator('tr', { hasText: 'Short lived' }).filter({ hasText: 'DELETED' }).waitFor();
  await page.locator('tr', { hasText: 'Short lived' }).waitFor({ state: 'detached' });

  step('turn the feature off: the notice says the policies do not assign');
  await page.getByLabel('Autoclaim on').uncheck();
  await page.getByRole('button', { name: 'Save setting' }).click();
  await page.locator('#setting-status', { hasText: /^OFF$/ }).waitFor();
  await page.locator('#feature-notice', { hasText: /off/i }).waitFor();
  await shot('12-policies-feature-off');

  // ---------------------------------------------------------------- accessibility
  step('accessibility: labels, names, keyboard');
  const require = createRequire(import.meta.url);
  const axeSource = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
  const audit = async (where) => {
    const own = await page.evaluate(() => {
      const bad = [];
      const visible = (e) => !!(e.offsetWidth || e.offsetHeight || e.getClientRects().length);
      for (const e of document.querySelectorAll('input, select, textarea')) {
        if (visible(e) && e.labels.length === 0 && !e.getAttribute('aria-label')) bad.push(`no label: #${e.id}`);
      }
      for (const e of document.querySelectorAll('button, a[href]')) {
        if (visible(e) && !(e.getAttribute('aria-label') || e.textContent.trim())) bad.push(`no name: ${e.outerHTML.slice(0, 80)}`);
      }
      return bad;
    });
    check(own.length === 0, `${where}: ${own.join('; ')}`);
    // axe-core, evaluated through the DevTools protocol (not a script tag, which the CSP refuses).
    await page.evaluate(axeSource);
    const result = await page.evaluate(() => window.axe.run(document, { runOnly: ['wcag2a', 'wcag2aa'] }));
    const violations = result.violations.map((v) => `${v.id} (${v.nodes.length}): ${v.nodes[0].target.join(' ')}`);
    check(violations.length === 0, `${where}: axe: ${violations.join('; ')}`);
  };
  await audit('policies');
  await page.getByRole('button', { name: 'Edit Flows for all' }).click();
  await audit('edit');
  await page.getByRole('button', { name: 'Cancel' }).click();
  await page.getByRole('link', { name: 'Report', exact: true }).click();
  await page.locator('#report-total').waitFor();
  await audit('report');
  await page.getByRole('link', { name: 'Auto-claim policy' }).click();
  await page.getByRole('link', { name: 'Add a policy' }).click();
  for (let s = 0; s < 4; s++) {
    await audit(`add step ${s + 1}`);
    if (s < 3) await page.getByRole('button', { name: 'Next' }).click();
  }
  // The keyboard reaches the controls: Tab from the top lands on the skip link, then the header.
  // A fresh load (the session keeps the token): focus starts at the top of the page.
  await page.goto(`${url}#policies`);
  await page.reload();
  await page.locator('#setting-status').waitFor();
  await page.keyboard.press('Tab');
  check((await page.evaluate(() => document.activeElement.textContent)) === 'Skip to content', 'skip link first');
  const reached = new Set();
  for (let i = 0; i < 40; i++) {
    await page.keyboard.press('Tab');
    reached.add(await page.evaluate(() => document.activeElement.id || document.activeElement.getAttribute('aria-label') || document.activeElement.textContent.trim()));
  }
  for (const want of ['setting-enabled', 'setting-scope', 'add-policy', 'Edit Flows for all']) check(reached.has(want), `Tab reaches ${want}: ${[...reached].join(', ')}`);

  step('sign out');
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByLabel('Bearer token').waitFor();
  check((await page.evaluate(() => sessionStorage.getItem('autoclaim.token'))) === null, 'signed out forgets the token');

  check(problems.length === 0, problems.join('\n'));
  writeFileSync(join(shots, 'PASSED'), 'ok\n');
  console.log('[console] PASSED');
} catch (e) {
  console.error(`[console] FAILED: ${e.stack || e}`);
  if (problems.length) console.error(problems.join('\n'));
  if (page) await page.screenshot({ path: join(shots, 'failure.png'), fullPage: true }).catch(() => {});
  process.exitCode = 1;
} finally {
  await browser.close();
}
