import { type FormEvent, useEffect, useState } from 'react';

interface Campaign {
  id: number;
  subject: string;
  body: string;
  sent_at: string | null;
  stats?: { delivered: number; opened: number };
}

interface Subscriber {
  id: number;
  email: string;
  subscribed_at: string;
}

const API = '/api/v1/email';

export default function CampaignsPage() {
  const [campaigns, setCampaigns] = useState<Campaign[]>([]);
  const [subscribers, setSubscribers] = useState<Subscriber[]>([]);
  const [subject, setSubject] = useState('');
  const [body, setBody] = useState('');

  const reload = () => {
    fetch(`${API}/campaigns`).then((r) => r.json()).then(setCampaigns);
    fetch(`${API}/subscribers`).then((r) => r.json()).then(setSubscribers);
  };
  useEffect(reload, []);

  async function create(event: FormEvent) {
    event.preventDefault();
    const response = await fetch(`${API}/campaigns`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ subject, body }),
    });
    if (response.ok) {
      setSubject('');
      setBody('');
      reload();
    }
  }

  return (
    <div className="email-campaigns">
      <h1>Email campaigns</h1>
      <form onSubmit={create}>
        <input value={subject} onChange={(e) => setSubject(e.target.value)} placeholder="Subject" required />
        <textarea value={body} onChange={(e) => setBody(e.target.value)} placeholder="Message" required />
        <button type="submit">Create campaign</button>
      </form>
      <table>
        <tbody>
          {campaigns.map((c) => (
            <tr key={c.id}>
              <td>{c.subject}</td>
              <td>{c.sent_at ? `sent ${c.sent_at}` : 'draft'}</td>
              <td>{c.stats?.delivered ?? 0} delivered · {c.stats?.opened ?? 0} opened</td>
            </tr>
          ))}
        </tbody>
      </table>
      <h2>Subscribers ({subscribers.length})</h2>
      <ul>
        {subscribers.map((s) => (
          <li key={s.id}>{s.email}</li>
        ))}
      </ul>
    </div>
  );
}
