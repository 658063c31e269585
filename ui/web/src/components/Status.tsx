// Loading and error states, shown the same way on every page.
import type { ComponentChildren } from "preact";
import { ApiError } from "../api";

export function ErrorBox({ error }: { error: Error }) {
  const status = error instanceof ApiError ? `${error.status}: ` : "";
  return (
    <div class="error" role="alert">
      {status}
      {error.message}
    </div>
  );
}

export function Loading({ children }: { children?: ComponentChildren }) {
  return (
    <div class="loading" role="status" aria-live="polite">
      {children ?? "Loading…"}
    </div>
  );
}
