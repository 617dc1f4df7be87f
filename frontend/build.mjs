// Bundles the browser code of Arkhiv's pages into arkhiv/web/static/dist, which the Python
// package serves at /static/dist. Decoders are served from there too: the pages must work
// without reaching any other site (a museum's closed network, a blocked CDN).
import { build } from "esbuild";
import { cpSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "arkhiv", "web", "static", "dist");
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });

await build({
  entryPoints: {
    viewer: join(here, "src", "viewer.js"),
    upload: join(here, "src", "upload.js"),
    map: join(here, "src", "map.js"),
    refresh: join(here, "src", "refresh.js"),
  },
  bundle: true,
  minify: true,
  sourcemap: true,
  format: "esm",
  target: ["es2020"],
  outdir: out,
  loader: { ".png": "file" },
  logLevel: "warning",
});

await build({
  entryPoints: { "meshopt-decoder": join(here, "src", "meshopt-decoder.js") },
  bundle: true,
  minify: true,
  format: "iife", // loaded by <model-viewer> as a classic script
  target: ["es2020"],
  outdir: out,
  logLevel: "warning",
});

const libs = join(here, "node_modules", "three", "examples", "jsm", "libs");
cpSync(join(libs, "draco", "gltf"), join(out, "draco"), { recursive: true });
console.log(`built ${out}`);
