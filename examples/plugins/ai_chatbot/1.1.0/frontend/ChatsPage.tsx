import { useEffect, useState } from 'react';
import AIChatBot from './AIChatBot';
import { chatApi, type ChatSession } from './api';

/** /chats: past conversations on the left, the selected one on the right. */
export default function ChatsPage() {
  const [sessions, setSessions] = useState<ChatSession[]>([]);
  const [selected, setSelected] = useState<string | undefined>();
  const [newChat, setNewChat] = useState(0);

  useEffect(() => {
    chatApi.listSessions().then(setSessions).catch(() => setSessions([]));
  }, [newChat]);

  return (
    <div className="chats-page">
      <aside className="chats-page__list">
        <button
          onClick={() => {
            setSelected(undefined);
            setNewChat((n) => n + 1);
          }}
        >
          New chat
        </button>
        <ul>
          {sessions.map((s) => (
            <li key={s.id} className={s.id === selected ? 'active' : undefined}>
              <button onClick={() => setSelected(s.id)}>{s.title ?? new Date(s.updated_at + 'Z').toLocaleString()}</button>
            </li>
          ))}
        </ul>
      </aside>
      <main className="chats-page__chat">
        <h1>Chats</h1>
        <AIChatBot key={selected ?? `new-${newChat}`} sessionId={selected} />
      </main>
    </div>
  );
}
