// Builds the dashboard into dist/ (git-ignored; served by the API at /).
// One ES-module bundle (our modules + the parts of ECharts we use) and a stylesheet,
// so the page loads nothing but same-origin files and works under a strict CSP.
import { build } from "esbuild";
import { copyFile, mkdir, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "dist");

await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });
await build({
  entryPoints: [join(here, "src", "main.js")],
  bundle: true,
  format: "esm",
  target: "es2020",
  minify: true,
  define: { "process.env.NODE_ENV": '"production"' }, // drops ECharts' development checks
  sourcemap: false,
  legalComments: "linked", // ECharts' and zrender's licence headers go to app.js.LEGAL.txt
  outfile: join(out, "app.js"),
  logLevel: "warning",
});
for (const name of ["index.html", "style.css", "favicon.svg"]) {
  await copyFile(join(here, "src", name), join(out, name));
}
console.log(`dashboard built in ${out}`);
