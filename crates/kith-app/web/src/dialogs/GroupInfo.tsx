// A group's info: its members and admins, adding, removing, promoting, renaming, leaving.
import { useCallback, useEffect, useState } from "preact/hooks";
import { api } from "../api";
import type { Group } from "../api";
import { typedUsername } from "../chat";
import { Dialog, ErrorLine, useAction } from "../components/Dialog";

export function GroupInfo(props: { id: string; me: string; onClose: () => void; onLeft: () => void; version: number }) {
  const [group, setGroup] = useState<Group | null>(null);
  const [leaving, setLeaving] = useState(false);
  const [add, setAdd] = useState("");
  const [name, setName] = useState("");
  const { busy, error, run } = useAction();
  const load = useCallback(() => run(async () => setGroup(await api.group(props.id))), [run, props.id]);
  useEffect(() => void load(), [load, props.version]);
  const act = (f: () => Promise<unknown>) =>
    run(async () => {
      await f();
      setGroup(await api.group(props.id));
    });
  return (
    <Dialog title={group?.name ?? "Group"} onClose={props.onClose}>
      {group && (
        <>
          <ul class="members plain" aria-label="Members">
            {group.members.map((m) => (
              <li key={m}>
                <span>
                  {m === props.me ? "You" : m}
                  {group.admins.includes(m) && <span class="badge">admin</span>}
                </span>
                {group.me_admin && m !== props.me && !group.left && (
                  <span class="actions">
                    {!group.admins.includes(m) && (
                      <button disabled={busy} aria-label={`Make ${m} an admin`} onClick={() => act(() => api.groupPromote(props.id, m))}>
                        Make admin
                      </button>
                    )}
                    <button disabled={busy} aria-label={`Remove ${m}`} onClick={() => act(() => api.groupRemove(props.id, m))}>
                      Remove
                    </button>
                  </span>
                )}
              </li>
            ))}
          </ul>
          {group.me_admin && !group.left && (
            <>
              <form
                class="inline"
                onSubmit={(e) => {
                  e.preventDefault();
                  act(async () => {
                    await api.groupAdd(props.id, typedUsername(add).trim());
                    setAdd("");
                  });
                }}
              >
                <input aria-label="Username to add" placeholder="username" value={add} onInput={(e) => setAdd(e.currentTarget.value)} />
                <button type="submit" disabled={busy || !add.trim()}>
                  Add
                </button>
              </form>
              <form
                class="inline"
                onSubmit={(e) => {
                  e.preventDefault();
                  act(async () => {
                    await api.groupRename(props.id, name);
                    setName("");
                  });
                }}
              >
                <input aria-label="New group name" placeholder="new name" value={name} onInput={(e) => setName(e.currentTarget.value)} />
                <button type="submit" disabled={busy || !name.trim()}>
                  Rename
                </button>
              </form>
            </>
          )}
          {group.left && (
            <p class="hint">{group.removed_by ? `${group.removed_by} removed you from this group.` : "You left this group."}</p>
          )}
          {!group.left && !leaving && (
            <button class="danger" disabled={busy} onClick={() => setLeaving(true)}>
              Leave group
            </button>
          )}
          {!group.left && leaving && (
            <div class="buttons">
              <span>Leave {group.name ?? "the group"}? Only an admin can add you back.</span>
              <button onClick={() => setLeaving(false)}>Cancel</button>
              <button
                class="primary danger"
                disabled={busy}
                onClick={() =>
                  run(async () => {
                    await api.groupLeave(props.id);
                    props.onLeft();
                  })
                }
              >
                Leave
              </button>
            </div>
          )}
        </>
      )}
      <ErrorLine error={error} />
    </Dialog>
  );
}
