// What a chat key is, in one place: `@username` for a person, the group's id for a group.
// Everything else on the page asks these helpers instead of taking a key apart.

const PERSON = "@";

/** Whether a chat is with one person (not a group). */
export const isPerson = (chat: string): boolean => chat.startsWith(PERSON);

/** The person a chat is with, or null for a group. */
export const personOf = (chat: string): string | null => (isPerson(chat) ? chat.slice(PERSON.length) : null);

/** The chat with a person. */
export const chatOfPerson = (username: string): string => `${PERSON}${username}`;

/** The chat of a group: its id as it is. */
export const chatOfGroup = (id: string): string => id;

/** A username as someone typed it, with or without the leading "@" of a person's chat. */
export const typedUsername = (typed: string): string => personOf(typed) ?? typed;
