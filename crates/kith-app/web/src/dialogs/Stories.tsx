// The "Stories" dialog: one's contacts' stories of the last 24 hours, and posting one.
import { useCallback, useEffect, useState } from "preact/hooks";
import { api } from "../api";
import type { Story } from "../api";
import { Dialog, ErrorLine, useAction } from "../components/Dialog";
import { timeLeft, when } from "../format";

export function Stories(props: { me: string; onClose: () => void; version: number }) {
  const [stories, setStories] = useState<Story[]>([]);
  const [text, setText] = useState("");
  const { busy, error, run } = useAction();
  const [audience, setAudience] = useState<number | null>(null);
  const load = useCallback(
    () =>
      run(async () => {
        setStories(await api.stories());
        setAudience((await api.contacts()).length);
      }),
    [run],
  );
  useEffect(() => void load(), [load, props.version]);
  return (
    <Dialog title="Stories" onClose={props.onClose}>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          run(async () => {
            await api.postStory(text);
            setText("");
            setStories(await api.stories());
          });
        }}
      >
        <label>
          A story for your contacts (gone after 24 hours)
          <textarea aria-label="Story text" rows={2} value={text} onInput={(e) => setText(e.currentTarget.value)} />
        </label>
        {audience !== null && (
          <p class="hint">
            {audience === 0
              ? "Nobody would see it yet: your contacts are the people you have chatted with."
              : `${audience} ${audience === 1 ? "contact sees" : "contacts see"} it — the people you have chatted with.`}
          </p>
        )}
        <button class="primary" type="submit" disabled={busy || !text.trim()}>
          Post story
        </button>
      </form>
      <ErrorLine error={error} />
      <ul class="stories" aria-label="Stories">
        {stories.length === 0 && <li class="hint">No stories right now.</li>}
        {stories.map((s) => (
          <li key={s.id} class="story">
            <strong>{s.author === props.me ? "You" : s.author}</strong>
            <span class="meta">
              {when(s.posted_at)} · {timeLeft(s.expires_at)}
            </span>
            <p class="text">{s.text}</p>
          </li>
        ))}
      </ul>
    </Dialog>
  );
}
