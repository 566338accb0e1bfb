// The devnet's dashboard in a real browser (Debian's Chromium, driven by Playwright):
// node dashboard-check.mjs DASHBOARD_URL ADMIN_TOKEN SCREENSHOT_DIR NODE_DASHBOARD_URLS
// (NODE_DASHBOARD_URLS: each node's own /dashboard, comma-separated, in node id order)
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const [url, token, shots, nodeUrls] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  await page.goto(url);
  // The leader and the heads are shown, and they move.
  await page.waitForFunction(() => /^node \d+$/.test(document.querySelector('#leader').textContent), null, { timeout: 30_000 });
  await page.waitForFunction(() => document.querySelectorAll('#nodes tr.node-row').length === 3);
  const head = Number(await page.textContent('#head'));
  await page.waitForFunction((before) => Number(document.querySelector('#head').textContent) > before, head, { timeout: 15_000 });
  // The transfers sent before: the node whose pool took them shows their send-to-receipt latency.
  await page.waitForFunction(() => [...document.querySelectorAll('#nodes tr.node-row')].some((tr) => /\d ms \/ [\d.,]+ ms/.test(tr.textContent)), null, { timeout: 15_000 });
  await page.screenshot({ path: `${shots}/1-live.png`, fullPage: true });

  // Without the token an action is refused; with it, a transfer moves the leader.
  const first = (await page.textContent('#leader')).trim();
  await page.click('#transfer');
  await page.waitForFunction(() => /token/.test(document.querySelector('#message').textContent), null, { timeout: 10_000 });
  await page.fill('#token', token);
  await page.click('#transfer');
  await page.waitForFunction((before) => {
    const now = document.querySelector('#leader').textContent.trim();
    return /^node \d+$/.test(now) && now !== before;
  }, first, { timeout: 30_000 });
  await page.waitForFunction(() => [...document.querySelectorAll('#timeline li')].some((li) => /^.*transfer: node \d+ to node \d+ \(no block for \d+ ms\)/.test(li.textContent)), null, { timeout: 15_000 });
  await page.screenshot({ path: `${shots}/2-transferred.png`, fullPage: true });

  // Kill the leader from the page: the failover shows on the timeline with its gap.
  const second = (await page.textContent('#leader')).trim();
  const id = second.match(/\d+/)[0];
  await page.click(`button[data-action="kill"][data-node="${id}"]`);
  await page.waitForFunction((killed) => [...document.querySelectorAll('#timeline li')].some((li) => new RegExp(`failover: node ${killed} to node \\d+ \\(no block for \\d+ ms\\)`).test(li.textContent)), id, { timeout: 30_000 });
  const row = await page.textContent(`#nodes tr[data-id="${id}"]`);
  await page.screenshot({ path: `${shots}/3-failover.png`, fullPage: true });
  assert.notEqual((await page.textContent('#leader')).trim(), second);

  // A surviving node's own dashboard, on its operations port: every member, the killed one
  // down, the leader, the send-to-receipt latency of the transfers sent before, no kill.
  const survivor = nodeUrls.split(',').find((_, index) => String(index + 1) !== id);
  const own = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  await own.goto(survivor);
  await own.waitForFunction(() => /^keel node \d+$/.test(document.querySelector('#title').textContent), null, { timeout: 30_000 });
  await own.waitForFunction(() => document.querySelectorAll('#nodes tr.node-row').length === 3);
  await own.waitForFunction(() => /^node \d+$/.test(document.querySelector('#leader').textContent), null, { timeout: 30_000 });
  await own.waitForFunction((killed) => /down|not answering/.test(document.querySelector(`#nodes tr[data-id="${killed}"]`).textContent), id, { timeout: 30_000 });
  assert.equal(await own.locator('button[data-action="kill"]').count(), 0, 'a node offers kill');
  await own.screenshot({ path: `${shots}/4-node-dashboard.png`, fullPage: true });
  const ownTitle = (await own.textContent('#title')).trim();
  console.log(`dashboard ok: ${first} -> ${second} (transfer), then node ${id} killed: ${row}; ${ownTitle}'s own page ok`);
} finally {
  await browser.close();
}
