import { Suspense } from 'react';
import { lazyComponent, widgetsFor } from './addonViews.ts';

/** Renders every enabled addon's widgets for one named slot. */
export default function WidgetSlot({ name }: { name: string }) {
  const widgets = widgetsFor(name);
  if (widgets.length === 0) return null;
  return (
    <div className={`slot slot--${name.replace(/\W/g, '-')}`} data-slot={name}>
      {widgets.map(({ key, item }) => {
        const Widget = lazyComponent(item.component);
        return (
          <Suspense key={key} fallback={null}>
            <Widget />
          </Suspense>
        );
      })}
    </div>
  );
}
