// Builds the console into dist/: one bundled script (esbuild, with cytoscape), the page and
// its style sheet. vigil-controller's build.rs embeds whatever dist/ holds.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, rmSync } from "node:fs";

rmSync("dist", { recursive: true, force: true });
mkdirSync("dist", { recursive: true });
await build({
  entryPoints: ["src/main.js"],
  bundle: true,
  minify: true,
  sourcemap: false,
  format: "esm",
  target: ["es2020"],
  outfile: "dist/app.js",
  logLevel: "warning",
});
for (const f of ["index.html", "style.css"]) {
  copyFileSync(`src/${f}`, `dist/${f}`);
}
console.log("console built into dist/");
