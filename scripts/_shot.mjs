import puppeteer from 'puppeteer-core';

const browser = await puppeteer.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ['--no-sandbox', '--disable-gpu'] });
const page = await browser.newPage();
await page.setViewport({ width: 1280, height: 760 });
await page.goto(process.argv[2], { waitUntil: 'domcontentloaded' });
await page.waitForSelector('.node[data-state]', { timeout: 10000 });
await new Promise((r) => setTimeout(r, 2500));
await page.screenshot({ path: process.argv[3] });
console.log(await page.$$eval('.node', (ns) => ns.map((n) => `${n.dataset.node}:${n.dataset.state}`)));
await browser.close();
