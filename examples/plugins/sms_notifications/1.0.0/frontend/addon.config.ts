export default {
  id: 'sms_notifications',
  version: '1.0.0',
  routes: [{ path: '/sms', title: 'SMS', component: () => import('./SmsPage') }],
};
