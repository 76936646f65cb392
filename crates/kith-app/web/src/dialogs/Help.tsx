// The keyboard shortcuts and the dialog that lists them (on `?`).
import { Dialog } from "../components/Dialog";

export const SHORTCUTS: [string, string][] = [
  ["?", "this list"],
  ["n", "new chat"],
  ["g", "new group"],
  ["s", "stories"],
  ["b", "businesses"],
  [",", "settings"],
  ["/", "filter chats"],
  ["j / k", "next / previous chat"],
  ["Enter", "into the message box; there, send (Shift+Enter: new line)"],
  ["Esc", "close a dialog; leave the message box; again: back to the list"],
];

export function Help(props: { onClose: () => void }) {
  return (
    <Dialog title="Keyboard shortcuts" onClose={props.onClose}>
      <dl class="shortcuts">
        {SHORTCUTS.map(([k, what]) => (
          <div key={k}>
            <dt>
              <kbd>{k}</kbd>
            </dt>
            <dd>{what}</dd>
          </div>
        ))}
      </dl>
    </Dialog>
  );
}
