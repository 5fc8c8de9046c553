// email_marketing's frontend: an AddonConfig (the host's src/addons/types.ts), type-checked
// where the generated src/addons/index.ts lists it in `addons`.
export default {
  id: 'email_marketing',
  version: '1.1.0',
  title: 'Email Marketing',
  routes: [{ path: '/email', title: 'Email', component: () => import('./CampaignsPage') }],
  permissions: ['marketing.email'],
};
