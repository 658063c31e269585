// The viewer's shell: navigation bar and the page for the current URL.
import { render } from "preact";
import { Link, navigate, useLocation } from "./router";
import { SearchPage } from "./pages/search";
import { TracePage } from "./pages/trace";
import { MapPage } from "./pages/map";
import { LatencyPage } from "./pages/latency";
import { MetricsPage } from "./pages/metrics";
import { SqlPage } from "./pages/sql";
import "./style.css";

const NAV: [string, string][] = [
  ["/search", "Search"],
  ["/map", "Service map"],
  ["/latency", "Latency"],
  ["/metrics", "Metrics"],
  ["/sql", "SQL"],
];

// The landing address (`weft up` prints it) is the search page. The URL is rewritten before
// the first render, so the router starts on /search and no navigation happens while a
// component renders (its listeners would not exist yet and the page would stay empty).
if (window.location.pathname === "/" || window.location.pathname === "") {
  window.history.replaceState(null, "", "/search" + window.location.search + window.location.hash);
}

function Page() {
  const loc = useLocation();
  const p = loc.path;
  if (p.startsWith("/trace/")) return <TracePage id={decodeURIComponent(p.slice("/trace/".length))} params={loc.params} />;
  if (p === "/search" || p === "/" || p === "") return <SearchPage params={loc.params} />;
  if (p === "/map") return <MapPage params={loc.params} />;
  if (p === "/latency") return <LatencyPage params={loc.params} />;
  if (p === "/metrics") return <MetricsPage params={loc.params} />;
  if (p === "/sql") return <SqlPage params={loc.params} />;
  return (
    <main>
      <h1>Not found</h1>
      <p>
        No page at <code>{p}</code>. <Link href="/search">Search traces</Link>.
      </p>
    </main>
  );
}

function TraceIdBox() {
  const onSubmit = (e: Event) => {
    e.preventDefault();
    const input = (e.target as HTMLFormElement).elements.namedItem("trace-id") as HTMLInputElement;
    const id = input.value.trim().toLowerCase();
    if (id) navigate(`/trace/${encodeURIComponent(id)}`);
  };
  return (
    <form class="trace-id-box" onSubmit={onSubmit} role="search">
      <label for="trace-id" class="sr-only">
        Trace ID
      </label>
      <input id="trace-id" name="trace-id" placeholder="Trace ID" spellcheck={false} autocomplete="off" />
    </form>
  );
}

function App() {
  const loc = useLocation();
  return (
    <>
      <a class="skip" href="#content">
        Skip to content
      </a>
      <header class="topbar">
        <Link href="/search" class="brand">
          Weft
        </Link>
        <nav aria-label="Main">
          {NAV.map(([path, label]) => (
            <Link href={path} aria-current={loc.path === path ? "page" : undefined}>
              {label}
            </Link>
          ))}
        </nav>
        <TraceIdBox />
      </header>
      <div id="content">
        <Page />
      </div>
    </>
  );
}

render(<App />, document.getElementById("app")!);
