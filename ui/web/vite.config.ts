// Built by ui/build.rs with `--outDir $OUT_DIR/dist`; the output is embedded in the weft
// binary, so everything (fonts, charts, code) is bundled: no request leaves the origin.
import { defineConfig } from "vite";

export default defineConfig({
  base: "/",
  build: {
    target: "es2022",
    sourcemap: false,
    assetsInlineLimit: 0,
    chunkSizeWarningLimit: 1024,
  },
  // `npx vite --port N` serves the sources with live reload and sends API calls to a
  // running Weft (WEFT_API, default the dev server the viewer tests document).
  server: {
    host: "127.0.0.1",
    proxy: { "/api": process.env.WEFT_API ?? "http://127.0.0.1:23200" },
  },
  oxc: {
    jsx: { runtime: "automatic", importSource: "preact" },
  },
});
