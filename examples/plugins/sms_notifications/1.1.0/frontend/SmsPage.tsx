import { type FormEvent, useEffect, useState } from 'react';

interface Contact {
  subscriber_id: number;
  email: string;
  phone: string | null;
}

interface SmsMessage {
  id: string;
  to: string;
  body: string;
  status: string;
  created_at: string;
}

const API = '/api/v1/sms';

export default function SmsPage() {
  const [contacts, setContacts] = useState<Contact[]>([]);
  const [messages, setMessages] = useState<SmsMessage[]>([]);
  const [recipient, setRecipient] = useState<number | ''>('');
  const [body, setBody] = useState('');

  const reload = () => {
    fetch(`${API}/contacts`).then((r) => r.json()).then(setContacts);
    fetch(`${API}/messages`).then((r) => r.json()).then(setMessages);
  };
  useEffect(reload, []);

  async function send(event: FormEvent) {
    event.preventDefault();
    if (recipient === '') return;
    const response = await fetch(`${API}/send`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ subscriber_id: recipient, body }),
    });
    if (response.ok) {
      setBody('');
      reload();
    }
  }

  return (
    <div className="sms-page">
      <h1>SMS notifications</h1>
      <form onSubmit={send}>
        <select value={recipient} onChange={(e) => setRecipient(e.target.value ? Number(e.target.value) : '')}>
          <option value="">Choose a contact…</option>
          {contacts
            .filter((c) => c.phone)
            .map((c) => (
              <option key={c.subscriber_id} value={c.subscriber_id}>
                {c.email} ({c.phone})
              </option>
            ))}
        </select>
        <textarea value={body} onChange={(e) => setBody(e.target.value)} maxLength={1600} required />
        <small>{body.length} characters</small>
        <button type="submit">Queue message</button>
      </form>
      <ul>
        {messages.map((m) => (
          <li key={m.id}>
            {m.to}: {m.body} <em>{m.status}</em>
          </li>
        ))}
      </ul>
    </div>
  );
}
