export default {
  id: 'email_marketing',
  routes: [{ path: '/email', component: () => import('./CampaignsPage') }],
};
