// What every dialog is made of: the modal frame, a form's action with its error in words, and
// the question asked before something that cannot be taken back.
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import type { ComponentChildren } from "preact";
import { messageOf } from "../format";

export function Dialog(props: { title: string; onClose: () => void; children: ComponentChildren }) {
  const ref = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const first = ref.current?.querySelector<HTMLElement>("input, textarea, select, button.primary");
    first?.focus();
  }, []);
  const id = `dialog-${props.title.replace(/\W+/g, "-").toLowerCase()}`;
  return (
    <div class="overlay" onClick={(e) => e.target === e.currentTarget && props.onClose()}>
      <div class="dialog" role="dialog" aria-modal="true" aria-labelledby={id} ref={ref}>
        <header>
          <h2 id={id}>{props.title}</h2>
          <button class="icon" aria-label="Close" title="Close (Esc)" onClick={props.onClose}>
            ×
          </button>
        </header>
        {props.children}
      </div>
    </div>
  );
}

/** A form that runs `action`, shows its error in words, and disables itself meanwhile. */
export function useAction() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const run = useCallback(async (action: () => Promise<void>) => {
    setBusy(true);
    setError(null);
    try {
      await action();
    } catch (e) {
      setError(messageOf(e));
    } finally {
      setBusy(false);
    }
  }, []);
  return { busy, error, run, setError };
}

export function ErrorLine(props: { error: string | null }) {
  return props.error ? (
    <p class="error" role="alert">
      {props.error}
    </p>
  ) : null;
}

/** Asks before something that cannot be taken back (or that the other side notices). */
export function Confirm(props: { title: string; text: string; action: string; onConfirm: () => Promise<void>; onClose: () => void }) {
  const { busy, error, run } = useAction();
  return (
    <Dialog title={props.title} onClose={props.onClose}>
      <p class="confirm-text">{props.text}</p>
      <ErrorLine error={error} />
      <div class="buttons">
        <button onClick={props.onClose}>Cancel</button>
        <button
          class="primary danger"
          disabled={busy}
          onClick={() =>
            run(async () => {
              await props.onConfirm();
              props.onClose();
            })
          }
        >
          {props.action}
        </button>
      </div>
    </Dialog>
  );
}
