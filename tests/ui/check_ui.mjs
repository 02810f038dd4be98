// Drives Debian's headless Chromium (playwright-core, executablePath /usr/bin/chromium) against a
// running `metricops serve`: what a person sees on /ui, as JSON on stdout, and screenshots.
// Usage: node tests/ui/check_ui.mjs BASE_URL TOKEN OUT_DIR   (tests/history.rs runs it)
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [base, token, out] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), 'metricops-chromium-'));
const launch = (extra) => chromium.launchPersistentContext(profile + (extra || ''), {
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run', '--disable-sync'],
  extraHTTPHeaders: { Authorization: `Bearer ${token}` },
  viewport: { width: 1280, height: 900 },
});
const seen = {};
const ctx = await launch();
try {
  const page = ctx.pages()[0] || await ctx.newPage();
  const elsewhere = [];
  page.on('request', (r) => { if (!r.url().startsWith(base)) elsewhere.push(r.url()); });
  const res = await page.goto(`${base}/ui`);
  seen.status = res.status();
  seen.title = await page.title();
  seen.rows = await page.$$eval('tr.incident', (trs) => trs.map((tr) => ({
    cells: Object.fromEntries([...tr.cells].map((td) => [td.dataset.label, td.innerText.trim()])),
    links: [...tr.querySelectorAll('a')].map((a) => ({ kind: a.className, href: a.href, text: a.innerText.trim() })),
  })));
  seen.timelines = await page.$$eval('section.timeline', (ss) => ss.map((s) => s.innerText));
  seen.forms = await page.$$eval('form', (fs) => fs.map((f) => f.method));
  seen.scripts = await page.$$eval('script', (s) => s.length);
  seen.buttons = await page.$$eval('button, input[type=submit], input[type=button]', (bs) => bs.map((b) => b.closest('form')?.method || 'none'));
  seen.api_link = await page.$eval('a[href^="/api/history"]', (a) => a.href).catch(() => null);
  await page.screenshot({ path: join(out, 'history-ui.png'), fullPage: true });
  // The filter form, as a person uses it.
  await page.fill('input[name=workload]', 'shop/cart');
  await Promise.all([page.waitForNavigation(), page.click('input[type=submit]')]);
  seen.filtered = { url: page.url(), rows: await page.$$eval('tr.incident', (t) => t.map((r) => r.cells[1].innerText.trim())) };
  // Paging: one row a page, the "older" link followed.
  await page.goto(`${base}/ui?limit=1`);
  const first = await page.$$eval('tr.incident', (t) => t.map((r) => r.id));
  await Promise.all([page.waitForNavigation(), page.click('a[rel=next]')]);
  const second = await page.$$eval('tr.incident', (t) => t.map((r) => r.id));
  seen.paging = { first, second, newest: await page.$('a:text("newest")') !== null };
  // A phone.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(`${base}/ui`);
  seen.phone = await page.evaluate(() => ({ overflow: document.documentElement.scrollWidth - window.innerWidth, rows: document.querySelectorAll('tr.incident').length }));
  await page.screenshot({ path: join(out, 'history-ui-phone.png'), fullPage: true });
  seen.elsewhere = elsewhere;
} finally {
  await ctx.close();
}
// Without JavaScript the page is the same.
const nojs = await chromium.launchPersistentContext(profile + '-nojs', {
  executablePath: '/usr/bin/chromium', headless: true, javaScriptEnabled: false,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run', '--disable-sync'],
  extraHTTPHeaders: { Authorization: `Bearer ${token}` },
});
try {
  const p = nojs.pages()[0] || await nojs.newPage();
  await p.goto(`${base}/ui`);
  seen.without_js_rows = await p.locator('tr.incident').count();
} finally {
  await nojs.close();
  for (const d of [profile, profile + '-nojs']) rmSync(d, { recursive: true, force: true });
}
console.log(JSON.stringify(seen));
