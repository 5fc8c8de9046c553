// Thin client for the ai_chatbot backend routes (/api/v1/chat/*).
export interface ChatMessage {
  id: string;
  session_id: string;
  role: 'user' | 'assistant';
  content: string;
  engine: string | null;
  rating: number | null;
  created_at: string;
}

export interface ChatSession {
  id: string;
  user_id: string | null;
  title: string | null;
  created_at: string;
  updated_at: string;
  messages: ChatMessage[];
}

const BASE = '/api/v1/chat';

async function request<T>(path: string, init?: RequestInit): Promise<T> {
  const response = await fetch(BASE + path, {
    headers: { 'Content-Type': 'application/json' },
    credentials: 'include',
    ...init,
  });
  if (!response.ok) {
    throw new Error(`${init?.method ?? 'GET'} ${BASE + path}: ${response.status}`);
  }
  return (await response.json()) as T;
}

export const chatApi = {
  createSession: () => request<ChatSession>('/sessions', { method: 'POST', body: '{}' }),
  listSessions: () => request<ChatSession[]>('/sessions'),
  getSession: (id: string) => request<ChatSession>(`/sessions/${encodeURIComponent(id)}`),
  send: (id: string, content: string) =>
    request<{ user_message: ChatMessage; reply: ChatMessage }>(`/sessions/${encodeURIComponent(id)}/messages`, {
      method: 'POST',
      body: JSON.stringify({ content }),
    }),
  rate: (id: string, messageId: string, rating: number) =>
    request<ChatMessage>(`/sessions/${encodeURIComponent(id)}/messages/${encodeURIComponent(messageId)}/rating`, {
      method: 'POST',
      body: JSON.stringify({ rating }),
    }),
};
