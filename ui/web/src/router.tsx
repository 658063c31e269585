// A small history-API router: the whole view state lives in the URL (path + query string),
// so every page can be shared by copying the address bar.
import type { AnchorHTMLAttributes, ComponentChildren } from "preact";
import { useEffect, useState } from "preact/hooks";
import { type Params, query } from "./api";

export interface Location {
  path: string;
  params: URLSearchParams;
}

const listeners = new Set<() => void>();

function current(): Location {
  return { path: window.location.pathname, params: new URLSearchParams(window.location.search) };
}

window.addEventListener("popstate", () => listeners.forEach((l) => l()));

/** Goes to `href` (a path with an optional query string) without reloading the page. */
export function navigate(href: string, replace = false): void {
  if (href === window.location.pathname + window.location.search) return;
  if (replace) window.history.replaceState(null, "", href);
  else window.history.pushState(null, "", href);
  listeners.forEach((l) => l());
}

/** The current location; re-renders the caller when it changes. */
export function useLocation(): Location {
  const [loc, setLoc] = useState(current);
  useEffect(() => {
    const update = () => setLoc(current());
    listeners.add(update);
    return () => {
      listeners.delete(update);
    };
  }, []);
  return loc;
}

/** Builds `path?k=v&…`, skipping empty values; arrays become repeated keys. */
export function href(path: string, params: Params = {}): string {
  return path + query(params);
}

type LinkProps = AnchorHTMLAttributes<HTMLAnchorElement> & { href: string; children?: ComponentChildren };

/** An <a> that navigates inside the app on a plain click and behaves normally otherwise. */
export function Link({ href: to, children, ...rest }: LinkProps) {
  const onClick = (e: MouseEvent) => {
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    navigate(to);
  };
  return (
    <a href={to} onClick={onClick} {...rest}>
      {children}
    </a>
  );
}
