// The "New group" dialog: a name and the members to invite.
import { useState } from "preact/hooks";
import { api } from "../api";
import { typedUsername } from "../chat";
import { Dialog, ErrorLine, useAction } from "../components/Dialog";

export function NewGroup(props: { onCreated: (id: string) => void; onClose: () => void }) {
  const [name, setName] = useState("");
  const [members, setMembers] = useState("");
  const { busy, error, run } = useAction();
  return (
    <Dialog title="New group" onClose={props.onClose}>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          run(async () => {
            const list = members.split(/[\s,]+/).map((m) => typedUsername(m)).filter(Boolean);
            const { id } = await api.createGroup(name, list);
            props.onCreated(id);
          });
        }}
      >
        <label>
          Name
          <input aria-label="Group name" value={name} onInput={(e) => setName(e.currentTarget.value)} />
        </label>
        <label>
          Members
          <input
            aria-label="Members, separated by commas"
            value={members}
            onInput={(e) => setMembers(e.currentTarget.value)}
            placeholder="bob, carol"
            autocomplete="off"
          />
        </label>
        <ErrorLine error={error} />
        <button class="primary" type="submit" disabled={busy}>
          Create group
        </button>
      </form>
    </Dialog>
  );
}
