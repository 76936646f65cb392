// The messenger's global keyboard shortcuts (listed in dialogs/Help.tsx): dialogs, the filter,
// j/k through the chats, Enter into the message box, Esc out.
import { useEffect } from "preact/hooks";
import type { Dispatch, StateUpdater } from "preact/hooks";
import type { Chat } from "../api";
import type { Panel } from "../dialogs/panel";
import { typing } from "../format";

export function useShortcuts(props: {
  panel: Panel;
  chats: Chat[];
  open: string | null;
  openRef: { current: string | null };
  filterRef: { current: HTMLInputElement | null };
  closePanel: () => void;
  setPanel: Dispatch<StateUpdater<Panel>>;
  setOpen: Dispatch<StateUpdater<string | null>>;
  setFocusComposer: Dispatch<StateUpdater<boolean>>;
}) {
  const { panel, chats, open, openRef, filterRef, closePanel, setPanel, setOpen, setFocusComposer } = props;
  // Keyboard first: single keys when not typing (the list is on `?`).
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      if (e.key === "Escape") {
        if (panel) closePanel();
        else if (!typing(e.target)) setOpen(null);
        return;
      }
      if (typing(e.target) || e.ctrlKey || e.metaKey || e.altKey || panel) return;
      // The ref, not the state this handler was made with: a key pressed right after j/k may
      // come before the handler is made again.
      if (e.key === "Enter" && openRef.current && !panel && e.target === document.body) {
        // After j/k: Enter moves into the message box.
        const box = document.querySelector<HTMLTextAreaElement>(".composer textarea");
        if (box) {
          e.preventDefault();
          box.focus();
        }
        return;
      }
      const go = (p: Panel) => {
        e.preventDefault();
        setPanel(p);
      };
      switch (e.key) {
        case "?":
          return go({ kind: "help" });
        case "n":
          return go({ kind: "newchat" });
        case "g":
          return go({ kind: "newgroup" });
        case "s":
          return go({ kind: "stories" });
        case "b":
          return go({ kind: "businesses" });
        case ",":
          return go({ kind: "settings" });
        case "/":
          e.preventDefault();
          filterRef.current?.focus();
          return;
        case "j":
        case "k": {
          e.preventDefault();
          const i = chats.findIndex((c) => c.chat === openRef.current);
          const down = e.key === "j";
          // With no chat open, j starts at the top and k at the bottom.
          const at = i < 0 ? (down ? 0 : chats.length - 1) : Math.max(0, Math.min(chats.length - 1, i + (down ? 1 : -1)));
          const next = chats[at];
          if (next) {
            setFocusComposer(false);
            setOpen(next.chat);
          }
          return;
        }
      }
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [panel, chats, open, closePanel]);
}
