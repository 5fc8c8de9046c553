// What the host makes of the addon contract: which addons the user may see, and one
// React.lazy component per loader (React needs the same component on every render).
import { lazy, type ComponentType, type LazyExoticComponent } from 'react';
import { addons, type AddonConfig, type AddonRoute, type AddonWidget, type LazyComponent } from './addons';

/** The signed-in user's permissions (a real panel asks its backend). */
const granted = new Set(['support.chat', 'marketing.email', 'marketing.sms']);

export function allowed(required?: readonly string[]): boolean {
  return (required ?? []).every((permission) => granted.has(permission));
}

const components = new WeakMap<LazyComponent, LazyExoticComponent<ComponentType>>();

export function lazyComponent(load: LazyComponent): LazyExoticComponent<ComponentType> {
  let component = components.get(load);
  if (component === undefined) {
    component = lazy(load);
    components.set(load, component);
  }
  return component;
}

export interface Placed<T> {
  key: string;
  addon: AddonConfig;
  item: T;
}

/** Routes of the addons the user may see, in index order. */
export function visibleRoutes(): Placed<AddonRoute>[] {
  return addons
    .filter((addon) => allowed(addon.permissions))
    .flatMap((addon) =>
      addon.routes.filter((route) => allowed(route.permissions)).map((item) => ({ key: `${addon.id}:${item.path}`, addon, item })),
    );
}

/** Widgets for one slot ('dashboard.cards', 'layout.bottom-right'). */
export function widgetsFor(slot: string): Placed<AddonWidget>[] {
  return addons
    .filter((addon) => allowed(addon.permissions))
    .flatMap((addon) =>
      (addon.widgets ?? [])
        .filter((widget) => widget.slot === slot && allowed(widget.permissions))
        .map((item, i) => ({ key: `${addon.id}:${slot}:${i}`, addon, item })),
    );
}
