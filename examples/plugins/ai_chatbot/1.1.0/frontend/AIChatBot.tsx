import { type FormEvent, useEffect, useRef, useState } from 'react';
import { chatApi, type ChatMessage } from './api';

interface Props {
  /** Continue an existing session; a new one is created when absent. */
  sessionId?: string;
  compact?: boolean;
}

export default function AIChatBot({ sessionId, compact = false }: Props) {
  const [session, setSession] = useState<string | undefined>(sessionId);
  const [messages, setMessages] = useState<ChatMessage[]>([]);
  const [draft, setDraft] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const bottom = useRef<HTMLDivElement>(null);

  useEffect(() => {
    let cancelled = false;
    const load = sessionId ? chatApi.getSession(sessionId) : chatApi.createSession();
    load
      .then((s) => {
        if (!cancelled) {
          setSession(s.id);
          setMessages(s.messages);
        }
      })
      .catch((e: Error) => !cancelled && setError(e.message));
    return () => {
      cancelled = true;
    };
  }, [sessionId]);

  useEffect(() => bottom.current?.scrollIntoView({ behavior: 'smooth' }), [messages]);

  async function submit(event: FormEvent) {
    event.preventDefault();
    const content = draft.trim();
    if (!content || !session || busy) return;
    setBusy(true);
    setError(null);
    try {
      const { user_message, reply } = await chatApi.send(session, content);
      setMessages((old) => [...old, user_message, reply]);
      setDraft('');
    } catch (e) {
      setError((e as Error).message);
    } finally {
      setBusy(false);
    }
  }

  return (
    <div className={compact ? 'chatbot chatbot--compact' : 'chatbot'}>
      <div className="chatbot__messages">
        {messages.length === 0 && <p className="chatbot__hint">Ask about invoices, payments or plugins.</p>}
        {messages.map((m) => (
          <div key={m.id} className={`chatbot__message chatbot__message--${m.role}`}>
            {m.content}
            {m.role === 'assistant' && session && (
              <span className="chatbot__rating" aria-label="Rate this answer">
                {[1, 2, 3, 4, 5].map((n) => (
                  <button
                    key={n}
                    className={m.rating !== null && n <= m.rating ? 'active' : undefined}
                    onClick={() =>
                      chatApi
                        .rate(session, m.id, n)
                        .then((rated) => setMessages((old) => old.map((x) => (x.id === rated.id ? rated : x))))
                    }
                  >
                    ★
                  </button>
                ))}
              </span>
            )}
          </div>
        ))}
        <div ref={bottom} />
      </div>
      {error && <p className="chatbot__error">{error}</p>}
      <form className="chatbot__form" onSubmit={submit}>
        <input
          value={draft}
          onChange={(e) => setDraft(e.target.value)}
          placeholder="Type a message…"
          maxLength={4000}
          disabled={!session || busy}
        />
        <button type="submit" disabled={!draft.trim() || busy}>
          {busy ? '…' : 'Send'}
        </button>
      </form>
    </div>
  );
}
