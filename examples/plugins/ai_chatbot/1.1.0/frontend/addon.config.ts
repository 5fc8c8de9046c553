// ai_chatbot's frontend: an AddonConfig (the host's src/addons/types.ts), type-checked where
// the generated src/addons/index.ts lists it in `addons`.
export default {
  id: 'ai_chatbot',
  version: '1.1.0',
  title: 'AI Chatbot',
  routes: [{ path: '/chats', title: 'Chats', component: () => import('./ChatsPage') }],
  // Rendered by the panel layout on every page (bottom-right corner).
  widgets: [{ slot: 'layout.bottom-right', title: 'Assistant', component: () => import('./ChatWidget') }],
  permissions: ['support.chat'],
};
