// web/dist is committed so that C++ builds need no Node.js. This check
// rebuilds web/ from its sources (type check + Vite) into a scratch folder
// and fails when the result differs from the committed web/dist.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const WEB_DIR = process.env.TANDEM_WEB_DIR;
if (!WEB_DIR) throw new Error('set TANDEM_WEB_DIR (ctest does)');
if (!fs.existsSync(path.join(WEB_DIR, 'node_modules', '.bin', 'vite'))) {
  console.error(`${WEB_DIR}/node_modules is missing: run scripts/install-deps.sh (npm ci in web/)`);
  process.exit(1);
}

function listFiles(dir, prefix = '') {
  const out = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const rel = path.join(prefix, entry.name);
    if (entry.isDirectory()) out.push(...listFiles(path.join(dir, entry.name), rel));
    else out.push(rel);
  }
  return out.sort();
}

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'tandem-web-dist-'));
try {
  execFileSync('npm', ['run', 'build', '--', '--outDir', scratch, '--emptyOutDir', '--logLevel', 'warn'], { cwd: WEB_DIR, stdio: 'inherit' });
  const committed = path.join(WEB_DIR, 'dist');
  const want = listFiles(scratch);
  const have = fs.existsSync(committed) ? listFiles(committed) : [];
  const problems = [];
  for (const f of want) {
    if (!have.includes(f)) problems.push(`missing from web/dist: ${f}`);
    else if (!fs.readFileSync(path.join(scratch, f)).equals(fs.readFileSync(path.join(committed, f)))) problems.push(`differs: web/dist/${f}`);
  }
  for (const f of have) if (!want.includes(f)) problems.push(`stale file in web/dist: ${f}`);
  if (problems.length) {
    console.error(problems.join('\n'));
    console.error('web/dist does not match web/src: run `npm --prefix web run build` and commit web/dist.');
    process.exit(1);
  }
  console.log(`web/dist matches its sources (${want.length} files)`);
} finally {
  fs.rmSync(scratch, { recursive: true, force: true });
}
