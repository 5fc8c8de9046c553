// sms_notifications' frontend: an AddonConfig (the host's src/addons/types.ts), type-checked
// where the generated src/addons/index.ts lists it in `addons`.
export default {
  id: 'sms_notifications',
  version: '1.0.0',
  title: 'SMS Notifications',
  routes: [{ path: '/sms', title: 'SMS', component: () => import('./SmsPage') }],
  permissions: ['marketing.sms'],
};
