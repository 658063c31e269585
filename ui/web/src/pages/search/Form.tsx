// The search form: time range, service and operation, kind and status, a duration range,
// attribute conditions and the page size. Submitting hands the form to the page, which
// writes it to the URL.
import type { ComponentChildren } from "preact";
import { useRef, useState } from "preact/hooks";
import { getJSON } from "../../api";
import type { Envelope, Operation } from "../../api/generated";
import { ErrorBox } from "../../components/Status";
import { TimeRangePicker } from "../../components/TimeRangePicker";
import { useAsync, type Async, type TimeRange } from "../../util";
import {
  KINDS,
  OPS,
  SCOPES,
  STATUSES,
  newRow,
  type AttrOp,
  type AttrRow,
  type AttrScope,
  type DurationOf,
  type SearchForm,
} from "./query";

function localInput(iso?: string): string {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 19);
}

/**
 * The time range the picker shows. Its absolute From/To only reach `onChange` through its
 * Apply button; a user who edits them and presses Search expects them used, so read them
 * here. A field left as it was keeps its original (sub-second) value.
 */
function pickerRange(form: HTMLFormElement, current: TimeRange): TimeRange {
  const q = <T extends Element>(sel: string) => form.querySelector<T>(sel);
  const kind = q<HTMLSelectElement>('select[aria-label="Range kind"]')?.value;
  if (kind === "relative") {
    return { range: q<HTMLSelectElement>('select[aria-label="Relative range"]')?.value || current.range || "1h" };
  }
  if (kind !== "absolute") return current;
  const pick = (label: string, was?: string) => {
    const v = q<HTMLInputElement>(`input[aria-label="${label}"]`)?.value ?? "";
    if (!v) return undefined;
    if (was && localInput(was) === v) return was;
    const d = new Date(v);
    return Number.isNaN(d.getTime()) ? undefined : d.toISOString();
  };
  return { start: pick("From", current.start), end: pick("To", current.end) };
}

/** A visible label above its control, tied by id (so the name is the label alone). */
function Field({ id, label, children }: { id: string; label: string; children: ComponentChildren }) {
  return (
    <div class="field">
      <label for={id}>{label}</label>
      {children}
    </div>
  );
}

interface Props {
  initial: SearchForm;
  services: Async<string[]>;
  busy: boolean;
  onSearch: (form: SearchForm) => void;
}

export function SearchFormView({ initial, services, busy, onSearch }: Props) {
  const [form, setForm] = useState<SearchForm>(initial);
  const set = <K extends keyof SearchForm>(k: K, v: SearchForm[K]) => setForm((f) => ({ ...f, [k]: v }));
  const keyInputs = useRef(new Map<number, HTMLInputElement>());
  const focusAfterAdd = useRef<number | undefined>(undefined);

  const operations = useAsync<string[]>(
    async (signal) => {
      if (!form.service) return [];
      const res = await getJSON<Envelope<Array<Operation>>>("/api/operations", { service: form.service }, signal);
      const names = (res.data ?? []).map((o) => o.name);
      return [...new Set(names)].sort();
    },
    [form.service],
  );

  const serviceOptions = [...(services.data ?? [])];
  if (form.service && !serviceOptions.includes(form.service)) serviceOptions.unshift(form.service);
  const opOptions = [...(operations.data ?? [])];
  if (form.operation && !opOptions.includes(form.operation)) opOptions.unshift(form.operation);

  const setRow = (id: number, patch: Partial<AttrRow>) =>
    setForm((f) => ({ ...f, attrs: f.attrs.map((r) => (r.id === id ? { ...r, ...patch } : r)) }));
  const addRow = () => {
    const row = newRow();
    focusAfterAdd.current = row.id;
    setForm((f) => ({ ...f, attrs: [...f.attrs, row] }));
  };
  const removeRow = (index: number) => {
    const rows = form.attrs;
    setForm((f) => ({ ...f, attrs: f.attrs.filter((_, i) => i !== index) }));
    // Keep focus in the list: on the next row's key, else the previous one's, else "Add".
    const next = rows[index + 1] ?? rows[index - 1];
    requestAnimationFrame(() => {
      const el = next ? keyInputs.current.get(next.id) : document.getElementById("search-add-condition");
      el?.focus();
    });
  };

  const submit = (e: Event) => {
    e.preventDefault();
    const time = pickerRange(e.currentTarget as HTMLFormElement, form.time);
    setForm((f) => ({ ...f, time }));
    onSearch({ ...form, time });
  };

  const value = (e: Event) => (e.target as HTMLInputElement | HTMLSelectElement).value;

  return (
    <form class="search-form" role="search" aria-label="Trace search" onSubmit={submit} noValidate>
      <div class="form-row">
        <TimeRangePicker value={form.time} onChange={(t) => set("time", t)} />
        <Field id="search-service" label="Service">
          <select id="search-service" name="service" value={form.service} onChange={(e) => setForm((f) => ({ ...f, service: value(e), operation: "" }))}>
            <option value="">Any service</option>
            {serviceOptions.map((s) => (
              <option value={s}>{s}</option>
            ))}
          </select>
        </Field>
        <Field id="search-operation" label="Operation">
          <select
            id="search-operation"
            name="operation"
            value={form.operation}
            disabled={!form.service && !form.operation}
            title={!form.service ? "Choose a service first" : undefined}
            onChange={(e) => set("operation", value(e))}
          >
            <option value="">Any operation</option>
            {opOptions.map((o) => (
              <option value={o}>{o}</option>
            ))}
          </select>
        </Field>
        <Field id="search-kind" label="Span kind">
          <select id="search-kind" name="kind" value={form.kind} onChange={(e) => set("kind", value(e))}>
            <option value="">Any kind</option>
            {KINDS.map((k) => (
              <option value={k}>{k}</option>
            ))}
          </select>
        </Field>
        <Field id="search-status" label="Status">
          <select id="search-status" name="status" value={form.status} onChange={(e) => set("status", value(e))}>
            <option value="">Any status</option>
            {STATUSES.map(([v, l]) => (
              <option value={v}>{l}</option>
            ))}
          </select>
        </Field>
      </div>
      {services.error && <ErrorBox error={services.error} />}
      {operations.error && <ErrorBox error={operations.error} />}

      <div class="form-row">
        <fieldset class="duration-range">
          <legend>Duration</legend>
          <Field id="search-duration-of" label="Of">
            <select id="search-duration-of" value={form.durationOf} onChange={(e) => set("durationOf", value(e) as DurationOf)}>
              <option value="span">a matching span</option>
              <option value="trace">the whole trace</option>
            </select>
          </Field>
          <Field id="search-min-duration" label="Min duration">
            <input
              id="search-min-duration"
              name="min_duration"
              value={form.minDuration}
              placeholder="e.g. 250ms"
              size={9}
              spellcheck={false}
              autocomplete="off"
              aria-describedby="search-duration-hint"
              onInput={(e) => set("minDuration", value(e))}
            />
          </Field>
          <Field id="search-max-duration" label="Max duration">
            <input
              id="search-max-duration"
              name="max_duration"
              value={form.maxDuration}
              placeholder="e.g. 1.5s"
              size={9}
              spellcheck={false}
              autocomplete="off"
              aria-describedby="search-duration-hint"
              onInput={(e) => set("maxDuration", value(e))}
            />
          </Field>
          <span id="search-duration-hint" class="sr-only">
            A duration such as 250ms, 1.5s or 1h30m; a bare number is seconds
          </span>
        </fieldset>
        <Field id="search-limit" label="Limit">
          <input
            id="search-limit"
            name="limit"
            type="number"
            min={1}
            max={10000}
            value={form.limit}
            size={6}
            class="limit"
            onInput={(e) => set("limit", value(e))}
          />
        </Field>
      </div>

      <fieldset class="conditions">
        <legend>Attribute conditions</legend>
        {form.attrs.length === 0 && <p class="muted none">None: every span attribute value matches.</p>}
        <ol>
          {form.attrs.map((row, i) => {
            const n = i + 1;
            return (
              <li key={row.id} class="condition">
                <select
                  aria-label={`Condition ${n} scope`}
                  value={row.scope}
                  onChange={(e) => setRow(row.id, { scope: value(e) as AttrScope })}
                >
                  {SCOPES.map(([v, l]) => (
                    <option value={v}>{l}</option>
                  ))}
                </select>
                <input
                  aria-label={`Condition ${n} key`}
                  placeholder="key, e.g. http.route"
                  value={row.key}
                  spellcheck={false}
                  autocomplete="off"
                  ref={(el) => {
                    if (el) keyInputs.current.set(row.id, el);
                    else keyInputs.current.delete(row.id);
                    if (el && focusAfterAdd.current === row.id) {
                      focusAfterAdd.current = undefined;
                      el.focus();
                    }
                  }}
                  onInput={(e) => setRow(row.id, { key: value(e) })}
                />
                <select aria-label={`Condition ${n} operator`} value={row.op} onChange={(e) => setRow(row.id, { op: value(e) as AttrOp })}>
                  {OPS.map(([v, l]) => (
                    <option value={v}>{l}</option>
                  ))}
                </select>
                {row.op !== "exists" && (
                  <input
                    aria-label={`Condition ${n} value`}
                    placeholder={["<", "<=", ">", ">="].includes(row.op) ? "number" : "value"}
                    value={row.value}
                    spellcheck={false}
                    autocomplete="off"
                    onInput={(e) => setRow(row.id, { value: value(e) })}
                  />
                )}
                <button type="button" aria-label={`Remove condition ${n}`} title="Remove" onClick={() => removeRow(i)}>
                  ×
                </button>
              </li>
            );
          })}
        </ol>
        <button type="button" id="search-add-condition" onClick={addRow}>
          + Add condition
        </button>
        <span class="muted hint">
          All conditions must hold on one span. Unquoted numbers compare as numbers; write "007" to compare text.
        </span>
      </fieldset>

      <div class="form-actions">
        <button type="submit" class="primary" aria-busy={busy ? "true" : undefined}>
          Search
        </button>
      </div>
    </form>
  );
}
