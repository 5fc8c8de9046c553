// ai_chatbot frontend: registered with the panel's router through the generated addons index.
import type { ComponentType } from 'react';

export interface AddonRoute {
  path: string;
  title: string;
  component: () => Promise<{ default: ComponentType }>;
}

const config = {
  id: 'ai_chatbot',
  version: '1.1.0',
  routes: [
    { path: '/chats', title: 'Chats', component: () => import('./ChatsPage') },
  ] as AddonRoute[],
  // Rendered by the panel layout on every page (bottom-right corner).
  widgets: [{ slot: 'layout.bottom-right', component: () => import('./ChatWidget') }],
};

export default config;
