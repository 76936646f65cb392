// The "New chat" dialog: a chat with someone by username (it starts with the first message).
import { useState } from "preact/hooks";
import { chatOfPerson, typedUsername } from "../chat";
import { Dialog } from "../components/Dialog";

export function NewChat(props: { onOpen: (chat: string) => void; onClose: () => void }) {
  const [name, setName] = useState("");
  return (
    <Dialog title="New chat" onClose={props.onClose}>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          const user = typedUsername(name.trim());
          if (user) props.onOpen(chatOfPerson(user));
        }}
      >
        <label>
          Username
          <input
            aria-label="Username to write to"
            value={name}
            onInput={(e) => setName(e.currentTarget.value)}
            placeholder="e.g. alice"
            autocomplete="off"
          />
        </label>
        <p class="hint">The chat starts with your first message.</p>
        <button class="primary" type="submit">
          Open chat
        </button>
      </form>
    </Dialog>
  );
}
